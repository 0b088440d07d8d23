"""Medical data as hospitals and challenges ship it: labels.csv manifests (one class, or several findings per image),
patient ids and patient-grouped hold-outs, ordered grades."""
import json
import os
import re
import shutil
import types

import numpy as np
import pytest

import channels
import data
import layout
import metrics
from conftest import FINDINGS, make_dataset, make_multilabel_dataset
from data_factories import single_label_manifest
from errors import ConfigError, DataError
from medimg import dicom_labels, prepare_data
from medimg.prepare_data import PrepareError


def args_for(root, **kw):
    base = {"train": os.path.join(root, "train"), "val": None, "test": None, "label_dict": None, "task": "auto",
            "max_bad_fraction": 0.01}
    if os.path.isdir(os.path.join(root, "val")):
        base["val"] = os.path.join(root, "val")
    base.update(kw)
    return types.SimpleNamespace(**base)


# ---------------------------------------------------------------- reading manifests
def test_a_single_label_manifest_lists_its_images_anywhere_in_the_channel(tmp_path):
    root = single_label_manifest(tmp_path)
    classes, task, listed = channels.read_channels(args_for(root))
    assert task == "multiclass" and list(classes) == ["benign", "malignant"]
    assert "labels.csv" in classes.source
    assert listed["train"].targets == [0, 1] * 4 and listed["train"].groups[:3] == ["p0", "p0", "p1"]
    assert listed["train"].names[:2] == ["0.png", "scans/a/1.png"]


def test_a_multi_label_manifest_gives_finding_columns_in_label_dict_order(tmp_path):
    root = make_multilabel_dataset(tmp_path, counts={"train": 9, "val": 3})
    classes, task, listed = channels.read_channels(args_for(root))
    assert task == "multilabel" and list(classes) == FINDINGS
    reordered = tmp_path / "findings.json"
    reordered.write_text(json.dumps(layout.label_dict_json(FINDINGS[::-1])))
    classes2, _, listed2 = channels.read_channels(args_for(root, label_dict=str(reordered)))
    assert list(classes2) == FINDINGS[::-1]
    assert listed2["train"].targets == [t[::-1] for t in listed["train"].targets]


MANIFEST_ERRORS = {
    "unknown class": ("image,label\n0.png,benign\n1.png,cancer\n", "line 3: class 'cancer' is not in"),
    "not 0/1": ("image,a,b\n0.png,1,0\n1.png,0,-1\n", "line 3: b='-1' for '1.png'; finding values must be 0 or 1"),
    "empty value": ("image,a,b\n0.png,1,0\n1.png,,1\n", "line 3: a='' for '1.png'"),
    "duplicate row": ("image,label\n0.png,benign\n1.png,malignant\n0.png,benign\n", "lines 2 and 4 both list '0.png'"),
    "climbing path": ("image,label\n../0.png,benign\n1.png,malignant\n", "line 2: image '../0.png' must be a path"),
    "absolute path": ("image,label\n/etc/0.png,benign\n1.png,malignant\n", "line 2: image '/etc/0.png'"),
    "windows path": ("image,label\nscans\\0.png,benign\n1.png,malignant\n", "line 2: image 'scans\\\\0.png'"),
    "drive letter": ("image,label\nC:/0.png,benign\n1.png,malignant\n", "line 2: image 'C:/0.png' must be a path"),
    "no image column": ("file,label\n0.png,benign\n", "must start with a header row whose first column is 'image'"),
    "label beside findings": ("image,label,a\n0.png,x,1\n", "has a 'label' column beside other columns"),
    "unquoted comma": ("image,label\n0.png,normal, benign\n", "line 2 has 3 fields for 2 columns; quote a value"),
    "no rows": ("image,label\n", "lists no images"),
}


@pytest.mark.parametrize("name, ok", [
    ("0.png", True), ("scans/a/0.png", True), ("ñandú α.png", True), ("a..b.png", True),
    ("", False), ("/etc/0.png", False), ("../0.png", False), ("scans/../../0.png", False),
    ("scans\\0.png", False), ("C:/0.png", False), ("C:0.png", False),
])
def test_one_rule_for_a_path_inside_a_channel(name, ok):
    assert layout.is_relative_path(name) is ok


@pytest.mark.parametrize("case", sorted(MANIFEST_ERRORS))
def test_manifest_errors_are_one_clear_line(tmp_path, case):
    text, fragment = MANIFEST_ERRORS[case]
    root = single_label_manifest(tmp_path)
    (tmp_path / "train" / "labels.csv").write_text(text)
    (tmp_path / "label_dict.json").write_text(json.dumps({"0": "benign", "1": "malignant"}))
    with pytest.raises(DataError) as err:
        channels.read_channels(args_for(root, label_dict=str(tmp_path / "label_dict.json")))
    message = str(err.value)
    assert fragment in message and "\n" not in message, message
    assert message.startswith(str(tmp_path / "train" / "labels.csv")) or "class" in fragment, message


