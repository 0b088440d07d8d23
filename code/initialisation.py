"""Where a model's weights start (``build``), and how the optimiser treats the ones it loaded (``param_groups``).

In order of precedence:

1. the ``model`` channel (code/model_channel.py): an earlier job's model; every weight (same classes) or all but
   the classifier head (other classes); its normalisation is kept;
2. ``pretrained=true`` with a ``weights`` channel (code/weights_channel.py): the file's ImageNet backbone, checked,
   without any network access;
3. ``pretrained=true`` without one: torchvision's ImageNet weights from its cache (TORCH_HOME) or a download, and
   one line naming the weights channel when that fails;
4. else a random initialisation (seeded).

With ImageNet weights, a 1-channel model's first convolution is the sum of the RGB kernels (timm's
``adapt_input_conv``: a grey image gives the response of its RGB copy), the normalisation is ImageNet's (grey: the
means of its three values; data.normalisation), and the classifier head is new. resnet18_small's 3x3 stem cannot
take ImageNet's 7x7 kernels and is new too. What was done is logged and recorded as model_config.json's (and
metrics.json's) ``initialised_from``.

The model carries ``new_layers``: the module paths made anew (None from scratch: all of them). ``param_groups``
gives those the plan's peak lr and the loaded ones ``lr x backbone_lr_scale`` (schedule.fine_tuning_plan).
"""
import logging

import model_channel
import model_def
import utils
import weights_channel
from errors import ConfigError

logger = logging.getLogger("train")

GREY_FIRST_CONV = "ImageNet's RGB kernels summed (timm's adapt_input_conv): a grey image gives its RGB copy's response"


def imagenet_layers(name, in_channels):
    """(first convolution's description, the layers made anew) of ``name`` built from ImageNet weights."""
    stem, head = model_def.TORCHVISION[name][2], model_def.TORCHVISION[name][3]
    if name == "resnet18_small":
        return "new: resnet18_small's 3x3 stem cannot take ImageNet's 7x7 kernels", [stem, head]
    return (GREY_FIRST_CONV if in_channels == 1 else "ImageNet's"), [head]


def from_earlier_model(args, data, num_classes, options):
    earlier = model_channel.read(args.initial_model)
    mode = model_channel.compare(earlier.config, architecture=args.model, options=options, in_channels=data.channels,
                                 classes=list(data.classes), task=data.task)
    model = model_def.create_model(args.model, num_classes, data.channels, False, **options)
    new = model_channel.apply(model, earlier, mode, args.model)
    data.mean, data.std = list(earlier.config["mean"]), list(earlier.config["std"])
    info = model_channel.describe(earlier, mode, list(data.classes), data.size)
    if args.pretrained:
        info["pretrained"] = "not loaded: the earlier model's weights are the start"
    return model, info, new


def from_imagenet(args, data, num_classes, options):
    if args.weights:
        backbone, info = weights_channel.load(args.weights, args.model)
    else:
        weights = model_def.weights_enum(args.model).DEFAULT
        backbone, info = True, {"source": "torchvision", "weights": str(weights),
                                "file": model_def.weights_file_name(args.model)}
    model = model_def.create_model(args.model, num_classes, data.channels, backbone, **options)
    first_conv, new = imagenet_layers(args.model, data.channels)
    info.update(first_conv=first_conv, head=f"new: {num_classes} outputs",
                normalisation="ImageNet's mean and std" + (" (grey: their means)" if data.channels == 1 else ""))
    return model, info, new


def build(args, data, num_classes):
    """(model, initialised_from) for this run (module docstring); the model carries ``new_layers``. Raises
    ConfigError (one line) for a channel whose weights are refused, and for ImageNet weights that cannot be had."""
    options = model_def.architecture_options(args.model, data.size)
    utils.seed_everything(args.seed)  # the initial weights: the same seed gives the same model (and the same head)
    try:
        if args.initial_model:
            model, info, new = from_earlier_model(args, data, num_classes, options)
        elif args.pretrained:
            model, info, new = from_imagenet(args, data, num_classes, options)
        else:
            model = model_def.create_model(args.model, num_classes, data.channels, False, **options)
            info, new = {"source": "random", "seed": args.seed}, None
    except ValueError as exc:
        raise ConfigError(f"invalid hyperparameter: {exc}") from exc
    except RuntimeError as exc:  # ImageNet weights that could not be had
        raise ConfigError(str(exc)) from exc
    model.new_layers = new
    log(info)
    return model, dict(info, new_layers=new)


def log(info):
    if info["source"] == "random":
        return
    facts = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in info.items()
                      if k not in ("source", "sha256", "mean", "std"))
    logger.info("initialised from the %s: %s", info["source"], facts)


def param_groups(model, weight_decay, backbone_lr_scale=1.0):
    """The optimiser's parameter groups: no weight decay on norms and biases; the layers in ``model.new_layers``
    (all, when it is None) at the plan's lr, the loaded ones at ``lr x backbone_lr_scale`` (each group's
    ``lr_scale``). From scratch: [decay, no decay], as before fine-tuning existed (old checkpoints resume)."""
    new = getattr(model, "new_layers", None)
    groups = {}
    for name, p in model.named_parameters():
        fresh = new is None or any(name == layer or name.startswith(layer + ".") for layer in new)
        groups.setdefault((fresh, p.ndim > 1), []).append(p)
    order = sorted(groups, key=lambda k: (not k[0], not k[1]))  # new layers first, then decayed before not
    return [{"params": groups[key], "weight_decay": weight_decay if key[1] else 0.0,
             "lr_scale": 1.0 if key[0] else float(backbone_lr_scale)} for key in order]
