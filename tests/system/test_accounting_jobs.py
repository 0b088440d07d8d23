"""Every image accounted for, through real jobs (scripts/local_train.py and the toolkit, or train.main): a patient
manifest job resamples patients and names its skipped images, a class spelt three ways trains as two classes and
says so, an image in two class-folder splits fails the job naming both, a streamed single-class test split says
why its AUC is null. The rules themselves: tests/unit/code/test_accounting.py."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import accounting
import train
from conftest import FAST_HPS, SCRIPTS, make_dataset, read_failure, run_local_train
from data_factories import manifest_channel

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast


@pytest.fixture(scope="module")
def patient_job(tmp_path_factory):
    """A job through the toolkit: train a labels.csv spelling 'pneumonia' three ways, val class folders, test a
    labels.csv of 8 patients x 3 images with a truncated image, an empty one and a row without its file."""
    root = tmp_path_factory.mktemp("patients")
    data_dir = root / "data"
    rng = np.random.default_rng(7)  # not make_dataset's seed: no image repeats in another split
    train_labels = ["normal" if i % 2 == 0 else "Pneumonia" if i % 8 == 1 else "pneumonia" for i in range(32)]
    manifest_channel(data_dir / "train", train_labels, [f"t{i // 2}" for i in range(32)], rng)
    make_dataset(root / "folders", counts={"val": 6})
    shutil.copytree(root / "folders" / "val", data_dir / "val")
    labels = ["normal", "PNEUMONIA"] * 12 + ["normal"]
    names = manifest_channel(data_dir / "test", labels, [f"p{i // 3}" for i in range(24)] + ["p0"], rng)
    blob = open(data_dir / "test" / names[4], "rb").read()
    open(data_dir / "test" / names[4], "wb").write(blob[: len(blob) // 3])
    open(data_dir / "test" / names[7], "wb").close()
    os.unlink(data_dir / "test" / names[24])
    result = run_local_train(data_dir, root / "work", FAST_HPS + ["max-bad-fraction=0.2"])
    assert result.returncode == 0, result.stdout[-3000:]
    with open(root / "work" / "output" / "data" / "metrics.json") as fh:
        return root / "work", result.stdout, json.load(fh), names


def test_a_patient_manifest_job_resamples_patients_and_names_its_skipped_images(patient_job):
    work, log, metrics, names = patient_job
    test = metrics["test"]
    assert test["n"] == 22 and test["ci95_unit"] == "patient" and test["n_groups"] == 8
    assert "test 95% intervals: 1000 bootstrap resamples of 8 patients (each patient's images together)" in log
    assert metrics["val"].get("ci95_unit") is None  # val has no intervals; its class folders name no patients
    assert metrics["skipped"]["test"] == {
        "count": 3, "images": sorted([names[4], names[7], names[24]]),
        "reasons": {"cannot decode": 2, "listed in labels.csv but not in the channel": 1}}
    assert metrics["skipped"]["train"]["count"] == 0 and metrics["skipped"]["val"]["count"] == 0
    assert names[4] not in metrics["test_predictions"]["images"] and len(metrics["test_predictions"]["images"]) == 22
    assert not os.path.exists(work / "output" / "data" / accounting.SKIPPED_FILE)  # a short list stays inline
    shown = subprocess.run([sys.executable, os.path.join(SCRIPTS, "show_metrics.py"),
                            str(work / "output" / "data" / "metrics.json")], capture_output=True, text=True)
    assert (f"skipped from test: 3 image(s) (cannot decode: 2, listed in labels.csv but not in the channel: 1): "
            f"{', '.join(sorted([names[4], names[7], names[24]]))}") in shown.stdout
    assert "bootstrap resampling 8 patients" in shown.stdout


def test_a_class_spelt_three_ways_trains_two_classes_and_says_so(patient_job):
    work, log, metrics, _ = patient_job
    assert metrics["classes"] == ["normal", "pneumonia"]
    assert json.loads((work / "model" / "label_dict.json").read_text()) == {"0": "normal", "1": "pneumonia"}
    assert re.search(r"the train channel's labels.csv \(\S+\) spells class 'pneumonia' also as 'Pneumonia' "
                     r"\(4 rows\): the same class", log)
    assert "the test channel's labels.csv" in log and "'pneumonia' also as 'PNEUMONIA' (12 rows)" in log
    assert sorted(set(metrics["test_predictions"]["labels"])) == [0, 1]


def test_a_class_folder_image_in_train_and_test_fails_the_job_naming_both(tmp_path):
    data_dir = make_dataset(tmp_path / "data", counts={"train": 6, "test": 3})
    shutil.copyfile(os.path.join(data_dir, "train", "pneumonia", "4.png"),
                    os.path.join(data_dir, "test", "normal", "leak.png"))
    result = run_local_train(data_dir, tmp_path / "work", FAST_HPS)
    assert result.returncode != 0
    line = read_failure(tmp_path / "work").splitlines()[0]
    assert re.fullmatch(r"the same image is in train \(\S+/train/pneumonia/4\.png\) and in test "
                        r"\(\S+/test/normal/leak\.png\); an image may be in one split only: remove one of them",
                        line), line
    assert not os.path.exists(tmp_path / "work" / "model" / "model.pth")


def test_a_streamed_single_class_test_split_says_why_and_names_what_it_skipped(tmp_path, capsys):
    """Streamed splits learn their unreadable images while reading; a test split of one class says why its AUC is
    null, at start-up and in metrics.json."""
    data_dir = make_dataset(tmp_path / "data", counts={"train": 12, "val": 4, "test": 4})
    shutil.rmtree(os.path.join(data_dir, "test", "pneumonia"))
    open(os.path.join(data_dir, "test", "normal", "2.png"), "wb").close()
    open(os.path.join(data_dir, "train", "pneumonia", "5.png"), "wb").close()
    job = tmp_path / "job"
    argv = ["--train", os.path.join(data_dir, "train"), "--val", os.path.join(data_dir, "val"), "--test",
            os.path.join(data_dir, "test"), "--model-dir", str(job / "model"), "--output-data-dir",
            str(job / "data"), "--output-dir", str(job / "output"), "--epochs", "2", "--batch-size", "8",
            "--ema", "0", "--num-workers", "0", "--cache-max-gb", "0", "--max-bad-fraction", "0.3"]
    assert train.main(argv) == 0
    log = capsys.readouterr().out
    metrics = json.loads((job / "data" / "metrics.json").read_text())
    assert "streamed from disk" in log
    assert "the test split (4 images) lacks images of the class(es) ['pneumonia']: the test AUC is undefined" in log
    assert metrics["test"]["auc"] is None and metrics["test"]["undefined"] == {
        "auc": "the test split holds only images of 'normal': an AUC needs images of two classes",
        "sensitivity": "the test split holds no images of 'pneumonia'"}
    assert "undefined" not in metrics["val"]
    assert metrics["skipped"]["test"]["images"] == ["normal/2.png"]
    assert metrics["skipped"]["train"] == {"count": 1, "images": ["pneumonia/5.png"], "reasons": {"cannot decode": 1}}
    assert metrics["test"]["ci95_unit"] == "image" and metrics["test"]["n"] == 3
