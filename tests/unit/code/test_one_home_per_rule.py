"""Rules that two places of code/ must agree on, each kept in one place (issue 19, part 2): which figures the log
lines carry and under which keys (epoch_log.py, for the epoch line, the run's history and the test line), the
ordinal/multi-label check (channels.check_settings_fit_the_task, where the task is known), and whether evaluation
and the endpoint average with the horizontal flip (hyperparameters.flip_tta)."""
import argparse
import ast
import os

import numpy as np
import pytest

import epoch_log
import evaluation
import hyperparameters
import metrics
from channels import ClassNames, check_settings_fit_the_task
from conftest import CODE
from errors import ConfigError

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6

Y2, P2 = np.array([0, 1, 0, 1, 1, 0]), np.array([[.8, .2], [.3, .7], [.6, .4], [.2, .8], [.45, .55], [.7, .3]])
Y3 = np.array([0, 1, 2, 0, 1, 2, 2])
P3 = np.array([[.6, .3, .1], [.2, .5, .3], [.1, .3, .6], [.5, .4, .1], [.3, .3, .4], [.1, .2, .7], [.2, .5, .3]])
YM, PM = np.array([[0, 1], [1, 0], [1, 1], [0, 0]]), np.array([[.2, .7], [.8, .3], [.6, .9], [.1, .2]])
FIGURES = {  # what metrics.evaluate_predictions gives each kind of task (the val figures of an epoch)
    "binary": metrics.evaluate_predictions(Y2, P2, task="multiclass", classes=["a", "b"]),
    "ordinal": metrics.evaluate_predictions(Y3, P3, task="multiclass", classes=["0", "1", "2"], ordinal=True),
    "three classes": metrics.evaluate_predictions(Y3, P3, task="multiclass", classes=["0", "1", "2"]),
    "multilabel": metrics.evaluate_predictions(YM, PM, task="multilabel", classes=["e", "n"]),
}


# ---------------------------------------------------------------- the lines' keys (epoch_log.py)
@pytest.mark.parametrize("kind", FIGURES)
def test_an_epoch_line_carries_the_val_figures_under_their_keys_in_the_lines_order(kind):
    val = FIGURES[kind]
    values = epoch_log.epoch_values(3, train_loss=0.5, val=val, lr=1e-3, images_per_sec=100.0)
    ordinal = kind == "ordinal"
    assert list(values) == list(epoch_log.EPOCH_KEYS) + (list(epoch_log.ORDINAL_KEYS) if ordinal else [])
    assert (values["val_loss"], values["val_auc"], values["val_acc"]) == (val["loss"], val["auc"], val["accuracy"])
    if ordinal:
        assert (values["val_kappa"], values["val_mae"]) == (val["kappa"], val["mae"])
    assert epoch_log.parse_epoch(epoch_log.epoch_line(values))["val_acc"] == round(val["accuracy"], 4)


@pytest.mark.parametrize("kind", FIGURES)
def test_the_test_line_carries_the_same_figures_under_test_keys(kind):
    test = FIGURES[kind]
    values = epoch_log.keyed("test", test)
    keys = epoch_log.TEST_KEYS + (epoch_log.TEST_ORDINAL_KEYS if kind == "ordinal" else ())
    assert list(values) == list(keys)
    parsed = epoch_log.parse(epoch_log.test_line(values))
    assert (parsed["test_acc"], parsed["test_sensitivity"]) == (round(test["accuracy"], 4),
                                                                 round(test["sensitivity"], 4))


def test_every_figure_a_line_carries_has_one_name_in_metrics_json():
    """Every split key of every line (epoch, test, summary) is a split prefix and a LINE_NAMES short name."""
    shorts = {f"{split}_{short}": name for split in ("val", "test") for name, short in epoch_log.LINE_NAMES.items()}
    own = {"epoch", "train_loss", "lr", "images_per_sec"}  # the epoch's own, not a split's figures
    keys = set(epoch_log.EPOCH_KEYS + epoch_log.ORDINAL_KEYS + epoch_log.TEST_KEYS + epoch_log.TEST_ORDINAL_KEYS
               + epoch_log.SUMMARY_KEYS) - own
    assert keys <= set(shorts), keys - set(shorts)
    assert epoch_log.keyed("val", {"accuracy": 0.9, "ece": 0.1, "n": 12}) == {"val_acc": 0.9}


# ---------------------------------------------------------------- ordinal grades need one label per image
def settings(task="auto", ordinal=True):
    return argparse.Namespace(task=task, ordinal=ordinal, target_sensitivity=0.0, positive_class="auto")


@pytest.mark.parametrize("task, fragment", [
    ("auto", "but this run is multilabel (task=auto follows the train channel's labels.csv); leave ordinal out or "
             "give a label column"),
    ("multilabel", "but this run is multilabel (task=multilabel); leave ordinal out or give a label column and "
                   "task=auto"),
])
def test_ordinal_with_findings_is_refused_where_the_task_is_known(task, fragment):
    with pytest.raises(ConfigError) as err:
        check_settings_fit_the_task(settings(task), "multilabel", ClassNames(["e", "n"], "a test"))
    assert str(err.value) == f"invalid hyperparameter: ordinal=true needs one grade per image, {fragment}"
    check_settings_fit_the_task(settings(task, ordinal=False), "multilabel", ClassNames(["e", "n"], "a test"))


def test_the_parser_leaves_the_task_check_to_the_channels():
    """One home: parse_args does not repeat it (the channels, read before any image is decoded, know the task)."""
    args = hyperparameters.parse_args(["--ordinal", "true", "--task", "multilabel"], environ={})
    assert args.ordinal and args.task == "multilabel"


# ---------------------------------------------------------------- flip TTA
@pytest.mark.parametrize("tta, hflip, flips", [("true", "true", True), ("false", "true", False),
                                               ("false", "false", False)])
def test_evaluation_and_the_model_config_flip_by_one_rule(tta, hflip, flips):
    args = hyperparameters.parse_args(["--tta", tta, "--hflip", hflip], environ={})
    assert hyperparameters.flip_tta(args) is flips
    data = argparse.Namespace(mean=[0.5], std=[0.25], classes=["a", "b"])
    plan = argparse.Namespace(batch_size=16)
    assert evaluation.SplitPredictor(args, data, plan, device=None, dist=None).tta is flips


def test_tta_without_flips_in_training_is_refused():
    with pytest.raises(ConfigError) as err:
        hyperparameters.parse_args(["--tta", "true", "--hflip", "false"], environ={})
    assert str(err.value) == ("invalid hyperparameter: tta=true averages each image with its horizontal flip, but "
                              "hflip=false trains without flips (as when the side matters); set tta=false, or "
                              "hflip=true")


def test_only_flip_tta_reads_the_tta_hyperparameter():
    """train.py's model config and evaluation's predictions both ask hyperparameters.flip_tta; nothing else reads
    ``args.tta`` but the parser's refusal above (the endpoint reads model_config.json's ``tta``)."""
    readers = set()
    for name in sorted(os.listdir(CODE)):
        if name.endswith(".py"):
            with open(os.path.join(CODE, name), encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
                if any(isinstance(n, ast.Attribute) and n.attr == "tta" and ast.unparse(n.value) == "args"
                       for n in ast.walk(function)):
                    readers.add(f"{name}:{function.name}")
    assert readers == {"hyperparameters.py:flip_tta", "hyperparameters.py:parse_args"}, readers
