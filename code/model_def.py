"""Model registry and factory.

Every architecture registers itself with ``@register``; ``train.py`` and ``inference.py`` build models
only through ``create_model``, which rejects unknown names with the list of valid ones (the timm pattern).

* ``smallcnn`` (default): a fast residual CNN for any input size from 28 to 224 px: its stem downsamples
  larger images (``stem_stride``) so that its first stage works at 64 px or less, as ResNet's stem takes 224 px
  to 56.
* ``resnet18_small``: torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, for small inputs.
* ``resnet18``, ``resnet50``, ``densenet121``, ``efficientnet_b0``, ``convnext_tiny``, ``efficientnet_v2_s``:
  torchvision models for 224 px (``TORCHVISION``), with ImageNet weights when ``pretrained`` is on: a backbone
  state dict handed in (the ``weights`` channel's file, checked by weights_channel.py: no network then), else
  torchvision's cache or download (``weights_file_name`` names the file). 1-channel inputs are adapted by
  summing the pretrained first-layer filters over RGB (timm's ``adapt_input_conv``), which keeps the response to a
  grey image; the classifier head (``HEADS``) is new.
"""
import logging

import torch
from torch import nn

MODELS = {}
OPTIONS = {"smallcnn": ("stem_stride",)}  # the options (keyword arguments) each architecture takes
# the last convolutional stage of each architecture: what Grad-CAM heat maps explain (medimg.heatmaps)
CAM_LAYERS = {"smallcnn": "stages", "resnet18_small": "layer4", "resnet18": "layer4", "resnet50": "layer4",
              "densenet121": "features", "efficientnet_b0": "features", "convnext_tiny": "features",
              "efficientnet_v2_s": "features"}


def register(fn):
    MODELS[fn.__name__] = fn
    return fn


def create_model(name, num_classes, in_channels=1, pretrained=False, **options):
    """Build a registered architecture. ``options`` are the architecture's own (``architecture_options``, saved in
    model_config.json so the endpoint rebuilds the same network). Raises ValueError for an unknown name, option,
    class count or channel count."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes (outputs) must be at least 1, got {num_classes}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    unknown = sorted(set(options) - set(OPTIONS.get(name, ())))
    if unknown:
        raise ValueError(f"{name} takes no option {unknown[0]!r}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, pretrained=pretrained, **options)


def check_input_size(model, name, in_channels, size):
    """Raise ValueError when ``model`` cannot take ``size`` x ``size`` images (pooling stages that shrink them to
    nothing, as densenet121's below 32 px), found by one forward pass of a blank image in eval mode on the CPU
    (no weights, BatchNorm statistics or random numbers change). Call it before moving the model."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"model={name} cannot take {size} px images ({reason}); set image-size higher (e.g. 64) or "
                         "pick another model") from exc
    finally:
        model.train(was_training)


def strided_convs_on_one_pixel(model, in_channels, size):
    """Names of the convolutions with a stride above 1 whose input maps are 1 pixel high or wide for ``size`` px
    images (found as ``check_input_size`` does, by one forward pass of a blank image in eval mode). oneDNN's bf16
    backward of such a convolution on the CPU returns NaN weight gradients at random (measured with torch 2.6 and
    2.14 on an AVX-512 bf16 CPU: resnet18 at 16 px, layer4.0.conv1, in about 1 step of 10), so train.py trains those
    models in fp32 on the CPU."""
    names, hooks = [], []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and max(module.stride) > 1:
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: names.append(name) if min(args[0].shape[-2:]) == 1 else None))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return names


def cpu_safe_autocast(amp_dtype, device, name, in_channels, size):
    """fp32 (None) in place of bf16 on the CPU for the architecture ``name`` when its strided convolutions see
    1-pixel maps at this image size (``strided_convs_on_one_pixel``, on a freshly built copy: oneDNN's NaN
    gradients), said in one line; else ``amp_dtype``."""
    if device.type != "cpu" or amp_dtype != torch.bfloat16:
        return amp_dtype
    model = create_model(name, 2, in_channels, False, **architecture_options(name, size))
    try:
        names = strided_convs_on_one_pixel(model, in_channels, size)
    except RuntimeError:  # the model cannot take this size at all: check_input_size refuses it in one line
        return amp_dtype
    if names:
        logging.getLogger("train").warning(
            "amp off: at %d px, %s of %s see 1-pixel maps, whose bf16 gradients on the CPU can be NaN (oneDNN); "
            "training in fp32", size, ", ".join(names[:3]), type(model).__name__)
        return None
    return amp_dtype


