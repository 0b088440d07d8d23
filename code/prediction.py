"""The forward pass from pixels to probabilities: one function that train.py's evaluation and the endpoint both
call, so that what a model scored on validation and test is what it answers when deployed.
"""
import torch


def normalize(x, mean, std, memory_format=torch.contiguous_format):
    """Float NCHW on the 0..1 scale -> ``(x - mean) / std`` per channel, in the given memory format."""
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous(memory_format=memory_format)


def activate(logits, multilabel=False):
    """Logits -> probabilities: softmax over classes, or a sigmoid per finding (multi-label)."""
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


@torch.no_grad()
def probabilities(model, images, *, mean, std, tta=False, multilabel=False, memory_format=torch.contiguous_format):
    """uint8 NCHW images (on the model's device) -> float32 probabilities (N, K) on that device: softmax over the
    classes, or one sigmoid per finding when ``multilabel``.

    ``model`` must be in eval mode. Computed in fp32 whatever autocast would do, so that the figures train.py
    reports are those of the fp32 weights in model.tar.gz. ``tta``: the mean of the image's and its horizontal
    flip's probabilities."""
    x = normalize(images.float().div_(255), mean, std, memory_format)
    prob = activate(model(x).float(), multilabel)
    if tta:
        prob = (prob + activate(model(torch.flip(x, dims=[3])).float(), multilabel)) / 2
    return prob
