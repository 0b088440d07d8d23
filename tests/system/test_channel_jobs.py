"""Every channel used or refused, through the real toolkit (scripts/local_train.py): a validation channel selects
the epoch, an unknown channel fails the job with one line and no traceback, a train channel that is the data
set's root says so. The rules themselves: tests/unit/code/test_channel_names.py."""
import json
import os
import shutil

import pytest

from conftest import make_dataset, read_failure, run_local_train

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast


def test_a_validation_channel_is_used_for_selection_not_ignored(tmp_path):
    """fit({"train": ..., "validation": ..., "test": ...}), the channel name many AWS examples use."""
    data = make_dataset(tmp_path / "d", counts={"train": 20, "val": 7, "test": 5})
    os.rename(os.path.join(data, "val"), os.path.join(data, "validation"))
    work = tmp_path / "work"
    result = run_local_train(data, work, ["epochs=1", "batch-size=16"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert "held out" not in result.stdout and "data: train=40 val=14 test=10" in result.stdout
    assert sorted(json.loads((work / "input" / "config" / "inputdataconfig.json").read_text())) == [
        "test", "train", "validation"]
    metrics = json.loads((work / "output" / "data" / "metrics.json").read_text())
    assert metrics["val"]["n"] == 14


def test_an_unknown_channel_fails_the_job_with_one_line(tmp_path):
    data = make_dataset(tmp_path / "d", counts={"train": 6, "val": 2})
    shutil.copytree(os.path.join(data, "val"), os.path.join(data, "holdout"))
    result = run_local_train(data, tmp_path / "work", ["epochs=1"])
    assert result.returncode != 0
    assert read_failure(tmp_path / "work").splitlines()[0].startswith(
        "the channel 'holdout' is not one train.py reads; it reads train (train or training)")
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out  # the user's error is one line, not a stack
    assert "failure reason: the channel 'holdout'" in result.stdout and "  log:" in result.stdout
    assert "  model:" not in result.stdout and "  metrics:" not in result.stdout  # nothing was saved: not named


def test_a_train_channel_that_is_the_data_sets_root_says_so(tmp_path):
    """The whole data folder uploaded as the train channel: train/, val/ and label_dict.json inside it."""
    data = make_dataset(tmp_path / "d" / "train", counts={"train": 6, "val": 2})
    result = run_local_train(tmp_path / "d", tmp_path / "work", ["epochs=1"])
    assert result.returncode != 0
    line = read_failure(tmp_path / "work").splitlines()[0]
    assert line.startswith(f"the train channel {tmp_path / 'work' / 'input' / 'data' / 'train'} holds folders named "
                           "['train', 'val']: it looks like the data set's root, not its train split; point each "
                           "channel at its own prefix"), line
    assert "label_dict" not in line.split(";")[1]  # not the old advice to add 'train' to label_dict.json
    assert os.path.isdir(data)