# one labels-CSV reader: the same malformed row in a channel's labels.csv (train.py) and in prepare_data --dicom's
# CSV (the same with ``file`` for ``image``) gets the same line; the DICOM one names no path (a PACS path may hold
# a patient's name), which is the only difference
SAME_ROW_MISTAKES = {
    "unquoted comma": ("image,label\n0.png,normal, benign\n", None),
    "label beside findings": ("image,label,a\n0.png,x,1\n", None),
    "repeated columns": ("image,a,a\n0.png,1,0\n", None),
    "no label column": ("image\n0.png\n", None),
    "not 0/1": ("image,a,b\n0.png,1,0\n1.png,0,2\n", "1.png"),
    "empty value": ("image,a,b\n0.png,1,0\n1.png,,1\n", "1.png"),
    "no label": ("image,label\n0.png,x\n\n1.png,\n", "1.png"),  # after a blank line: line 4 still
    "climbing path": ("image,label\n../0.png,x\n", "../0.png"),
    "absolute path": ("image,label\n/etc/0.png,x\n", "/etc/0.png"),
    "windows path": ("image,label\nscans\\0.png,x\n", "scans\\0.png"),
    "drive letter": ("image,label\nC:/0.png,x\n", "C:/0.png"),
    "listed twice": ("image,label\n0.png,x\n1.png,y\n0.png,y\n", "0.png"),
    "no rows": ("image,label\n", None),
}


def without_the_path(message, image):
    """A labels.csv message as the DICOM CSV's reader words it: the row's path left out, files for images."""
    if image is not None:
        for named, hidden in ((f"image {image!r}", "the file"), (f" for {image!r}", ""), (f": {image!r} has", " has"),
                              (f"both list {image!r}", "both list the same file")):
            message = message.replace(named, hidden)
    for image_word, file_word in (("the channel", "the DICOM folder"), ("each image", "each file"),
                                  ("leave the image out", "leave the file out"), ("no images", "no files")):
        message = message.replace(image_word, file_word)
    return message


@pytest.mark.parametrize("case", sorted(SAME_ROW_MISTAKES))
def test_a_malformed_row_gets_the_same_line_from_train_py_and_prepare_data_dicom(tmp_path, case):
    text, image = SAME_ROW_MISTAKES[case]
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "labels.csv").write_text(text)
    (tmp_path / "dicom.csv").write_text(text.replace("image", "file", 1))
    with pytest.raises(DataError) as train_py:
        channels.read_manifests(types.SimpleNamespace(train=str(tmp_path / "train"), val=None, test=None))
    with pytest.raises(PrepareError) as dicom_csv:
        dicom_labels.read_labels(str(tmp_path / "dicom.csv"))
    said_by_train_py = str(train_py.value).replace(str(tmp_path / "train" / "labels.csv"), "CSV")
    assert said_by_train_py.startswith("CSV ") and "\n" not in said_by_train_py
    assert str(dicom_csv.value).replace(str(tmp_path / "dicom.csv"), "CSV") == without_the_path(said_by_train_py, image)
    if image is not None:
        assert image not in str(dicom_csv.value)


def test_the_dicom_csv_keeps_its_own_columns(tmp_path):
    """Its ``file`` column anywhere, a ``split`` column, no ``patient_id`` (patients come from the DICOM files); a
    channel's labels.csv has ``image`` first, and a ``split`` column there is a finding like any other."""
    (tmp_path / "d.csv").write_text("Label,Split,FILE\nx,Validation,a/0.dcm\ny,train,1.dcm\n")
    table = dicom_labels.read_labels(str(tmp_path / "d.csv"))
    assert (table.files, table.splits, table.lines, table.classes) == (["a/0.dcm", "1.dcm"], ["val", "train"], [2, 3],
                                                                       ["x", "y"])
    (tmp_path / "p.csv").write_text("file,label,patient_id\n0.dcm,x,p\n")
    with pytest.raises(PrepareError, match="has a 'patient_id' column: patients come from each file's DICOM "
                                           "PatientID tag"):
        dicom_labels.read_labels(str(tmp_path / "p.csv"))
    (tmp_path / "s.csv").write_text("file,label,split\n0.dcm,x,holdout\n")
    with pytest.raises(PrepareError, match=r"line 2: split 'holdout' is not one of \['test', 'testing', 'train'"):
        dicom_labels.read_labels(str(tmp_path / "s.csv"))
    (tmp_path / "labels.csv").write_text("label,image\nx,0.png\n")
    with pytest.raises(layout.LayoutError, match="whose first column is 'image'"):
        layout.read_manifest(str(tmp_path / "labels.csv"))
    (tmp_path / "labels.csv").write_text("Image,split,a\n0.png,1,0\n")
    manifest = layout.read_manifest(str(tmp_path / "labels.csv"))
    assert (manifest.kind, manifest.findings, manifest.splits, manifest.patients) == ("multi", ["split", "a"], None,
                                                                                      None)


