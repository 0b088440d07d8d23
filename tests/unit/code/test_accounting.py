"""Every image and every label accounted for, and intervals over what is independent: metrics.json names the images
each split could not use and why, says why a figure is null, says what its bootstrap intervals resampled (patients
when the split names them); the same file in two splits is refused whatever the layout, and a class is one class
however labels.csv spells it."""
import csv
import json
import os
import shutil
import types

import numpy as np
import pytest
import torch
from PIL import Image

import accounting
import channels
import data
import layout
import loaders
from conftest import CLASSES, FINDINGS, make_dataset, make_image, make_multilabel_dataset
from data_factories import manifest_channel
from errors import BadImageError, DataError, ImageTooLargeError
from medimg import artifacts, dicom_labels, show_metrics


def args_for(root, **kw):
    base = {name: os.path.join(root, name) if os.path.isdir(os.path.join(root, name)) else None
            for name in ("train", "val", "test")}
    base.update(label_dict=None, task="auto", max_bad_fraction=0.2)
    base.update(kw)
    return types.SimpleNamespace(**base)


# ---------------------------------------------------------------- skipped images
def test_skipped_images_are_named_per_split_and_a_long_list_moves_to_a_file(tmp_path):
    skipped = {"train": {f"normal/{i:03d}.png": "cannot decode" for i in range(60)},
               "val": {},
               "test": {"b.png": "above max-image-pixels", "a.png": channels.MISSING}}
    skipped["train"]["huge.png"] = "above max-image-pixels"
    section = accounting.skipped_section(skipped, str(tmp_path))
    assert section["val"] == {"count": 0, "reasons": {}, "images": []}
    assert section["test"] == {"count": 2, "images": ["a.png", "b.png"],
                               "reasons": {channels.MISSING: 1, "above max-image-pixels": 1}}
    train_entry = section["train"]
    assert train_entry["count"] == 61 and "images" not in train_entry
    assert train_entry["first_images"] == ["huge.png"] + [f"normal/{i:03d}.png" for i in range(9)]  # sorted
    assert train_entry["images_file"] == accounting.SKIPPED_FILE
    assert train_entry["reasons"] == {"cannot decode": 60, "above max-image-pixels": 1}
    with open(tmp_path / accounting.SKIPPED_FILE, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["split", "image", "reason"] and len(rows) == 1 + 61 + 2  # every split's, with reasons
    assert ["train", "huge.png", "above max-image-pixels"] in rows and ["test", "a.png", channels.MISSING] in rows
    # a later run with short lists: the file of the earlier one is not left to be read as this run's
    accounting.skipped_section({"train": {}, "test": {"a.png": "cannot decode"}}, str(tmp_path))
    assert not os.path.exists(tmp_path / accounting.SKIPPED_FILE)


def bad_image_files(folder):
    """Three unusable files of different kinds in ``folder``: truncated, empty, too large."""
    os.makedirs(folder, exist_ok=True)
    make_image(0, np.random.default_rng(1)).save(os.path.join(folder, "truncated.png"))
    blob = open(os.path.join(folder, "truncated.png"), "rb").read()
    open(os.path.join(folder, "truncated.png"), "wb").write(blob[: len(blob) // 2])
    open(os.path.join(folder, "empty.png"), "wb").close()
    Image.new("L", (400, 400)).save(os.path.join(folder, "huge.png"))


def test_every_unusable_image_is_named_once_with_its_reason_cached_or_streamed(tmp_path):
    root = tmp_path / "train"
    make_dataset(tmp_path, counts={"train": 3})
    bad_image_files(root / "normal")
    paths, labels = channels.list_channel(str(root), CLASSES, "train")
    names = [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]
    listing = channels.Listing(paths, labels, groups=[f"p{i // 2}" for i in range(len(paths))], names=names)
    expected = {"normal/empty.png": "cannot decode", "normal/truncated.png": "cannot decode",
                "normal/huge.png": "above max-image-pixels"}
    args = types.SimpleNamespace(max_image_pixels=100_000, max_bad_fraction=0.5, num_workers=0, page=0)
    cached = data.decode_split("train", listing, 1, 16, args, torch.device("cpu"), False, "multiclass")
    assert cached.skipped == expected and len(cached) == len(paths) - 3
    keep = [i for i, n in enumerate(names) if n not in expected]
    assert cached.names == [names[i] for i in keep] and cached.groups == [listing.groups[i] for i in keep]
    streamed = data.decode_split("train", listing, 1, 16, args, torch.device("cpu"), True, "multiclass")
    for _ in range(3):  # three epochs of training batches: each bad image is read three times, named once
        for _ in streamed.batches(range(len(paths)), 4, torch.device("cpu"), fill=True):
            pass
    assert streamed.skipped == expected and streamed.bad == 9
    assert streamed.groups == listing.groups  # indexed like names: evaluation picks the readable ones


def test_a_manifests_missing_images_are_train_s_skipped_even_after_the_hold_out(tmp_path):
    names = manifest_channel(tmp_path / "train", ["normal", "pneumonia"] * 20, [f"p{i // 2}" for i in range(40)])
    os.unlink(tmp_path / "train" / names[3])
    _, _, listed = channels.read_channels(args_for(tmp_path))
    assert listed["train"].skipped == {names[3]: channels.MISSING}
    kept, held = data.hold_out_val(listed["train"], 0.25, seed=0, task="multiclass")
    assert kept.skipped == {names[3]: channels.MISSING} and held.skipped == {}


# ---------------------------------------------------------------- why a figure is null
@pytest.mark.parametrize("labels, classes, expected", [
    ([0, 0, 0], ["normal", "pneumonia"],
     {"auc": "the test split holds only images of 'normal': an AUC needs images of two classes",
      "sensitivity": "the test split holds no images of 'pneumonia'"}),
    ([1, 1], ["normal", "pneumonia"],
     {"auc": "the test split holds only images of 'pneumonia': an AUC needs images of two classes",
      "specificity": "the test split holds no images of 'normal'"}),
    ([0, 1, 0], ["a", "b", "c"], {"per_class_recall": {"c": "the test split holds no images of 'c'"}}),
    ([2, 2], ["a", "b", "c"], {"auc": "the test split holds only images of 'c': an AUC needs images of two classes",
                               "per_class_recall": {"a": "the test split holds no images of 'a'",
                                                    "b": "the test split holds no images of 'b'"}}),
    ([0, 1], ["normal", "pneumonia"], {}),
])
def test_each_null_of_a_split_says_why(labels, classes, expected):
    assert accounting.undefined(labels, classes, "multiclass", "test") == expected


def test_a_finding_without_positives_or_negatives_says_why():
    y = np.array([[1, 0, 1], [1, 0, 0], [1, 0, 1]])
    out = accounting.undefined(y, FINDINGS, "multilabel", "val")
    assert out == {"per_finding": {
        "Pleural Effusion": "every image of the val split has 'Pleural Effusion': its AUC and specificity need some "
                            "without",
        "Nodule": "the val split has no image with 'Nodule': its AUC and sensitivity need some"}}
    assert accounting.undefined(y[:, :2], FINDINGS[:2], "multilabel", "val")["auc"] == (
        "no finding has both positive and negative images in the val split")


def test_a_test_split_that_cannot_judge_is_said_at_start_up(tmp_path, caplog):
    make_dataset(tmp_path, counts={"train": 2, "test": 3})
    shutil.rmtree(tmp_path / "test" / "pneumonia")
    classes, task, listed = channels.read_channels(args_for(tmp_path))
    caplog.clear()
    with caplog.at_level("WARNING", logger="train"):
        data.warn_of_a_test_split_that_cannot_judge(listed["test"], classes, task)
        data.warn_of_a_test_split_that_cannot_judge(listed["train"], classes, task)  # both classes: nothing
    assert caplog.messages == [
        "the test split (3 images) lacks images of the class(es) ['pneumonia']: the test AUC is undefined (null in "
        "metrics.json, whose 'undefined' says why); give test images of every class to measure them"]


# ---------------------------------------------------------------- the same image in two splits
def test_the_same_file_in_two_class_folder_splits_is_refused_whichever_splits(tmp_path):
    make_dataset(tmp_path, counts={"train": 4, "val": 2, "test": 2})
    shutil.copyfile(tmp_path / "val" / "pneumonia" / "1.png", tmp_path / "test" / "normal" / "copy.png")
    with pytest.raises(DataError, match=r"^the same image is in val \(.*/val/pneumonia/1.png\) and in test "
                                        r"\(.*/test/normal/copy.png\); an image may be in one split only"):
        channels.read_channels(args_for(tmp_path))
    os.unlink(tmp_path / "test" / "normal" / "copy.png")
    channels.read_channels(args_for(tmp_path))  # without the copy: fine
    # a class-folder train and a manifest test (the layouts mixed)
    shutil.rmtree(tmp_path / "test")
    manifest_channel(tmp_path / "test", ["normal", "pneumonia"])
    shutil.copyfile(tmp_path / "train" / "normal" / "2.png", tmp_path / "test" / "img" / "0.png")
    with pytest.raises(DataError, match=r"in train \(.*/train/normal/2.png\) and in test \(.*/test/img/0.png\)"):
        channels.read_channels(args_for(tmp_path))


def test_empty_files_are_not_copies_of_each_other(tmp_path):
    make_dataset(tmp_path, counts={"train": 4, "test": 2})
    open(tmp_path / "train" / "normal" / "0.png", "wb").close()
    open(tmp_path / "test" / "normal" / "0.png", "wb").close()  # both unreadable, counted as such: not leakage
    channels.read_channels(args_for(tmp_path))


def test_a_held_out_val_keeps_the_copies_of_a_file_on_one_side(tmp_path, caplog):
    make_dataset(tmp_path, counts={"train": 20})
    for i in range(5):  # five files copied, each under another name in its class folder
        for name in CLASSES:
            shutil.copyfile(tmp_path / "train" / name / f"{i}.png", tmp_path / "train" / name / f"copy-{i}.png")
    classes, task, listed = channels.read_channels(args_for(tmp_path))
    for seed in range(5):
        with caplog.at_level("WARNING", logger="train"):
            kept, held = data.hold_out_val(listed["train"], 0.3, seed=seed, task=task)
        digests = {name: set(channels.file_digests(part)) for name, part in (("train", kept), ("val", held))}
        assert not digests["train"] & digests["val"], seed
        assert 8 <= len(held) <= 18 and len(kept) + len(held) == 50
    assert "10 image file(s) in train hold the same bytes as another" in caplog.text
    plain = make_dataset(tmp_path / "plain", counts={"train": 20})  # no copies: the split it always was
    _, _, listed = channels.read_channels(args_for(plain))
    assert channels.groups_keeping_copies_together(listed["train"]) == (None, 0)


# ---------------------------------------------------------------- class names one way
def test_labels_csv_spelt_two_ways_names_one_class_by_its_most_frequent_spelling(tmp_path, caplog):
    manifest_channel(tmp_path / "train", ["normal"] * 6 + ["pneumonia"] * 4 + ["Pneumonia"] * 2 + ["PNEUMONIA"])
    manifest_channel(tmp_path / "test", ["Normal", "normal", "pneumonia"])
    with caplog.at_level("WARNING", logger="train"):
        classes, _, listed = channels.read_channels(args_for(tmp_path))
    assert list(classes) == ["normal", "pneumonia"]
    assert listed["train"].targets == [0] * 6 + [1] * 7 and listed["test"].targets == [0, 0, 1]
    assert ("the train channel's labels.csv (" in caplog.text and "spells class 'pneumonia' also as 'PNEUMONIA' "
            "(1 row), 'Pneumonia' (2 rows): the same class, as names are compared ignoring case" in caplog.text)
    assert "the test channel's labels.csv" in caplog.text and "'normal' also as 'Normal' (1 row)" in caplog.text


@pytest.mark.parametrize("written, expected", [
    (["b", "B", "a", "A"], ["A", "B"]),                       # ties: the first in sorted order names it
    (["normal, benign", "normal_benign", "Normal_Benign", "normal, benign", "x"], ["normal, benign", "x"]),
    (["Ödem", "ödem", "ÖDEM", "Ödem"], ["Ödem"]),
    (["cancer", "Cancer", "cancer "], ["cancer"]),
])
def test_one_spelling_names_each_class(written, expected):
    assert layout.class_spellings([w.strip() for w in written]) == expected


def test_a_label_dict_matches_labels_and_finding_columns_ignoring_case(tmp_path, caplog):
    manifest_channel(tmp_path / "train", ["NORMAL", "Pneumonia", "normal", "pneumonia"])
    (tmp_path / "train" / "label_dict.json").write_text(json.dumps({"0": "normal", "1": "pneumonia"}))
    with caplog.at_level("WARNING", logger="train"):
        classes, _, listed = channels.read_channels(args_for(tmp_path))
    assert listed["train"].targets == [0, 1, 0, 1] and "'normal' also as 'NORMAL' (1 row)" in caplog.text
    (tmp_path / "train" / "labels.csv").write_text("image,label\nimg/0.png,normal\nimg/1.png,cancer\n")
    with pytest.raises(DataError, match=r"line 3: class 'cancer' is not in"):
        channels.read_channels(args_for(tmp_path))
    # multi-label: a val channel whose finding columns differ in case from train's
    ml = make_multilabel_dataset(tmp_path / "ml", counts={"train": 6, "val": 4})
    val_csv = os.path.join(ml, "val", "labels.csv")
    text = open(val_csv).read().replace("Pleural Effusion", "pleural effusion").replace("Nodule", "NODULE")
    open(val_csv, "w").write(text)
    classes, task, ml_listed = channels.read_channels(args_for(ml))
    manifest = layout.read_manifest(val_csv)
    assert task == "multilabel" and list(classes) == FINDINGS
    assert ml_listed["val"].targets == [tuple(row) for row in manifest.values]  # same column order as written
    train_csv = os.path.join(ml, "train", "labels.csv")
    text = open(train_csv).read().replace("Cardiomegaly", "nodule", 1)
    open(train_csv, "w").write(text)
    with pytest.raises(DataError, match="class names 'Nodule' and 'nodule' .* both map to the folder"):
        channels.read_channels(args_for(ml))


def test_prepare_data_dicom_reads_its_labels_by_the_same_rule(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,label\na.dcm,Pneumonia\nb.dcm,normal\nc.dcm,pneumonia\nd.dcm,pneumonia\n")
    table = dicom_labels.read_labels(str(path))
    assert table.classes == ["normal", "pneumonia"] and table.targets == [1, 0, 1, 1]
    assert table.warnings == [f"{path} spells class 'pneumonia' also as 'Pneumonia' (1 row): the same class, as "
                              "train.py compares names (ignoring case)"]
    assert dicom_labels.read_labels(str(path), ["NORMAL", "Pneumonia"]).targets == [1, 0, 1, 1]
    multi = tmp_path / "multi.csv"
    multi.write_text("file,nodule,Effusion\na.dcm,1,0\n")
    assert dicom_labels.read_labels(str(multi), ["effusion", "Nodule"]).targets == [(0, 1)]


# ---------------------------------------------------------------- the client views
def test_show_metrics_and_the_notebook_say_the_unit_the_reasons_and_the_skipped_images(tmp_path, capsys):
    test = {"n": 23, "accuracy": 0.5, "auc": None, "sensitivity": None, "specificity": 0.5,
            "confusion_matrix": [[11, 12], [0, 0]], "ci95": {"accuracy": [0.3, 0.7]}, "ci95_unit": "patient",
            "n_groups": 8, "undefined": {"auc": "the test split holds only images of 'normal': an AUC needs images "
                                                "of two classes", "sensitivity": "no images of 'pneumonia'"}}
    metrics = {"classes": CLASSES, "best_epoch": 1, "history": [{}], "test": test, "val": dict(test, ci95={}),
               "skipped": {"train": {"count": 0, "images": [], "reasons": {}},
                           "test": {"count": 61, "first_images": [f"{i}.png" for i in range(10)],
                                    "images_file": "skipped_images.csv", "reasons": {"cannot decode": 61}}}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert show_metrics.main([str(tmp_path / "metrics.json")]) == 0
    out = capsys.readouterr().out
    assert ("test (n=23): accuracy 0.5000 [0.300, 0.700], AUC n/a (the test split holds only images of 'normal': "
            "an AUC needs images of two classes)") in out
    assert "sensitivity n/a (no images of 'pneumonia')" in out
    assert "    95% intervals [low, high]: bootstrap resampling 8 patients (each patient's images together)" in out
    assert out.count("95% intervals") == 1  # val has none
    assert ("skipped from test: 61 image(s) (cannot decode: 61): 0.png, 1.png, 2.png, 3.png, 4.png, 5.png, 6.png, "
            "7.png, 8.png, 9.png and 51 more (every name: skipped_images.csv)") in out
    assert "skipped from train" not in out
    assert artifacts.intervals_note(metrics) == ("95% intervals (test): bootstrap resampling 8 patients (each "
                                                 "patient's images together)")
    table = artifacts.skipped_table(metrics)
    assert table.loc["test", "skipped"] == 61 and table.loc["train", "skipped"] == 0
    assert table.loc["test", "images"].endswith("4.png and 56 more")
    assert table.loc["test", "every name"] == "skipped_images.csv" and list(table.index) == ["train", "test"]
    assert artifacts.skipped_table({"classes": CLASSES}) is None  # an older metrics.json


@pytest.mark.parametrize("error, reason", [
    (BadImageError("cannot decode (OSError: truncated)"), "cannot decode"),
    (ImageTooLargeError("9000x9000 pixels is above the limit of 100"), "above max-image-pixels"),
    (BadImageError("has 1 page, so there is no page 2 (pages count from 0); set page"), "no such page"),
    (BadImageError("every one of its 16 pixels is NaN or infinite, so there is no picture"), "no finite pixel"),
])
def test_each_kind_of_unreadable_image_keeps_its_own_reason(error, reason):
    assert loaders.skip_reason(torch.tensor(loaders.skip_code(error))) == reason
