"""train.py's hyperparameters: one argparse parser, SageMaker-shaped.

The toolkit (SDK v2) runs ``python train.py --key value ...`` with keys sorted and booleans ``True``/``False``;
SDK v3's drivers pass them in the dict's order with ``true``/``false`` and strings bare. There are no value-less
flags (``store_true`` cannot be sent) and booleans are parsed by ``str2bool`` (``bool("False")`` is True).
Paths default to the ``SM_*`` variables, read from ``environ`` when parsing (never at import), with local
fallbacks so that the script also runs outside SageMaker. Every error is a ConfigError: one line for the
failure file.
"""
import argparse
import math
import os

import model_def
from errors import ConfigError

SAGEMAKER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
PATHS = ("model_dir", "train", "val", "test", "output_data_dir", "output_dir", "checkpoint_dir", "label_dict")


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


def number(kind, low=None, low_inclusive=True, high=None):
    """An argparse type: ``kind`` (int or float; floats must be finite) within [low, high]."""
    def parse(value):
        try:
            result = kind(value)
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


def _env(environ, name, fallback):
    return environ.get(name) or fallback


def build_parser(environ):
    """The parser; ``environ`` gives the SM_* path defaults."""
    p = ArgumentParser(description="Train an image classifier on SageMaker channels (code/train.py).",
                       allow_abbrev=False)
    h = p.add_argument_group("training")
    h.add_argument("--epochs", type=number(int, 1), default=40)
    h.add_argument("--batch-size", type=number(int, 1), default=128, help="per process (per GPU)")
    h.add_argument("--lr", type=number(float, 0, low_inclusive=False), default=2e-3, help="peak learning rate")
    h.add_argument("--weight-decay", type=number(float, 0), default=0.05)
    h.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    h.add_argument("--warmup-epochs", type=number(float, 0), default=1.0)
    h.add_argument("--label-smoothing", type=number(float, 0, high=0.5), default=0.0)
    h.add_argument("--class-weighting", choices=("none", "balanced"), default="none")
    h.add_argument("--patience", type=number(int, 0), default=10,
                   help="epochs without val improvement before stopping; 0 turns early stopping off")
    h.add_argument("--ema", type=number(float, 0, high=0.99999), default=0.995,
                   help="decay of the weight EMA used for validation and the saved model; 0 turns it off")
    h.add_argument("--seed", type=number(int, 0), default=42)
    m = p.add_argument_group("model and data")
    m.add_argument("--model", choices=sorted(model_def.MODELS), default="smallcnn")
    m.add_argument("--pretrained", type=str2bool, default=False, help="ImageNet weights (torchvision models)")
    m.add_argument("--image-size", type=number(int, 0), default=0, help="0: the training images' own size")
    m.add_argument("--in-channels", type=int, choices=(0, 1, 3), default=0, help="0: detect from the data")
    m.add_argument("--augment", type=str2bool, default=True)
    m.add_argument("--hflip", type=str2bool, default=True)
    m.add_argument("--vflip", type=str2bool, default=False)
    m.add_argument("--tta", type=str2bool, default=False, help="average predictions over flips at evaluation")
    m.add_argument("--val-fraction", type=number(float, 0, low_inclusive=False, high=0.5), default=0.1,
                   help="held out of train (stratified, seeded) when there is no val channel")
    m.add_argument("--max-bad-fraction", type=number(float, 0, high=1), default=0.01,
                   help="unreadable images tolerated (skipped and counted) before the job fails")
    m.add_argument("--max-image-pixels", type=number(int, 1), default=64_000_000)
    m.add_argument("--cache-max-gb", type=number(float, 0), default=8.0,
                   help="decode the data set once into memory when it fits, else stream it from disk")
    s = p.add_argument_group("speed")
    s.add_argument("--amp", type=str2bool, default=True,
                   help="mixed precision: bf16 (fp16 + GradScaler on older GPUs); bf16 on CPUs that support it")
    s.add_argument("--compile", type=str2bool, default=False, help="torch.compile the model")
    s.add_argument("--channels-last", type=str2bool, default=True)
    s.add_argument("--num-workers", type=number(int, -1), default=-1,
                   help="data loader processes when streaming; -1: automatic")
    s.add_argument("--max-steps-per-epoch", type=number(int, 0), default=0, help="0: the whole epoch")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--dist-timeout", type=number(int, 10), default=600,
                   help="seconds a collective waits for a dead or stuck rank before the job fails")
    d = p.add_argument_group("paths (SageMaker sets these through SM_* variables)")
    d.add_argument("--model-dir", default=_env(environ, "SM_MODEL_DIR", "model"))
    d.add_argument("--train", default=_env(environ, "SM_CHANNEL_TRAIN", os.path.join("data", "train")))
    d.add_argument("--val", default=environ.get("SM_CHANNEL_VAL"))
    d.add_argument("--test", default=environ.get("SM_CHANNEL_TEST"))
    d.add_argument("--output-data-dir", default=_env(environ, "SM_OUTPUT_DATA_DIR", os.path.join("output", "data")))
    d.add_argument("--output-dir", default=_env(environ, "SM_OUTPUT_DIR", "output"))
    d.add_argument("--checkpoint-dir", default=None,
                   help=f"default: $SM_CHECKPOINT_DIR, else {SAGEMAKER_CHECKPOINT_DIR} when it exists")
    d.add_argument("--label-dict", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                        "label_dict.json"))
    return p


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
    if args.pretrained and args.model == "smallcnn":
        raise ConfigError("invalid hyperparameter: smallcnn has no pretrained weights; set pretrained=false "
                          f"or choose one of {sorted(set(model_def.MODELS) - {'smallcnn'})}")
    return args


def defaults():
    """``{flag: default}`` of every hyperparameter that is not a path (what the notebook and README list)."""
    parser = build_parser({})
    return {a.option_strings[0][2:]: a.default for a in parser._actions
            if a.option_strings and a.option_strings[0] != "-h" and a.dest not in PATHS}


def recorded(args):
    """The hyperparameters of a run as saved in model_config.json: everything but the paths."""
    return {k: v for k, v in vars(args).items() if k not in PATHS}