def test_missing_files_count_as_unreadable_images(tmp_path, caplog):
    root = single_label_manifest(tmp_path, n=40)
    os.unlink(tmp_path / "train" / "scans" / "a" / "3.png")
    with caplog.at_level("WARNING", logger="train"):
        _, _, listed = channels.read_channels(args_for(root, max_bad_fraction=0.05))
    assert len(listed["train"]) == 39
    assert "1 of the 40 images that" in caplog.text and "(first: 'scans/a/3.png'); they are skipped" in caplog.text
    with pytest.raises(DataError, match=r"1 of the 40 images .* above max-bad-fraction=0.01; upload them"):
        channels.read_channels(args_for(root))


def test_the_same_image_in_two_splits_is_refused(tmp_path):
    root = single_label_manifest(tmp_path)
    shutil.copyfile(tmp_path / "train" / "0.png", tmp_path / "val" / "0.png")  # one scan in both splits
    with pytest.raises(DataError, match=r"the same image is in train \(.*0.png\) and in val \(.*0.png\)"):
        channels.read_channels(args_for(root))


@pytest.mark.parametrize("task, make, fragment", [
    ("multiclass", "multi", "the train channel's labels.csv has finding columns but this run is multiclass"),
    ("multilabel", "folders", "task=multilabel needs a train channel with a labels.csv of 0/1 finding columns"),
    ("multilabel", "single", "task=multilabel needs a train channel with a labels.csv of 0/1 finding columns"),
])
def test_a_task_the_data_cannot_meet_is_refused(tmp_path, task, make, fragment):
    root = {"multi": lambda: make_multilabel_dataset(tmp_path, counts={"train": 3}),
            "folders": lambda: make_dataset(tmp_path / "d", counts={"train": 2}),
            "single": lambda: single_label_manifest(tmp_path)}[make]()
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        channels.read_channels(args_for(root, task=task, val=None))


def test_every_channel_holds_the_same_kind_of_labels(tmp_path):
    root = make_multilabel_dataset(tmp_path, counts={"train": 3})
    make_dataset(tmp_path / "f", counts={"val": 2})
    with pytest.raises(ConfigError, match="the val channel's labels.csv has a label column"):
        shutil.copytree(tmp_path / "f" / "val", tmp_path / "val")
        single_label_manifest(tmp_path / "s")
        shutil.copyfile(tmp_path / "s" / "val" / "labels.csv", tmp_path / "val" / "labels.csv")
        channels.read_channels(args_for(root))


# ---------------------------------------------------------------- patient-level hold-out
def test_the_held_out_val_keeps_every_patient_on_one_side(tmp_path):
    root = make_multilabel_dataset(tmp_path, counts={"train": 90}, images_per_patient=3)
    _, task, listed = channels.read_channels(args_for(root, val=None))
    train, val = data.hold_out_val(listed["train"], 0.2, seed=3, task=task)
    assert set(train.groups).isdisjoint(val.groups) and 12 <= len(val) <= 24
    again = data.hold_out_val(listed["train"], 0.2, seed=3, task=task)[1]
    assert again.names == val.names  # seeded


def test_prepare_data_holds_out_a_test_split_by_the_same_rule():
    split = prepare_data.Split([np.zeros((4, 4), np.uint8)] * 40, [i % 2 for i in range(40)],
                               patients=[f"p{i // 4}" for i in range(40)])
    lines = []
    out = prepare_data.hold_out_test({"train": split}, 0.25, seed=1, log=lines.append)
    assert set(out["train"].patients).isdisjoint(out["test"].patients) and 8 <= len(out["test"]) <= 12
    assert "held out" in lines[0] and "by patient" in lines[0]
    assert prepare_data.hold_out_test(out, 0.25, 1, log=lines.append) is out and "its own test split" in lines[1]


# ---------------------------------------------------------------- metrics
def test_multilabel_metrics_follow_the_medmnist_evaluator():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < 0.3).astype(int)
    p = np.clip(y * 0.6 + rng.random((200, 3)) * 0.5, 0, 1)
    got = metrics.multilabel_metrics(y, p, ["a", "b", "c"])
    assert got["auc"] == pytest.approx(np.mean([roc_auc_score(y[:, k], p[:, k]) for k in range(3)]))
    assert got["accuracy"] == pytest.approx(np.mean([((p[:, k] >= 0.5) == y[:, k]).mean() for k in range(3)]))
    a = got["per_finding"]["a"]
    assert a["prevalence"] == pytest.approx(y[:, 0].mean()) and a["threshold"] == 0.5
    assert a["sensitivity"] == pytest.approx(((p[:, 0] >= 0.5) & (y[:, 0] == 1)).sum() / y[:, 0].sum())


def test_ordinal_metrics_match_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 300)
    prob = np.eye(5)[np.clip(y + rng.integers(-1, 2, 300), 0, 4)] * 0.9 + 0.02
    got = metrics.ordinal_metrics(y, prob)
    assert got["kappa"] == pytest.approx(cohen_kappa_score(y, prob.argmax(1), weights="quadratic"))
    assert got["mae"] == pytest.approx(np.abs(prob.argmax(1) - y).mean())
