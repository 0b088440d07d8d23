"""train.py's hyperparameters: one argparse parser, SageMaker-shaped.

The toolkit (SDK v2) runs ``python train.py --key value ...`` with keys sorted and booleans ``True``/``False``;
SDK v3's drivers pass them in the dict's order with ``true``/``false`` and strings bare. There are no value-less
flags (``store_true`` cannot be sent) and booleans are parsed by ``str2bool`` (``bool("False")`` is True).
Values are taken as users, YAML files and tuners write them: choices ignoring case (``choice``: ``ResNet18`` is
``resnet18``), integers also as whole-number floats (``whole_number``: ``3.0``, what a ContinuousParameter sends).
Paths default to the ``SM_*`` variables, read from ``environ`` when parsing (never at import), with local
fallbacks so that the script also runs outside SageMaker. Every error is a ConfigError: one line for the
failure file.
"""
import argparse
import json
import math
import os

import torch

import layout
import model_def
from errors import ConfigError

SAGEMAKER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
PATHS = ("model_dir", "train", "val", "test", "output_data_dir", "output_dir", "checkpoint_dir", "label_dict",
         "weights", "initial_model")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line, into the failure file) instead of exiting."""

    def error(self, message):
        raise ConfigError(f"invalid hyperparameter: {message}")


def str2bool(value):
    """True/False, true/false, 1/0, yes/no, y/n, on/off (any case) -> bool."""
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False, true/false, 1/0, yes/no), got {value!r}")


def whole_number(value):
    """``int(value)``, also for a whole number written as a float (``3.0``, ``"3.00"``, ``"1e3"``): what a tuner's
    ContinuousParameter, a YAML file or a JSON encoder sends for an integer. ``"3.5"`` is a ValueError."""
    if isinstance(value, bool):
        raise ValueError(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        result = float(value)
        if not (math.isfinite(result) and result.is_integer()):
            raise ValueError(value)
        return int(result)


def number(kind, low=None, low_inclusive=True, high=None):
    """An argparse type: ``kind`` (int or float; floats must be finite; an int may be written as a whole float,
    ``whole_number``) within [low, high]."""
    def parse(value):
        try:
            result = whole_number(value) if kind is int else kind(value)
            if kind is float and not math.isfinite(result):
                raise ValueError
        except (TypeError, ValueError):
            what = "a whole number" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
        if low is not None and (result < low if low_inclusive else result <= low):
            raise argparse.ArgumentTypeError(f"must be {'>=' if low_inclusive else '>'} {low}, got {value!r}")
        if high is not None and result > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value!r}")
        return result

    parse.__name__ = kind.__name__
    return parse


def auto_or(parse):
    """An argparse type: the word ``auto`` (any case), or what ``parse`` accepts."""
    def parse_or_auto(value):
        if str(value).strip().lower() == "auto":
            return "auto"
        return parse(value)

    parse_or_auto.__name__ = f"auto or {parse.__name__}"
    return parse_or_auto


def choice(options):
    """An argparse type for a ``choices`` list: a value matching one of ``options`` ignoring case (``ResNet18``,
    ``AdamW``, ``CUDA``) becomes that option's spelling; any other value is left for argparse's ``choices`` check,
    which refuses it listing them."""
    def parse_choice(value):
        text = str(value).strip()
        return next((o for o in options if str(o).casefold() == text.casefold()), text)

    parse_choice.__name__ = "choice"
    return parse_choice


def _choices(options, **kwargs):
    """argparse keywords of a hyperparameter with ``options``, matched ignoring case (``choice``)."""
    return dict(type=choice(options), choices=tuple(options), **kwargs)


def _env(environ, name, fallback):
    return environ.get(name) or fallback


_POS_INT, _POS_FLOAT = number(int, 1), number(float, 0, low_inclusive=False)
# Every hyperparameter as (group, flag, argparse keywords): the one home of names, types, defaults and help texts
# (the README's table is generated from it, and tests/test_docs.py checks the README against it).
TABLE = [
    ("training", "epochs", dict(type=auto_or(_POS_INT), default="auto",
                                help="maximum epochs; auto: enough for train-steps optimiser steps (5 to 300)")),
    ("training", "train-steps", dict(type=_POS_INT, default=1500,
                                     help="the optimiser-step budget that epochs=auto trains for")),
    ("training", "fine-tune-steps", dict(type=_POS_INT, default=500,
                                         help="the budget epochs=auto trains for when the model starts from weights "
                                              "(pretrained=true or a model channel): the fine-tuning plan")),
    ("training", "backbone-lr-scale", dict(type=auto_or(number(float, 0, high=1)), default="auto",
                                           help="layers loaded from weights train at lr x this, new ones (the "
                                                "head) at lr; auto: 0.1 when the model starts from weights; 0 "
                                                "freezes the loaded ones")),
    ("training", "max-train-minutes", dict(type=number(float, 0), default=0.0,
                                           help="cut the epochs after the first one so training ends in time "
                                                "(auto warm-up, EMA and patience follow); 0: no limit")),
    ("training", "ensemble", _choices(("auto", "on", "off"), default="auto",
                                  help="a K-fold ensemble of train + val: each member trains on the other folds and "
                                       "chooses its epoch on its own, temperature and threshold on all out-of-fold "
                                       "predictions, the members' probabilities averaged; auto: on for up to 2,000 "
                                       "images when 3+ folds of 100+ images (20+ per class) fit the time "
                                       "(README, Model quality)")),
    ("training", "folds", dict(type=number(int, 2), default=5,
                               help="K, the ensemble's folds and members (auto may use fewer: README, Model "
                                    "quality)")),
    ("training", "batch-size", dict(type=auto_or(_POS_INT), default="auto",
                                    help="images per step per process (per GPU); auto: the largest power of two "
                                         "<= 128 giving 16+ steps an epoch")),
    ("training", "lr", dict(type=auto_or(_POS_FLOAT), default="auto",
                            help="peak learning rate (linear warm-up, then cosine decay to 1%%); auto: 0.002 x "
                                 "sqrt(global batch / 128), the global batch being batch-size x processes")),
    ("training", "weight-decay", dict(type=number(float, 0), default=0.05,
                                      help="decoupled weight decay (not on norms and biases)")),
    ("training", "optimizer", _choices(("adamw", "sgd"), default="adamw",
                                   help="adamw, or sgd (Nesterov momentum 0.9)")),
    ("training", "warmup-epochs", dict(type=auto_or(number(float, 0)), default="auto",
                                       help="linear warm-up length; auto: 3%% of the run's steps")),
    ("training", "label-smoothing", dict(type=number(float, 0, high=0.5), default=0.0,
                                         help="cross-entropy label smoothing")),
    ("training", "class-weighting", _choices(("none", "balanced"), default="none",
                                         help="balanced: weigh the loss by inverse class frequency")),
    ("training", "patience", dict(type=auto_or(number(int, 0)), default="auto",
                                  help="epochs without a better val score before stopping; 0: never stop early; "
                                       "auto: a quarter of the epochs (3+)")),
    ("training", "ema", dict(type=auto_or(number(float, 0, high=0.99999)), default="auto",
                             help="decay of the weight EMA used for validation and the saved model; 0: off; auto: "
                                  "averages the last tenth of the run")),
    ("training", "seed", dict(type=number(int, 0), default=42,
                              help="seeds the held-out split, initialisation, augmentation and order")),
    ("model and data", "task", _choices(("auto", "multiclass", "multilabel"), default="auto",
                                    help="auto: multilabel when the train channel's labels.csv has finding "
                                         "columns, else multiclass")),
    ("model and data", "ordinal", dict(type=str2bool, default=False,
                                       help="classes are ordered grades (in label-dict order): adds quadratic "
                                            "weighted kappa and mean absolute grade error; not with findings")),
    ("model and data", "model", _choices(sorted(model_def.MODELS), default="smallcnn",
                                     help="an architecture of code/model_def.py's registry")),
    ("model and data", "pretrained", dict(type=str2bool, default=False,
                                          help="ImageNet weights for the torchvision models: the weights channel's "
                                               "file, else torchvision's cache or download")),
    ("model and data", "image-size", dict(type=auto_or(number(int, 0)), default="auto",
                                          help="side in pixels; auto (or 0): the training images' most common "
                                               "size, at most 224")),
    ("model and data", "in-channels", dict(type=number(int), choices=(0, 1, 3), default=0,
                                           help="1 or 3; 0: 3 when any sampled training image holds colour")),
    ("model and data", "augment", dict(type=str2bool, default=True,
                                       help="random affine (rotation, scale, shift), brightness and contrast")),
    ("model and data", "hflip", dict(type=str2bool, default=True, help="random horizontal flips in augment")),
    ("model and data", "vflip", dict(type=str2bool, default=False, help="random vertical flips in augment")),
    ("model and data", "tta", dict(type=str2bool, default=False,
                                   help="average with the horizontal flip at evaluation and inference; needs "
                                        "hflip")),
    ("evaluation", "calibrate", dict(type=str2bool, default=True,
                                     help="temperature scaling fitted on val, applied at evaluation and inference")),
    ("evaluation", "target-sensitivity", dict(type=number(float, 0, high=1), default=0.0,
                                              help="binary and multi-label only: the operating threshold is the "
                                                   "highest with at least this val sensitivity; 0: Youden's J")),
    ("evaluation", "positive-class", dict(type=str, default=layout.POSITIVE_AUTO,
                                          help="binary tasks: the class whose sensitivity, PPV and operating "
                                               "threshold are reported (a class name, ignoring case); auto: the "
                                               "other class when exactly one name means no finding (normal, "
                                               "benign, healthy, negative, ...: README, The positive class), else the "
                                               "second")),
    ("evaluation", "bootstrap", dict(type=number(int, 0), default=1000,
                                     help="resamples for the 95%% confidence intervals of the test metrics; 0: none")),
    ("model and data", "val-fraction", dict(type=number(float, 0, low_inclusive=False, high=0.5), default=0.1,
                                            help="held out of train when there is no val channel: stratified, "
                                                 "seeded, and by patient when labels.csv has patient_id")),
    ("model and data", "max-bad-fraction", dict(type=number(float, 0, high=1), default=0.01,
                                                help="unreadable images tolerated (skipped, counted) per split")),
    ("model and data", "page", dict(type=number(int, 0), default=0,
                                    help="which page (frame) of multi-page TIFF and animated GIF/WebP/PNG files is "
                                         "read, from 0 (the endpoint reads the same); a file without it is an "
                                         "unreadable image")),
    ("model and data", "max-image-pixels", dict(type=_POS_INT, default=64_000_000,
                                                help="larger images are refused (decompression-bomb guard)")),
    ("model and data", "cache-max-gb", dict(type=number(float, 0), default=8.0,
                                            help="decode the data once into memory when it fits, else stream it")),
    ("speed", "amp", dict(type=str2bool, default=True,
                          help="mixed precision: bf16 (fp16 + GradScaler on older GPUs; bf16 on CPUs with it)")),
    ("speed", "compile", dict(type=str2bool, default=False, help="torch.compile the model")),
    ("speed", "channels-last", dict(type=str2bool, default=True, help="NHWC memory format")),
    ("speed", "num-workers", dict(type=number(int, -1), default=-1,
                                  help="data loader processes when streaming; -1: automatic")),
    ("speed", "max-steps-per-epoch", dict(type=number(int, 0), default=0,
                                          help="cap on steps per epoch (benchmarks, smoke tests); 0: all")),
    ("speed", "device", _choices(("auto", "cpu", "cuda"), default="auto", help="auto, cpu or cuda")),
    ("speed", "dist-timeout", dict(type=number(int, 10), default=600,
                                   help="seconds a collective waits for a dead or stuck rank")),
]


def build_parser(environ):
    """The parser; ``environ`` gives the SM_* path defaults and the channels."""
    p = ArgumentParser(description="Train an image classifier on SageMaker channels (code/train.py).",
                       allow_abbrev=False)
    groups = {}
    for group, flag, kwargs in TABLE:
        if group not in groups:
            groups[group] = p.add_argument_group(group)
        groups[group].add_argument(f"--{flag}", **kwargs)
    d = p.add_argument_group("paths (SageMaker sets these through SM_* variables)")
    channels = channel_paths(environ)
    d.add_argument("--model-dir", default=_env(environ, "SM_MODEL_DIR", "model"))
    d.add_argument("--train", default=channels.get("train", os.path.join("data", "train")),
                   help="the train channel (SM_CHANNEL_TRAIN or _TRAINING)")
    d.add_argument("--val", default=channels.get("val"),
                   help="the validation channel (SM_CHANNEL_VAL, _VALIDATION or _VALID)")
    d.add_argument("--test", default=channels.get("test"), help="the test channel (SM_CHANNEL_TEST or _TESTING)")
    d.add_argument("--weights", default=channels.get("weights"),
                   help="the weights channel (SM_CHANNEL_WEIGHTS): the backbone's weights for pretrained=true")
    d.add_argument("--initial-model", default=channels.get("model"),
                   help="the model channel (SM_CHANNEL_MODEL): an earlier job's model.tar.gz, or its files, to "
                        "start from")
    d.add_argument("--output-data-dir", default=_env(environ, "SM_OUTPUT_DATA_DIR", os.path.join("output", "data")))
    d.add_argument("--output-dir", default=_env(environ, "SM_OUTPUT_DIR", "output"))
    d.add_argument("--checkpoint-dir", default=None,
                   help=f"default: $SM_CHECKPOINT_DIR, else {SAGEMAKER_CHECKPOINT_DIR} when it exists")
    d.add_argument("--label-dict", default=None,
                   help="class names (index -> name JSON); default: the train channel's label_dict.json, else "
                        "the names its labels.csv or class folders bring, else code/label_dict.json")
    return p


def channel_paths(environ):
    """``{"train": path, "val": path, "test": path}`` (those given) from the channels SageMaker hands over.

    The channels are ``SM_CHANNELS`` (a JSON list; without it, the ``SM_CHANNEL_*`` variables), each at
    ``SM_CHANNEL_<NAME>``. Aliases name the same split (``validation`` is ``val``: layout.CHANNEL_ROLES); the
    launcher's own channels (SDK v3's ``code`` and ``sm_drivers``) are not data; ``weights`` and ``model`` are where
    the model starts from (layout.START_CHANNELS), under those keys. Any other channel, or two that name the same
    split, is a ConfigError: nothing handed over is silently ignored."""
    names = _channel_names(environ)
    found = {}
    for name in names:
        role = layout.channel_role(name)
        if role == "launcher":
            continue
        if role is None:
            reads = "; ".join(f"{r} ({' or '.join(a)})" for r, a in layout.CHANNEL_ROLES.items()) + (
                "; weights (the backbone's weights for pretrained=true); model (an earlier model to start from)")
            raise ConfigError(f"the channel {name!r} is not one train.py reads; it reads {reads}; rename the channel "
                              "or leave it out of fit()/train()")
        if role in found:
            raise ConfigError(f"the channels {found[role][0]!r} and {name!r} both hold the {role} split; pass only one")
        if input_modes(environ).get(name) == "Pipe":
            raise ConfigError(f"the channel {name!r} is in Pipe input mode (a stream through a named pipe), which "
                              "train.py cannot read: it reads files; start the job with input_mode File or FastFile")
        path = environ.get(f"SM_CHANNEL_{name.upper()}") or os.path.join(
            environ.get("SM_INPUT_DATA_DIR") or "/opt/ml/input/data", name)
        found[role] = (name, path)
    return {role: path for role, (_, path) in found.items()}


def input_modes(environ):
    """``{channel: TrainingInputMode}`` as the launcher hands the platform's inputdataconfig.json over
    (``SM_INPUT_DATA_CONFIG``: the training toolkit and SDK v3's drivers both set it); {} without it."""
    text = environ.get("SM_INPUT_DATA_CONFIG")
    try:
        config = json.loads(text) if text else {}
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise ConfigError(f"SM_INPUT_DATA_CONFIG={text!r} is not a JSON object; it is set by the SageMaker launcher: "
                          "do not set it by hand")
    return {name: c.get("TrainingInputMode") for name, c in config.items() if isinstance(c, dict)}


def _channel_names(environ):
    text = environ.get("SM_CHANNELS")
    if text:
        try:
            names = json.loads(text)
        except ValueError:
            raise ConfigError(f"SM_CHANNELS={text!r} is not a JSON list of channel names; it is set by the "
                              "SageMaker launcher: do not set it by hand")
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
        raise ConfigError(f"SM_CHANNELS={text!r} is not a JSON list of channel names")
    prefix = "SM_CHANNEL_"
    return sorted(k[len(prefix):].lower() for k in environ if k.startswith(prefix) and k != "SM_CHANNELS")


def flag_names(parser):
    """Every ``--flag`` of the parser, without the dashes (``--help`` left out)."""
    return sorted(o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help")


def parse_args(argv=None, environ=None):
    """Parse train.py's arguments; raises ConfigError with one line naming the problem."""
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = sorted(a for a in unknown if a.startswith("--")) or unknown
        raise ConfigError(f"unknown hyperparameter {flags[0]}; valid ones are {', '.join(flag_names(parser))}")
    if args.checkpoint_dir is None:
        args.checkpoint_dir = environ.get("SM_CHECKPOINT_DIR") or (
            SAGEMAKER_CHECKPOINT_DIR if os.path.isdir(SAGEMAKER_CHECKPOINT_DIR) else "")
    if args.tta and not args.hflip:
        raise ConfigError("invalid hyperparameter: tta=true averages each image with its horizontal flip, but "
                          "hflip=false trains without flips (as when the side matters); set tta=false, or hflip=true")
    if args.weights and not args.pretrained:
        raise ConfigError("the job has a weights channel but pretrained=false; set pretrained=true to start from its "
                          "file, or leave the channel out")
    if args.weights and args.initial_model:
        raise ConfigError("the job has both a weights channel and a model channel; give one: the model channel's "
                          "earlier model already holds its backbone")
    if args.backbone_lr_scale != "auto" and not (args.pretrained or args.initial_model):
        raise ConfigError(f"invalid hyperparameter: backbone-lr-scale={args.backbone_lr_scale} applies to a model that "
                          "starts from weights; set pretrained=true or add a model channel, or leave it auto")
    if args.pretrained and args.model == "smallcnn":
        raise ConfigError("invalid hyperparameter: smallcnn has no pretrained weights; set pretrained=false "
                          f"or choose one of {sorted(set(model_def.MODELS) - {'smallcnn'})}")
    return args


def flip_tta(args):
    """Whether evaluation and the endpoint average each image's logits with its horizontal flip's: ``tta``, for a
    model trained with ``hflip`` (parse_args refuses tta without it)."""
    return bool(args.tta and args.hflip)


def memory_format(args):
    """The memory format of the model and its input batches (``channels-last``)."""
    return torch.channels_last if args.channels_last else torch.contiguous_format


def defaults():
    """``{flag: default}`` of every hyperparameter that is not a path (what the notebook and README list)."""
    return {flag: kwargs["default"] for _, flag, kwargs in TABLE}


def markdown_table():
    """The README's hyperparameter table (name | default | meaning), one row per TABLE entry in order, defaults as
    train.py reads them (auto, true/false, numbers); tests/test_docs.py checks README.md holds exactly this."""
    def cell(text):
        return str(text).replace("%%", "%").replace("|", "\\|")

    rows = ["| name | default | meaning |", "|---|---|---|"]
    for _, flag, kwargs in TABLE:
        default = kwargs["default"]
        shown = str(default).lower() if isinstance(default, bool) else default
        meaning = kwargs.get("help", "")
        choices = [str(c) for c in kwargs.get("choices") or ()]
        if any(c not in meaning for c in choices):
            meaning += f" (one of {', '.join(f'`{c}`' for c in choices)})"
        rows.append(f"| `{flag}` | {cell(shown)} | {cell(meaning)} |")
    return "\n".join(rows)


def recorded(args):
    """The hyperparameters of a run as saved in model_config.json: everything but the paths."""
    return {k: v for k, v in vars(args).items() if k not in PATHS}


if __name__ == "__main__":  # python code/hyperparameters.py: the defaults as JSON, for the client (medimg.job)
    import sys

    json.dump(defaults(), sys.stdout)
    sys.stdout.write("\n")
