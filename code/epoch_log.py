"""The lines train.py logs for people and for regexes: the one home of their format, their parser, and the
CloudWatch metric definitions (``metric_definitions``) that SageMaker applies to them.

    epoch=3 train_loss=0.2311 val_loss=0.1950 val_auc=0.9871 val_acc=0.9420 lr=0.00091 images_per_sec=812.4
    best epoch 3: val_auc=0.9871 val_acc=0.9420; model saved to /opt/ml/model, metrics to ...
    test_loss=0.2101 test_acc=0.9310 test_auc=0.9790 test_sensitivity=0.9500 test_specificity=0.8900

SageMaker keeps the last value a job emits for each metric, and the tuner uses it as the objective: the summary
line repeats the best epoch's ``val_auc``/``val_acc`` (and ``val_kappa``/``val_mae`` for ordinal grades), so a job
is judged by the model it keeps. A value that is not a number (an AUC that is undefined) is written ``nan``,
which the regexes skip.

This module imports only the standard library and nothing else of ``code/``, so that the client package
(``medimg``) loads this very file instead of keeping a copy (tests/test_architecture.py checks it).
"""
import math
import re

NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
EPOCH_KEYS = ("epoch", "train_loss", "val_loss", "val_auc", "val_acc", "lr", "images_per_sec")
ORDINAL_KEYS = ("val_kappa", "val_mae")
TEST_KEYS = ("test_loss", "test_acc", "test_auc", "test_sensitivity", "test_specificity")
TEST_ORDINAL_KEYS = ("test_kappa", "test_mae")
SUMMARY_KEYS = ("val_auc", "val_acc")
# a split's figures by their names in metrics.json (metrics.evaluate_predictions) -> their names in the lines, after
# the split's prefix: accuracy -> val_acc, test_acc
LINE_NAMES = {"loss": "loss", "accuracy": "acc", "auc": "auc", "sensitivity": "sensitivity",
              "specificity": "specificity", "kappa": "kappa", "mae": "mae"}
FORMATS = {"epoch": "{:d}", "lr": "{:.6g}", "images_per_sec": "{:.1f}"}  # everything else: 4 decimals
_PAIR = re.compile(r"\b([a-z_]+)=(\S+)")


def _value(key, value):
    if key != "epoch" and (value is None or not math.isfinite(value)):
        return "nan"
    return FORMATS.get(key, "{:.4f}").format(int(value) if key == "epoch" else float(value))


def _pairs(keys, values):
    return " ".join(f"{k}={_value(k, values[k])}" for k in keys if k in values)


def keyed(split, figures):
    """A split's ``figures`` (metrics.json's names) under the lines' keys: ``{"accuracy": a}`` -> ``{"val_acc": a}``
    for split "val"; figures the lines do not carry are left out."""
    return {f"{split}_{short}": figures[name] for name, short in LINE_NAMES.items() if name in figures}


def epoch_values(epoch, *, train_loss, val, lr, images_per_sec):
    """What an epoch line shows and the run's history keeps, in the line's order (``val``: the val figures)."""
    values = dict(keyed("val", val), epoch=epoch, train_loss=train_loss, lr=lr, images_per_sec=images_per_sec)
    return {k: values[k] for k in EPOCH_KEYS + ORDINAL_KEYS if k in values}


def epoch_line(values):
    """One epoch: ``values`` holds EPOCH_KEYS (and ORDINAL_KEYS for ordinal grades)."""
    missing = [k for k in EPOCH_KEYS if k not in values]
    if missing:
        raise KeyError(f"epoch line without {missing}")
    return _pairs(EPOCH_KEYS + ORDINAL_KEYS, values)


def summary_line(best_epoch, values, model_dir, metrics_path):
    """The last line of a successful run: the kept epoch's validation figures, and where things are."""
    return (f"best epoch {best_epoch}: {_pairs(SUMMARY_KEYS + ORDINAL_KEYS, values)}; model saved to {model_dir}, "
            f"metrics to {metrics_path}")


def test_line(values):
    """The test split's figures (``values`` keyed by TEST_KEYS, plus TEST_ORDINAL_KEYS if ordinal: ``keyed``)."""
    return _pairs(TEST_KEYS + TEST_ORDINAL_KEYS, values)


def parse(line):
    """Every ``key=number`` pair of a line as floats (``nan`` for non-numbers); {} when there are none."""
    out = {}
    for key, text in _PAIR.findall(line):
        try:
            out[key] = float(text.rstrip(";,"))
        except ValueError:
            continue
    return out


def parse_epoch(line):
    """The pairs of an epoch line, or None when the line is not one."""
    values = parse(line)
    return values if all(k in values for k in EPOCH_KEYS) and "epoch=" in line else None


HEADLINE_PREFIXES = ("plan: ", "data: ", "best epoch ", "operating point ", "resumed from ", "early stopping",
                     "max-train-minutes=", "test_loss=", "no val channel")


def is_headline(message):
    """Whether a log message (after its time and level) is one a reader of a job's log needs: the data and the
    plan, every epoch line, the kept epoch, the test line, the operating point, a resume or an early stop."""
    return message.startswith(HEADLINE_PREFIXES) or parse_epoch(message) is not None


def metric_definitions(*, test=True, ordinal=False):
    """SageMaker ``MetricDefinitions`` (``[{"Name", "Regex"}]``) for the keys a run logs: the epoch keys, the
    ordinal ones when ``ordinal``, the test ones when the job has a test channel (a definition that never
    matches makes CloudWatch and the notebook warn about a missing metric)."""
    keys = list(EPOCH_KEYS) + (list(ORDINAL_KEYS) if ordinal else [])
    if test:
        keys += ["test_auc", "test_acc"] + (list(TEST_ORDINAL_KEYS) if ordinal else [])
    return [{"Name": key, "Regex": rf"\b{key}={NUMBER}"} for key in keys]
