"""scripts/prepare_data.py on a small MedMNIST-style .npz made here."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import SCRIPTS


def make_npz(path, splits=("train", "val")):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in splits:
        arrays[f"{split}_images"] = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([[0], [1], [1], [0], [1], [1]], dtype=np.uint8)
    np.savez(path, **arrays)
    return arrays


def run(*args):
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, "prepare_data.py"), *args],
                          capture_output=True, text=True, timeout=60)


def test_npz_becomes_class_folders_with_identical_pixels(tmp_path):
    arrays = make_npz(tmp_path / "d.npz")
    out = tmp_path / "out"
    result = run("--npz", str(tmp_path / "d.npz"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["label_dict.json", "train", "val"]
    assert json.loads((out / "label_dict.json").read_text()) == {"0": "normal", "1": "pneumonia"}
    assert sorted(os.listdir(out / "train" / "normal")) == ["0.png", "3.png"]
    assert json.loads((out / "val" / "label_dict.json").read_text()) == {"0": "normal", "1": "pneumonia"}
    assert len(os.listdir(out / "val" / "pneumonia")) == 4
    np.testing.assert_array_equal(np.asarray(Image.open(out / "train" / "pneumonia" / "1.png")),
                                  arrays["train_images"][1])


def test_custom_label_dict_names_the_folders(tmp_path):
    make_npz(tmp_path / "d.npz", splits=("train",))
    (tmp_path / "labels.json").write_text(json.dumps({"0": "benign", "1": "malignant tumour"}))
    out = tmp_path / "out"
    result = run("--npz", str(tmp_path / "d.npz"), "--out", str(out), "--label-dict", str(tmp_path / "labels.json"))
    assert result.returncode == 0, result.stderr
    # folders are the names made portable; the names stay names, in the label dict each channel carries
    assert sorted(os.listdir(out / "train")) == ["benign", "label_dict.json", "malignant_tumour"]
    for label_dict in (out / "label_dict.json", out / "train" / "label_dict.json"):
        assert json.loads(label_dict.read_text()) == {"0": "benign", "1": "malignant tumour"}


def test_not_an_npz_is_one_clear_line(tmp_path):
    (tmp_path / "bad.npz").write_text("hello")
    result = run("--npz", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("prepare_data: error: cannot read")
    assert len(result.stderr.strip().splitlines()) == 1


def test_images_in_two_splits_of_the_source_are_kept_in_the_later_split_only(tmp_path):
    """MedMNIST's PneumoniaMNIST has images with the same pixels in train and val; train.py refuses a file in two
    splits, so prepare_data writes each in the later split only (test is left as the source has it)."""
    import channels as code_channels
    import types

    arrays = make_npz(tmp_path / "d.npz", splits=("train", "val", "test"))
    arrays["train_images"][2] = arrays["val_images"][0]  # a copy in train and val
    arrays["train_images"][4] = arrays["test_images"][5]  # and one in train and test
    arrays["val_images"][3] = arrays["test_images"][1]  # and one in val and test
    np.savez(tmp_path / "d.npz", **arrays)
    out = tmp_path / "out"
    result = run("--npz", str(tmp_path / "d.npz"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert ("prepare_data: warning: 2 of the 6 train images have the same pixels as images of val and test: left "
            "out of train, so that no image is in two splits") in result.stdout
    assert "1 of the 6 val images have the same pixels as images of test: left out of val" in result.stdout
    assert sorted(os.listdir(out / "train" / "pneumonia")) == ["1.png", "5.png"]  # named by their source index
    assert sum(len(os.listdir(out / "test" / c)) for c in ("normal", "pneumonia")) == 6
    args = types.SimpleNamespace(train=str(out / "train"), val=str(out / "val"), test=str(out / "test"),
                                 label_dict=None, task="auto", max_bad_fraction=0.01)
    code_channels.read_channels(args)  # what train.py checks: no file in two splits