def architecture_options(name, image_size):
    """The options ``create_model`` gets for images of ``image_size`` px a side (an int): for smallcnn the stem
    stride (``stem_stride``); nothing for the torchvision models, whose own stems are made for 224 px."""
    return {"stem_stride": stem_stride(image_size)} if name == "smallcnn" else {}


MAX_FIRST_STAGE_SIZE = 64  # px: what SmallCNN's first stage sees at most (ResNet's sees 56 of 224)


def stem_stride(image_size):
    """1, 2 or 4: the smallest that brings ``image_size`` px down to MAX_FIRST_STAGE_SIZE or less (4 at most).
    28 and 64 px: 1; 96 and 128 px: 2; 224 px: 4 (56 px, as ResNet). Compute then grows about linearly, not
    quadratically, with the side above 64 px (docs/PERFORMANCE.md, image sizes)."""
    stride = 1
    while stride < 4 and image_size / stride > MAX_FIRST_STAGE_SIZE:
        stride *= 2
    return stride


# --------------------------------------------------------------------------------------------------
# Small-image CNN
# --------------------------------------------------------------------------------------------------
def conv_bn_act(cin, cout, stride=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = conv_bn_act(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)
        nn.init.zeros_(self.conv2[1].weight)  # start each block as identity: stable early training

    def forward(self, x):
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class SmallCNN(nn.Module):
    """Stem, three residual stages (each halves the resolution after the first), global pool, linear.

    At 28 px: 28 -> 28 -> 14 -> 7. Works at any input size thanks to the adaptive pool; ``stem_stride`` 2 or 4
    (one or two stride-2 3x3 convolutions) for larger images: 224 px -> 56 -> 56 -> 28 -> 14. Widths (24, 48, 96),
    about 170k parameters: on PneumoniaMNIST val the same AUC and accuracy as (32, 64, 128) over 3 seeds
    (0.9965 vs 0.9967, 0.970 vs 0.970) at 1.3-1.4x the training speed on a CPU (docs/PERFORMANCE.md).
    """

    def __init__(self, num_classes, in_channels=1, widths=(24, 48, 96), dropout=0.1, stem_stride=1):
        super().__init__()
        if stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {stem_stride!r}")
        stem = [conv_bn_act(in_channels, widths[0], stride=min(stem_stride, 2))]
        if stem_stride == 4:
            stem.append(conv_bn_act(widths[0], widths[0], stride=2))
        self.stem = stem[0] if len(stem) == 1 else nn.Sequential(*stem)
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(ResidualBlock(cin, w, stride=1 if i == 0 else 2))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x))


@register
def smallcnn(num_classes, in_channels=1, pretrained=False, stem_stride=1):
    if pretrained:
        raise ValueError("smallcnn has no pretrained weights; set pretrained to false or pick a torchvision model")
    return SmallCNN(num_classes, in_channels, stem_stride=stem_stride)


# --------------------------------------------------------------------------------------------------
# torchvision models
# --------------------------------------------------------------------------------------------------
# name: (torchvision builder, its weights enum, first convolution, classifier head). The head is replaced for
# num_classes; the first convolution is adapted to 1-channel inputs by summing its RGB kernels (timm's
# adapt_input_conv), which keeps the response to a grey image.
TORCHVISION = {
    "resnet18": ("resnet18", "ResNet18_Weights", "conv1", "fc"),
    "resnet50": ("resnet50", "ResNet50_Weights", "conv1", "fc"),
    "densenet121": ("densenet121", "DenseNet121_Weights", "features.conv0", "classifier"),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNet_B0_Weights", "features.0.0", "classifier.1"),
    "convnext_tiny": ("convnext_tiny", "ConvNeXt_Tiny_Weights", "features.0.0", "classifier.2"),
    "efficientnet_v2_s": ("efficientnet_v2_s", "EfficientNet_V2_S_Weights", "features.0.0", "classifier.1"),
    "resnet18_small": ("resnet18", "ResNet18_Weights", "conv1", "fc"),  # its own 3x3 stem: ImageNet's 7x7 is not kept
}
# the classifier head of every architecture: what a model channel's earlier model of other classes makes anew
HEADS = {"smallcnn": "fc", **{name: spec[3] for name, spec in TORCHVISION.items()}}
WEIGHTS_CHANNEL = "weights"  # where a job without internet finds the ImageNet weights (code/weights_channel.py)
DOWNLOAD_TIMEOUT_S = 60  # a VPC without a route to the internet fails in a minute, not at the TCP timeout


