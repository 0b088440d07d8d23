"""train.py through the real SageMaker training toolkit (scripts/local_train.py), as in the container."""
import json
import os
import re
import shutil

import pytest
import torch

import epoch_log
import model_def
import train
from conftest import FAST_HPS, make_dataset, read_failure, run_local_train

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

EPOCH_LINE = re.compile(r"^.*\bepoch=\d+ train_loss=.*$", re.MULTILINE)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("job")
    result = run_local_train(tiny_data, work, FAST_HPS + ["epochs=3"])
    assert result.returncode == 0, result.stdout[-3000:]
    return work, result


def test_success_file_and_toolkit_argv(trained):
    work, result = trained
    assert os.path.exists(work / "output" / "success")
    assert not os.path.exists(work / "output" / "failure")
    # the toolkit's own invocation line: sorted --key value pairs
    assert "train.py --batch-size 16 --ema 0 --epochs 3 --patience 0" in result.stdout
    assert "Reporting training SUCCESS" in result.stdout


def test_hyperparameters_json_is_written_as_the_sdk_does(trained):
    work, _ = trained
    hps = json.loads((work / "input" / "config" / "hyperparameters.json").read_text())
    assert hps["epochs"] == "3" and hps["batch-size"] == "16" and hps["sagemaker_program"] == '"train.py"'
    assert all(isinstance(v, str) for v in hps.values())
    channels = json.loads((work / "input" / "config" / "inputdataconfig.json").read_text())
    assert sorted(channels) == ["test", "train", "val"]


def test_model_files_rebuild_the_model(trained):
    work, _ = trained
    model_dir = work / "model"
    config = json.loads((model_dir / "model_config.json").read_text())
    assert config["architecture"] == "smallcnn" and config["num_classes"] == 2
    assert config["in_channels"] == 1 and config["image_size"] == 16
    assert len(config["mean"]) == 1 and len(config["std"]) == 1
    assert json.loads((model_dir / "label_dict.json").read_text()) == {"0": "normal", "1": "pneumonia"}
    state = torch.load(model_dir / "model.pth", weights_only=True)
    assert config["architecture_options"] == {"stem_stride": 1}
    model = model_def.create_model(config["architecture"], config["num_classes"], config["in_channels"],
                                   **config["architecture_options"])
    model.load_state_dict(state)  # strict: same keys and shapes


def test_metrics_json_content(trained):
    work, _ = trained
    m = json.loads((work / "output" / "data" / "metrics.json").read_text())
    assert len(m["history"]) == 3 and [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert 1 <= m["best_epoch"] <= 3
    for split in ("val", "test"):
        for key in ("accuracy", "auc", "sensitivity", "specificity", "confusion_matrix", "loss"):
            assert key in m[split], (split, key)
    assert m["test"]["n"] == 24 and sum(map(sum, m["test"]["confusion_matrix"])) == 24
    assert m["val"]["auc"] > 0.8  # the synthetic classes are easy: it must have learnt something
    preds = m["test_predictions"]  # per-sample probabilities, for ROC curves
    assert len(preds["labels"]) == 24 and len(preds["probabilities"]) == 24
    assert all(abs(sum(p) - 1) < 1e-4 for p in preds["probabilities"])
    assert sorted(set(preds["labels"])) == [0, 1]


def test_epoch_lines_match_the_notebook_metric_definitions(trained):
    _, result = trained
    lines = EPOCH_LINE.findall(result.stdout)
    assert len(lines) == 3
    for definition in epoch_log.metric_definitions():
        if definition["Name"].startswith("test_"):
            continue
        values = [re.search(definition["Regex"], line) for line in lines]
        assert all(values), definition
        for line, v in zip(lines, values):  # the captured number is the one after the key
            assert f"{definition['Name']}={v.group(1)}" in line
    test_line = next(line for line in result.stdout.splitlines() if "test_acc=" in line)
    m = re.search(next(d["Regex"] for d in epoch_log.metric_definitions() if d["Name"] == "test_auc"), test_line)
    assert m and 0 <= float(m.group(1)) <= 1


def test_inference_code_is_packaged_with_the_model(trained):
    work, _ = trained
    if not os.path.exists(os.path.join(os.path.dirname(model_def.__file__), "inference.py")):
        pytest.fail("code/inference.py is missing")
    assert sorted(os.listdir(work / "model" / "code")) == sorted(train.INFERENCE_FILES)


# ---------------------------------------------------------------- failures through the toolkit
def first_line(work):
    return read_failure(work).splitlines()[0]


def test_missing_train_channel(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(os.path.join(tiny_data, "val"), data / "val")
    result = run_local_train(data, tmp_path / "work", FAST_HPS)
    assert result.returncode != 0
    assert first_line(tmp_path / "work").startswith("no training data: the train channel")


def test_class_not_in_label_dict(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    shutil.copytree(data / "train" / "normal", data / "train" / "covid")
    result = run_local_train(data, tmp_path / "work", FAST_HPS)
    assert result.returncode != 0
    assert first_line(tmp_path / "work").startswith(
        "class folder 'covid' in train is not in code/label_dict.json (the default: the train channel has no "
        "label_dict.json) ['normal', 'pneumonia']")
    # the data's own classes, no names given: where they go (not "edit code/")
    assert 'put a label_dict.json at the root of the train channel (index -> class name, e.g. {"0": "covid", "1": ' \
           '"normal", "2": "pneumonia"})' in first_line(tmp_path / "work")


def test_invalid_hyperparameter(tmp_path, tiny_data):
    result = run_local_train(tiny_data, tmp_path / "work", ["lr=0"])
    assert result.returncode != 0
    assert first_line(tmp_path / "work") == "invalid hyperparameter: argument --lr: must be > 0, got '0'"
    assert "failure reason: invalid hyperparameter" in result.stdout


def test_rerun_clears_the_previous_failure(tmp_path, tiny_data):
    work = tmp_path / "work"
    assert run_local_train(tiny_data, work, ["lr=0"]).returncode != 0
    result = run_local_train(tiny_data, work, FAST_HPS + ["epochs=1"])
    assert result.returncode == 0, result.stdout[-2000:]
    assert not os.path.exists(work / "output" / "failure")


def test_mixed_formats_and_label_dict_override(tmp_path):
    data = make_dataset(tmp_path / "data", counts={"train": 12, "val": 4}, mixed=True)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"0": "normal", "1": "pneumonia"}))
    result = run_local_train(data, tmp_path / "work", FAST_HPS + ["epochs=1"], extra=["--label-dict", str(labels)])
    assert result.returncode == 0, result.stdout[-2000:]
    config = json.loads((tmp_path / "work" / "model" / "model_config.json").read_text())
    assert config["in_channels"] == 1  # RGB and RGBA files in the mix, but their pixels are grey: one channel
