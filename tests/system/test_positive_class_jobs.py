"""The positive class through the real toolkit (scripts/prepare_data.py, then scripts/local_train.py): the
hyperparameter overrides the rule, choices and whole numbers are taken as users, YAML files and tuners write them,
and what is really wrong is still one line. The rule and every figure of it: tests/unit/code/test_positive_class.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import recall_score

from conftest import SCRIPTS, make_image, read_failure, run_local_train
from data_factories import BREAST_NAMES as BREAST  # BreastMNIST's label dict: the finding sorts first

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast


@pytest.fixture(scope="module")
def breast_data(tmp_path_factory):
    """BreastMNIST-shaped channels made by scripts/prepare_data.py from an .npz and its label dict: 16 px images,
    malignant (index 0) with a bright square, so that a tiny model learns it."""
    tmp = tmp_path_factory.mktemp("breast")
    rng = np.random.default_rng(4)
    arrays = {}
    for split, n in (("train", 32), ("val", 12), ("test", 12)):
        labels = np.arange(n) % 2
        arrays[f"{split}_images"] = np.stack([np.asarray(make_image(1 - int(y), rng, size=16)) for y in labels])
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez(tmp / "breastmnist.npz", **arrays)
    (tmp / "names.json").write_text(json.dumps({"0": "malignant", "1": "normal, benign"}))
    done = subprocess.run([sys.executable, os.path.join(SCRIPTS, "prepare_data.py"), "--npz",
                           str(tmp / "breastmnist.npz"), "--label-dict", str(tmp / "names.json"), "--out",
                           str(tmp / "data")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "positive class: malignant (the other class of 'normal, benign'" in done.stdout
    return tmp / "data"


def test_positive_class_and_values_as_users_write_them_through_the_toolkit(breast_data, tmp_path):
    """The hyperparameter overrides the rule (in another case, as a user types it), and choices and whole numbers
    are taken as users, YAML files and tuners write them: the toolkit passes them on as SDK v2 sends them."""
    work = tmp_path / "work"
    hps = ["epochs=2.0", "batch-size=16.0", "ema=0", "patience=0", "model=SmallCNN", "optimizer=AdamW",
           "class-weighting=Balanced", "device=CPU", "in-channels=1.0", "positive-class=Normal, Benign"]
    result = run_local_train(breast_data, work, hps)
    assert result.returncode == 0, result.stdout[-3000:]
    assert ("train.py --batch-size 16.0 --class-weighting Balanced --device CPU --ema 0 --epochs 2.0 --in-channels "
            "1.0 --model SmallCNN --optimizer AdamW --patience 0 --positive-class Normal, Benign") in result.stdout
    config = json.loads((work / "model" / "model_config.json").read_text())
    got = config["hyperparameters"]
    assert (got["epochs"], got["batch_size"], got["in_channels"]) == (2, 16, 1)
    assert (got["model"], got["optimizer"], got["class_weighting"], got["device"]) == (
        "smallcnn", "adamw", "balanced", "cpu")
    m = json.loads((work / "output" / "data" / "metrics.json").read_text())
    assert len(m["history"]) == 2 and m["classes"] == BREAST  # the class order never changes
    assert (m["positive_class"], m["positive_class_from"]) == ("normal, benign",
                                                               "set by the positive-class hyperparameter")
    assert (config["positive_class"], config["positive_index"]) == ("normal, benign", 1)
    assert "positive class: normal, benign (set by the positive-class hyperparameter)" in result.stdout
    labels, prob = np.asarray(m["test_predictions"]["labels"]), np.asarray(m["test_predictions"]["probabilities"])
    assert m["test"]["sensitivity"] == pytest.approx(recall_score(labels, prob.argmax(1), pos_label=1))
    assert f"test_sensitivity={m['test']['sensitivity']:.4f}" in result.stdout


@pytest.mark.parametrize("hp, line", [
    ("positive-class=cancer", "invalid hyperparameter: positive-class 'cancer' is not one of the classes "
                              "['malignant', 'normal, benign']; give one of them (ignoring case), or auto (the classes "
                              "come from the train channel's label_dict.json ("),
    ("epochs=2.5", "invalid hyperparameter: argument --epochs: expected a whole number, got '2.5'"),
    ("model=VGG16", "invalid hyperparameter: argument --model: invalid choice: 'VGG16' (choose from "),
])
def test_what_is_really_wrong_is_still_one_line_through_the_toolkit(breast_data, tmp_path, hp, line):
    result = run_local_train(breast_data, tmp_path / "work", ["epochs=1", hp] if "epochs" not in hp else [hp])
    assert result.returncode != 0
    failure = read_failure(tmp_path / "work")
    assert failure.startswith(line) and len(failure.strip().splitlines()) == 1, failure
