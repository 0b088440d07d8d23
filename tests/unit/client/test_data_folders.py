"""medimg/data_folders.py: listing local channel folders, counting and sampling their classes (labels.csv spellings
counted as train.py counts them), the smoke-test subset."""
import json
import os

import pytest

from medimg import data_folders
from conftest import make_dataset


@pytest.fixture
def data(tmp_path):
    return make_dataset(tmp_path / "tiny", counts={"train": 5, "val": 2, "test": 3})


def test_listing_counts_and_samples(data):
    assert data_folders.channels_in(data) == ["train", "val", "test"]
    assert data_folders.class_counts(data) == {"train": {"normal": 5, "pneumonia": 5}, "val": {"normal": 2, "pneumonia": 2},
                                           "test": {"normal": 3, "pneumonia": 3}}
    sample = data_folders.sample_images(os.path.join(data, "train"), per_class=2, seed=3)
    assert [c for _, c in sample] == ["normal", "normal", "pneumonia", "pneumonia"]
    assert sample == data_folders.sample_images(os.path.join(data, "train"), per_class=2, seed=3)  # reproducible
    with open(os.path.join(data, "train", "normal", ".hidden.png"), "wb"):
        pass
    assert len(data_folders.list_images(os.path.join(data, "train"))) == 10


def test_labels_spelt_two_ways_count_as_one_class_as_train_py_counts_them(tmp_path):
    import layout

    for split in ("train", "val"):
        folder = tmp_path / split
        folder.mkdir()
        labels = ["normal", "pneumonia", "Pneumonia", "pneumonia", "NORMAL", "normal"]
        for i in range(len(labels)):
            (folder / f"{i}.png").write_bytes(b"")
        layout.write_manifest(str(folder / "labels.csv"), [f"{i}.png" for i in range(6)], labels=labels)
    assert data_folders.class_counts(str(tmp_path))["train"] == {"normal": 3, "pneumonia": 3}
    (tmp_path / "val" / "label_dict.json").write_text(json.dumps({"0": "Normal", "1": "PNEUMONIA"}))
    assert data_folders.class_counts(str(tmp_path))["val"] == {"Normal": 3, "PNEUMONIA": 3}  # the data's own names


def test_channels_need_train(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(data_folders.ChannelError, match="has no train/ folder"):
        data_folders.channels_in(str(tmp_path))


def test_subset(data, tmp_path):
    out = data_folders.make_subset(data, str(tmp_path / "subset"), per_class=2)
    assert data_folders.class_counts(out) == {ch: {"normal": 2, "pneumonia": 2} for ch in ("train", "val", "test")}
    assert json.loads(open(os.path.join(out, "label_dict.json")).read()) == {"0": "normal", "1": "pneumonia"}
