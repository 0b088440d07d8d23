"""The forward pass from pixels to probabilities: one function that train.py's evaluation and the endpoint both
call, so that what a model scored on validation and test is what it answers when deployed.
"""
import torch


def normalize(x, mean, std, memory_format=torch.contiguous_format):
    """Float NCHW on the 0..1 scale -> ``(x - mean) / std`` per channel, in the given memory format."""
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous(memory_format=memory_format)


def activate(logits, multilabel=False, temperature=1.0):
    """Logits -> probabilities: softmax over classes, or a sigmoid per finding (multi-label), of ``logits / T``
    (temperature scaling: a float, or one per finding)."""
    t = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
    z = logits / t
    return torch.sigmoid(z) if multilabel else torch.softmax(z, dim=1)


def mean_probabilities(member_logits, multilabel=False, temperature=1.0):
    """A K-fold ensemble's answer: the mean of its members' calibrated probabilities (``member_logits``: (M, N, K),
    or a list of M (N, K) logits), each member's logits / temperature activated alone, then averaged."""
    return torch.stack([activate(z, multilabel, temperature) for z in member_logits]).mean(dim=0)


@torch.no_grad()
def logits(model, images, *, mean, std, tta=False, memory_format=torch.contiguous_format):
    """uint8 NCHW images (on the model's device) -> float32 logits (N, K) on that device. ``model`` must be in
    eval mode; computed in fp32 whatever autocast would do, so that the figures train.py reports are those of the
    fp32 weights in model.tar.gz. ``tta``: the mean of the image's and its horizontal flip's logits."""
    x = normalize(images.float().div_(255), mean, std, memory_format)
    out = model(x).float()
    if tta:
        out = (out + model(torch.flip(x, dims=[3])).float()) / 2
    return out


@torch.no_grad()
def probabilities(model, images, *, mean, std, tta=False, multilabel=False, temperature=1.0,
                  memory_format=torch.contiguous_format):
    """uint8 NCHW images -> float32 probabilities (N, K): ``activate(logits(...))``, the one path from pixels to
    probabilities for train.py's evaluation and the endpoint."""
    return activate(logits(model, images, mean=mean, std=std, tta=tta, memory_format=memory_format), multilabel,
                    temperature)
