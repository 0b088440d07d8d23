"""Class names travel with the data, through the real toolkit (scripts/local_train.py): prepare_data --label-dict,
then a job with or without the same file, names every figure, the model and the endpoint's answers by the real
names; a stray class folder fails naming the label dict used; class folders of its own train are the classes and
travel with the model. The rules themselves: tests/unit/code/test_class_names.py."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import layout
from conftest import SCRIPTS, make_image, read_failure, run_local_train
from data_factories import BREAST_NAMES as NAMES, prepare_with_names
from medimg import artifacts

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_with_names(tmp_path_factory.mktemp("names"))


@pytest.mark.parametrize("with_label_dict", [True, False])
def test_prepare_then_train_with_the_same_names_through_the_toolkit(prepared, tmp_path, with_label_dict):
    """The issue's example: prepare_data --label-dict F, then local_train --label-dict F (the same file twice, as a
    user would); and the same without --label-dict, when the train channel's label_dict.json is used."""
    tmp, names = prepared
    work = tmp_path / "work"
    extra = ["--label-dict", str(names)] if with_label_dict else []
    result = run_local_train(tmp / "data", work, ["epochs=2", "batch-size=16", "patience=0"], extra=extra)
    assert result.returncode == 0, result.stdout[-3000:]
    assert sorted(os.listdir(tmp / "data" / "train")) == ["label_dict.json", "malignant", "normal_benign"]
    metrics = json.loads((work / "output" / "data" / "metrics.json").read_text())
    config = json.loads((work / "model" / "model_config.json").read_text())
    assert metrics["classes"] == config["classes"] == NAMES
    assert json.loads((work / "model" / "label_dict.json").read_text()) == layout.label_dict_json(NAMES)
    source = "label-dict hyperparameter" if with_label_dict else "the train channel's label_dict.json"
    assert source in metrics["classes_from"] and f"classes from {metrics['classes_from']}" in result.stdout
    assert "classes ['malignant', 'normal, benign']" in result.stdout
    # issue 18: the finding (malignant, index 0) is the positive class with no hyperparameter set, and every place
    # that reports a figure of it says so
    why = "the other class of 'normal, benign', a name meaning no finding"
    assert f"positive class: malignant ({why}; set positive-class to choose)" in result.stdout
    assert (metrics["positive_class"], metrics["positive_class_from"]) == ("malignant", why)
    assert metrics["test"]["operating_point"]["positive_class"] == "malignant" and metrics["decisions"]["positive"] == 0
    assert (config["positive_class"], config["positive_index"], config["positive_class_from"]) == ("malignant", 0, why)
    assert "operating point (" in result.stdout and "p(malignant) >= " in result.stdout
    saved = metrics["test_predictions"]
    labels, prob = np.asarray(saved["labels"]), np.asarray(saved["probabilities"])
    answered = prob[:, 0] >= metrics["decisions"]["threshold"]
    assert metrics["test"]["operating_point"]["sensitivity"] == pytest.approx(answered[labels == 0].mean())
    shown = subprocess.run([sys.executable, os.path.join(SCRIPTS, "show_metrics.py"),
                            str(work / "output" / "data" / "metrics.json")], capture_output=True, text=True, timeout=60)
    assert f"positive class: malignant ({why})" in shown.stdout and "p(malignant) >= " in shown.stdout
    with artifacts.LocalModel(str(work / "model")) as model:  # the endpoint's answer names the real class
        image = next((tmp / "data" / "test" / "normal_benign").glob("*.png")).read_bytes()
        answer = model.invoke(image, "image/png")["predictions"][0]
    assert set(answer["probabilities"]) == set(NAMES) and answer["label"] in NAMES
    assert answer["decision"]["positive_class"] == "malignant" and answer["decision"]["positive_class_from"] == why
    assert answer["label"] == ("malignant" if answer["probabilities"]["malignant"] >= config["threshold"]
                               else "normal, benign")


def test_a_stray_class_folder_fails_naming_the_label_dict_used(prepared, tmp_path):
    tmp, _ = prepared
    dataset = tmp_path / "data"
    shutil.copytree(tmp / "data", dataset)
    shutil.copytree(dataset / "train" / "malignant", dataset / "train" / "benign")
    result = run_local_train(dataset, tmp_path / "work", ["epochs=1"])
    assert result.returncode != 0
    line = read_failure(tmp_path / "work").splitlines()[0]
    assert line.startswith(f"class folder 'benign' in train is not in the train channel's label_dict.json "
                           f"({tmp_path / 'work' / 'input' / 'data' / 'train' / 'label_dict.json'})"), line


def test_class_folders_of_its_own_train_serve_and_travel_with_the_model(tmp_path):
    """torchvision's ImageFolder layout with no label_dict.json anywhere, through the real toolkit: the folders are
    the classes (sorted), saved with the model, and what the endpoint answers."""
    rng = np.random.default_rng(3)
    for split, n in (("train", 24), ("test", 8)):
        for label, name in enumerate(["benign", "malignant"]):
            os.makedirs(tmp_path / "data" / split / name)
            for i in range(n):
                make_image(label, rng, 16).save(tmp_path / "data" / split / name / f"{i}.png")
    work = tmp_path / "work"
    result = run_local_train(tmp_path / "data", work, ["epochs=2", "batch-size=16", "patience=0"])
    assert result.returncode == 0, result.stdout[-3000:]
    metrics = json.loads((work / "output" / "data" / "metrics.json").read_text())
    assert metrics["classes"] == ["benign", "malignant"]
    assert "the class folders of the train channel" in metrics["classes_from"]
    assert "positive class: malignant (the other class of 'benign', a name meaning no finding" in result.stdout
    assert metrics["test"]["operating_point"]["positive_class"] == metrics["positive_class"] == "malignant"
    assert json.loads((work / "model" / "label_dict.json").read_text()) == {"0": "benign", "1": "malignant"}
    with artifacts.LocalModel(str(work / "model")) as model:
        image = (tmp_path / "data" / "test" / "malignant" / "0.png").read_bytes()
        answer = model.invoke(image, "image/png")["predictions"][0]
    assert set(answer["probabilities"]) == {"benign", "malignant"}
