"""benchmarks/sections/transfer.py on tiny settings (--smoke): the source model is trained, its weights go to the
target runs as a weights channel file, the three arms run as they say, and the report pairs them by seed."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # train.py processes


@pytest.fixture(scope="module")
def transfer_smoke(tmp_path_factory):
    build = tmp_path_factory.mktemp("bench-transfer")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--smoke", "--only", "transfer", "--threads",
           "1", "--build", str(build)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(build / "results.json") as fh:
        return json.load(fh), proc.stdout


def test_each_arm_starts_where_it_says_and_runs_its_plan(transfer_smoke):
    results, _ = transfer_smoke
    (pair,) = results["transfer"]["pairs"]
    assert (pair["source"], pair["target"]) == ("pneumonia-all", "pneumonia-300")
    assert pair["source_run"]["initialised_from"] == "random" and pair["source_run"]["in_channels"] == 3
    arms = pair["arms"]
    assert list(arms) == ["scratch", "one lr", "recipe"]
    (scratch,), (one_lr,), (recipe,) = (arms[a]["runs"] for a in arms)
    assert scratch["initialised_from"] == "random" and scratch["plan"]["recipe"] == "from scratch"
    for run in (one_lr, recipe):  # the source model's weights, given as a weights channel file; grey target data
        assert run["initialised_from"] == "weights channel" and run["in_channels"] == 1
        assert run["first_conv"].startswith("ImageNet's RGB kernels summed") and run["plan"]["recipe"] == "fine-tuning"
    assert one_lr["plan"]["backbone_lr_scale"] == 1.0 and recipe["plan"]["backbone_lr_scale"] == 0.1
    for run in (scratch, one_lr, recipe):
        assert run["seed"] == 1 and 0 <= run["val_auc"] <= 1 and run["steps"] >= 1 and run["wall_s"] > 0
    assert pair["recipe_minus_scratch"]["values"] == [pytest.approx(recipe["val_auc"] - scratch["val_auc"])]
    assert pair["recipe_minus_one_lr"]["values"] == [pytest.approx(recipe["val_auc"] - one_lr["val_auc"])]


def test_the_report_says_these_are_not_imagenet_weights(transfer_smoke):
    _, stdout = transfer_smoke
    assert "(not ImageNet weights)" in stdout and "recipe - scratch (paired)" in stdout
    header = next(line for line in stdout.splitlines() if line.startswith("source -> target"))
    for column in ("train", "val", "arm", "val AUC", "val acc", "val ECE", "steps", "wall s"):
        assert column in header
