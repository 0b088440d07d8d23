"""prepare_data --shards (medimg/shard_data.py, written by code/shards.py) read back by train.py's own listing and
loaders: the same classes, task, names, targets, patients, held-out split and pixels as the image folders."""
import io
import json
import os
import tarfile

import numpy as np
import pytest
import torch

import channels
import data as data_lib
import images
import shards
from data_factories import make_dataset, make_multilabel_dataset, manifest_channel
from errors import ConfigError, DataError
from medimg import prepare_data, shard_data
from train_args import args_with


def channel_args(root, **overrides):
    return args_with(**{name: os.path.join(root, name) if os.path.isdir(os.path.join(root, name)) else None
                        for name in ("train", "val", "test")}, **overrides)


def write(source, out, **kw):
    return shard_data.write_shards(str(source), str(out), log=lambda line: None, **kw)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    make_dataset(root, counts={"train": 30, "val": 6, "test": 6}, size=20, mixed=True)
    with open(os.path.join(root, "train", "normal", "broken.png"), "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n not an image")  # counted and named as train.py would skip it
    return root


@pytest.fixture(scope="module")
def sharded(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded") / "out"
    write(folders, out, shard_mb=0.004)  # several shards per channel
    return out


def test_shards_list_the_same_images_targets_and_classes_as_the_folders(folders, sharded):
    classes, task, from_folders = channels.read_channels(channel_args(folders))
    s_classes, s_task, from_shards = channels.read_channels(channel_args(sharded))
    assert (list(s_classes), s_task) == (list(classes), task) == (["normal", "pneumonia"], "multiclass")
    for split in ("train", "val", "test"):
        a, b = from_folders[split], from_shards[split]
        assert b.names == a.names and b.targets == a.targets and b.groups is a.groups is None
        assert [r.digest for r in b.paths] == channels.file_digests(a)
    assert len(shards.shard_files(os.path.join(sharded, "train"))) > 3
    assert from_shards["train"].shape == (1, 20)


def test_shard_pixels_are_train_pys_decode_and_bad_images_are_skipped_with_their_reason(folders, sharded):
    _, _, from_folders = channels.read_channels(channel_args(folders))
    _, _, from_shards = channels.read_channels(channel_args(sharded))
    listing = from_shards["train"]
    args = args_with(max_bad_fraction=0.5)
    split = data_lib.decode_split("train", listing, 1, 20, args, torch.device("cpu"), False, "multiclass")
    assert split.skipped == {"normal/broken.png": "cannot decode"} and split.bad == 1
    kept = [i for i, n in enumerate(listing.names) if n != "normal/broken.png"]
    for row, i in enumerate(kept):
        expected = images.load(from_folders["train"].paths[i], 1, 20, args.max_image_pixels)
        assert torch.equal(split.images[row], torch.from_numpy(expected).permute(2, 0, 1))


def test_held_out_val_is_the_same_split_from_shards_as_from_folders(folders, sharded):
    for root in (folders, sharded):
        os.rename(os.path.join(root, "val"), os.path.join(root, "val.off"))
    try:
        kept = {}
        for root in (folders, sharded):
            _, task, listed = channels.read_channels(channel_args(root))
            train, val = data_lib.hold_out_val(listed["train"], 0.25, 7, task)
            kept[str(root)] = (train.names, val.names)
        assert kept[str(folders)] == kept[str(sharded)] and len(kept[str(folders)][1]) > 0
    finally:
        for root in (folders, sharded):
            os.rename(os.path.join(root, "val.off"), os.path.join(root, "val"))


def test_a_multilabel_manifest_keeps_findings_patients_and_order(tmp_path):
    make_multilabel_dataset(tmp_path / "src", counts={"train": 12, "val": 6})
    write(tmp_path / "src", tmp_path / "out")
    a_classes, a_task, a = channels.read_channels(channel_args(tmp_path / "src"))
    b_classes, b_task, b = channels.read_channels(channel_args(tmp_path / "out"))
    assert (list(b_classes), b_task) == (list(a_classes), a_task) and b_task == "multilabel"
    for split in ("train", "val"):
        assert (b[split].names, b[split].targets, b[split].groups) == (a[split].names, a[split].targets,
                                                                       a[split].groups)
    with open(tmp_path / "out" / "train" / "label_dict.json") as fh:
        assert list(json.load(fh).values()) == list(a_classes)


def test_a_manifest_row_without_a_file_stays_counted_and_named(tmp_path):
    src = tmp_path / "src"
    manifest_channel(str(src / "train"), ["normal", "pneumonia"] * 6)
    os.unlink(src / "train" / "img" / "3.png")
    write(src, tmp_path / "out")
    listing = channels.read_channels(channel_args(tmp_path / "out", max_bad_fraction=0.5))[2]["train"]
    assert listing.skipped == {"img/3.png": channels.MISSING} and listing.lost == 1 and len(listing) == 11
    with pytest.raises(DataError, match=r"1 of the 12 images of the train channel are in no readable shard"):
        channels.read_channels(channel_args(tmp_path / "out", max_bad_fraction=0.01))


def test_shards_are_plain_webdataset_tars_and_the_same_images_give_the_same_bytes(folders, sharded, tmp_path):
    path = shards.shard_files(os.path.join(sharded, "val"))[0]
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert names[0] == shards.HEADER_MEMBER and names[1].endswith(".npy") and names[2].endswith(".json")
        header = json.load(tar.extractfile(names[0]))
        pixels = np.load(io.BytesIO(tar.extractfile(names[1]).read()), allow_pickle=False)
        meta = json.load(tar.extractfile(names[2]))
    assert meta["name"] == header["samples"][0]["name"] and pixels.shape == (20, 20, 1)
    assert np.array_equal(pixels, shards.read_pixels(shards.refs_of(path, shards.read_header(path))[0]))
    write(folders, tmp_path / "again", shard_mb=0.004)
    for name in ("index.json", os.path.basename(path)):
        with open(os.path.join(sharded, "val", name), "rb") as a, open(tmp_path / "again" / "val" / name, "rb") as b:
            assert a.read() == b.read()  # uploaded once per content (medimg.s3_data hashes the files)


def test_a_size_other_than_the_shards_is_refused_with_what_to_do(sharded):
    _, _, listed = channels.read_channels(channel_args(sharded))
    assert data_lib.pixel_shape(args_with(image_size="auto", in_channels=0), listed) == (1, 20)
    with pytest.raises(ConfigError, match=r"image-size=64, but the train channel's shards hold 20 .*--image-size N"):
        data_lib.pixel_shape(args_with(image_size=64, in_channels=0), listed)
    with pytest.raises(ConfigError, match=r"in-channels=3, but the train channel's shards hold 1"):
        data_lib.pixel_shape(args_with(image_size="auto", in_channels=3), listed)


def test_command_line_writes_shards_from_an_npz_and_refuses_a_folder_of_shards(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", train_images=rng.integers(0, 255, (12, 28, 28), dtype=np.uint8),
             train_labels=np.arange(12) % 2, val_images=rng.integers(0, 255, (4, 28, 28), dtype=np.uint8),
             val_labels=np.arange(4) % 2)
    assert prepare_data.main(["--npz", str(tmp_path / "x.npz"), "--shards", "--out", str(tmp_path / "out"),
                              "--image-size", "16"]) == 0
    assert "train: 12 images in 1 shard(s)" in capsys.readouterr().out
    assert not any(name.endswith(".partial") for name in os.listdir(tmp_path))
    listed = channels.read_channels(channel_args(tmp_path / "out"))[2]
    assert listed["train"].shape == (1, 16) and len(listed["val"]) == 4
    assert prepare_data.main(["--folder", str(tmp_path / "out"), "--shards", "--out", str(tmp_path / "o2")]) == 2
    assert "already holds shards" in capsys.readouterr().err and not os.path.exists(tmp_path / "o2")


def test_shards_upload_once_per_content_and_a_rewrite_of_the_same_images_is_already_there(folders, tmp_path, s3):
    from medimg import s3_data

    a, b = tmp_path / "a", tmp_path / "b"
    write(folders, a, shard_mb=0.004)
    write(folders, b, shard_mb=0.004)  # written again, e.g. on another laptop: the same bytes
    uris, uploaded = s3_data.upload_channels(s3, str(a), "s3://bkt/data", "chest-shards", log=lambda m: None)
    assert uploaded and set(uris) == {"train", "val", "test"}
    logged = []
    assert s3_data.upload_channels(s3, str(b), "s3://bkt/data", "chest-shards", log=logged.append) == (uris, False)
    assert "already in S3" in logged[-1]
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix="data/")["Contents"]]
    assert sum(k.endswith(".tar") for k in stored) == sum(len(shards.shard_files(os.path.join(a, ch)))
                                                          for ch in ("train", "val", "test"))
