"""Batch augmentation on whatever device the batch lives on (one grid_sample per batch, not per image)."""
import math

import torch
import torch.nn.functional as F


def augment_batch(x, generator, *, hflip=True, vflip=False, degrees=10.0, scale=(0.9, 1.1),
                  translate=0.08, brightness=0.1, contrast=0.1):
    """Random affine (rotation, scale, translation, flips) and brightness/contrast, per sample, on a
    float batch in [0, 1]. One ``grid_sample`` for the whole batch; randomness drawn on the CPU from
    ``generator`` so results do not depend on the device."""
    n = x.shape[0]

    def uniform(lo, hi):
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    angle = uniform(-degrees, degrees) * (math.pi / 180)
    s = uniform(*scale)
    sx = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    sy = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if vflip else torch.ones(n)
    tx, ty = uniform(-translate, translate) * 2, uniform(-translate, translate) * 2
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos * sx, -sin * sy, tx], 1), torch.stack([sin * sx, cos * sy, ty], 1)], 1)
    b = uniform(-brightness, brightness).view(n, 1, 1, 1)
    c = uniform(1 - contrast, 1 + contrast).view(n, 1, 1, 1)
    params = torch.cat([theta.reshape(n, 6), b.reshape(n, 1), c.reshape(n, 1)], 1)
    if x.is_cuda:  # one page-locked copy: asynchronous, no host sync per step
        params = params.pin_memory()
    params = params.to(x.device, non_blocking=True)
    theta, b, c = params[:, :6].reshape(n, 2, 3), params[:, 6].reshape(n, 1, 1, 1), params[:, 7].reshape(n, 1, 1, 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean + b).clamp_(0, 1)
