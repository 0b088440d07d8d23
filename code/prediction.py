"""The forward pass from pixels to probabilities: one function that train.py's evaluation and the endpoint both
call, so that what a model scored on validation and test is what it answers when deployed.
"""
import torch


def normalize(x, mean, std, memory_format=torch.contiguous_format):
    """Float NCHW on the 0..1 scale -> ``(x - mean) / std`` per channel, in the given memory format."""
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous(memory_format=memory_format)


@torch.no_grad()
def probabilities(model, images, *, mean, std, tta=False, memory_format=torch.contiguous_format):
    """uint8 NCHW images (on the model's device) -> float32 softmax probabilities (N, K) on that device.

    ``model`` must be in eval mode. Computed in fp32 whatever autocast would do, so that the figures train.py
    reports are those of the fp32 weights in model.tar.gz. ``tta``: the mean of the image's and its horizontal
    flip's probabilities."""
    x = normalize(images.float().div_(255), mean, std, memory_format)
    prob = torch.softmax(model(x).float(), dim=1)
    if tta:
        prob = (prob + torch.softmax(model(torch.flip(x, dims=[3])).float(), dim=1)) / 2
    return prob