def weights_enum(name):
    """torchvision's weights enum of architecture ``name`` (e.g. ``ResNet18_Weights``)."""
    import torchvision.models as tvm

    return getattr(tvm, TORCHVISION[name][1])


def weights_file_name(name):
    """The file torchvision downloads for ``name``'s default ImageNet weights (``resnet18-f37072fd.pth``): the
    basename of its URL, whose ``-<hex>.`` part is the start of the file's SHA-256 (torch.hub.check_hash)."""
    return weights_enum(name).DEFAULT.url.rsplit("/", 1)[-1]


def imagenet_model(name):
    """``name``'s torchvision network as ImageNet weights fit it (3 channels, 1,000 classes), randomly initialised."""
    import torchvision.models as tvm

    return getattr(tvm, TORCHVISION[name][0])(weights=None)


def _torchvision(name, pretrained):
    """``name``'s torchvision network as ImageNet weights fit it: random (``pretrained`` false), torchvision's ImageNet
    weights (true: its cache in TORCH_HOME, else a download), or a backbone state dict (a mapping: the weights
    channel's file, checked by weights_channel.py; the head's keys are not in it)."""
    if not isinstance(pretrained, bool) and pretrained is not None:
        model = imagenet_model(name)
        load_backbone(model, pretrained, TORCHVISION[name][3])
        return model
    if not pretrained:
        return imagenet_model(name)
    import socket

    import torchvision.models as tvm

    weights, previous = weights_enum(name).DEFAULT, socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return getattr(tvm, TORCHVISION[name][0])(weights=weights)
    except Exception as exc:  # no internet (network isolation, a VPC without NAT), a proxy, a corrupt cache
        file = weights_file_name(name)
        raise RuntimeError(
            f"pretrained=true: could not get torchvision's {name} weights {file} from the cache or the internet "
            f"({type(exc).__name__}: {exc}); a job without internet access takes them from a "
            f"'{WEIGHTS_CHANNEL}' channel: upload {file} to S3 and add the channel {WEIGHTS_CHANNEL}=s3://.../{file} "
            "(the notebook's stage_weights does this), or set pretrained=false") from exc
    finally:
        socket.setdefaulttimeout(previous)


def load_backbone(model, state, head):
    """Load ``state`` into ``model`` (strictly, but for the ``head`` module's keys, which it may lack); raises
    ValueError naming what does not fit."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(head + ".") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"the weights do not fit {type(model).__name__}: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}")


def _adapt_conv(conv, in_channels, **overrides):
    """Return a copy of ``conv`` taking ``in_channels`` inputs (and any overridden geometry)."""
    kwargs = dict(
        in_channels=in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
        stride=conv.stride, padding=conv.padding, bias=conv.bias is not None,
    )
    kwargs.update(overrides)
    new = nn.Conv2d(**kwargs)
    same_geometry = new.weight.shape[2:] == conv.weight.shape[2:]
    if same_geometry:
        with torch.no_grad():
            w = conv.weight
            new.weight.copy_(w.sum(dim=1, keepdim=True) if in_channels == 1 else w)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


def _replace_head(linear, num_classes):
    return nn.Linear(linear.in_features, num_classes)


def _get(module, path):
    for name in path.split("."):
        module = getattr(module, name)  # nn.Sequential children answer to "0", "1", ...
    return module


def _set(module, path, value):
    parent, _, name = path.rpartition(".")
    setattr(_get(module, parent) if parent else module, name, value)


@register
def resnet18_small(num_classes, in_channels=1, pretrained=False):
    m = _torchvision("resnet18_small", pretrained)
    m.conv1 = _adapt_conv(m.conv1, in_channels, kernel_size=3, stride=1, padding=1)
    m.maxpool = nn.Identity()
    m.fc = _replace_head(m.fc, num_classes)
    return m


def _register_torchvision(name):
    """Register torchvision's ``name`` (TORCHVISION): its ImageNet weights when ``pretrained``, the first
    convolution adapted to 1-channel inputs, the head replaced for ``num_classes``."""
    _, _, stem, head = TORCHVISION[name]

    def build(num_classes, in_channels=3, pretrained=False):
        m = _torchvision(name, pretrained)
        if in_channels != 3:
            _set(m, stem, _adapt_conv(_get(m, stem), in_channels))
        _set(m, head, _replace_head(_get(m, head), num_classes))
        return m

    build.__name__ = name
    return register(build)


for _name in TORCHVISION:
    if _name != "resnet18_small":
        _register_torchvision(_name)
