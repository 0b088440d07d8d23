"""code/shards.py read by train.py: a shard cut short, one whose header is unreadable, bytes that changed; each
counted as unreadable images under max-bad-fraction with one line naming the shard."""
import logging
import os

import numpy as np
import pytest
import torch

import channels
import data as data_lib
import loaders
import shards
from errors import DataError
from train_args import args_with

META = {"task": "multiclass", "classes": ["normal", "pneumonia"], "classes_from": "a test", "image_size": 8,
        "channels": 1}


def write_channel(folder, n=40, per_shard=10):
    """``n`` 8x8 grey samples (class i % 2, pixel value i) in shards of ``per_shard``; returns the pixels."""
    writer = shards.ShardWriter(folder, META, max_samples=per_shard)
    pixels = [np.full((8, 8, 1), i, dtype=np.uint8) for i in range(n)]
    for i, arr in enumerate(pixels):
        writer.add(f"{['normal', 'pneumonia'][i % 2]}/{i}.png", i % 2, patient=None, digest=bytes([i]) * 20,
                   pixels=arr)
    writer.close()
    return pixels


def decode(root, max_bad_fraction=0.5):
    args = args_with(train=str(root), val=None, test=None, max_bad_fraction=max_bad_fraction)
    _, _, listed = channels.read_channels(args)
    return data_lib.decode_split("train", listed["train"], 1, 8, args, torch.device("cpu"), False, "multiclass")


def test_intact_shards_are_read_back_exactly(tmp_path):
    pixels = write_channel(tmp_path)
    split = decode(tmp_path)
    assert len(split) == 40 and split.bad == 0
    assert [int(x[0, 0, 0]) for x in split.images] == [int(p[0, 0, 0]) for p in pixels]
    assert split.labels.tolist() == [i % 2 for i in range(40)]


def test_a_shard_cut_short_counts_its_lost_images_and_is_named_once(tmp_path, caplog):
    write_channel(tmp_path)
    path = os.path.join(tmp_path, shards.shard_name(2))
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    with caplog.at_level(logging.WARNING, logger="train"):
        split = decode(tmp_path)
    damaged = [r.getMessage() for r in caplog.records if "shard-000002.tar" in r.getMessage()]
    assert len(damaged) == 1 and "cut short" in damaged[0] and "max-bad-fraction" in damaged[0]
    assert 0 < split.bad < 10 and len(split) == 40 - split.bad
    assert set(split.skipped.values()) == {shards.DAMAGED}
    assert not any("skipping" in r.getMessage() for r in caplog.records)  # one line, not one per image
    with pytest.raises(DataError, match=r"of 40 images in train could not be read .*max-bad-fraction=0.01"):
        decode(tmp_path, max_bad_fraction=0.01)


def test_a_shard_whose_header_is_unreadable_counts_its_indexed_images(tmp_path, caplog):
    write_channel(tmp_path)
    path = os.path.join(tmp_path, shards.shard_name(1))
    with open(path, "r+b") as fh:
        fh.write(b"garbage" * 10)
    with caplog.at_level(logging.WARNING, logger="train"):
        args = args_with(train=str(tmp_path), val=None, test=None, max_bad_fraction=0.3)
        listing = channels.read_channels(args)[2]["train"]
    assert len(listing) == 30 and listing.lost == 10
    assert "shard-000001.tar" in listing.skipped and any("10 images" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match=r"10 of the 40 images of the train channel are in no readable shard"):
        channels.read_channels(args_with(train=str(tmp_path), val=None, test=None, max_bad_fraction=0.2))


def test_changed_bytes_make_that_image_unreadable_and_named(tmp_path, caplog):
    write_channel(tmp_path)
    path = os.path.join(tmp_path, shards.shard_name(0))
    ref = shards.refs_of(path, shards.read_header(path))[3]
    with open(path, "r+b") as fh:
        fh.seek(ref.offset + 5)
        fh.write(b"\xff")
    with caplog.at_level(logging.WARNING, logger="train"):
        split = decode(tmp_path)
    assert split.bad == 1 and split.skipped == {"pneumonia/3.png": shards.DAMAGED}
    assert any("pneumonia/3.png" in r.getMessage() and "CRC-32" in r.getMessage() for r in caplog.records)


def test_shards_of_two_different_runs_in_one_channel_are_refused(tmp_path):
    write_channel(tmp_path / "a")
    other = shards.ShardWriter(tmp_path / "b", dict(META, image_size=16))
    other.add("x.png", 0, pixels=np.zeros((16, 16, 1), np.uint8))
    other.close()
    os.replace(tmp_path / "b" / shards.shard_name(0), tmp_path / "a" / shards.shard_name(9))
    with pytest.raises(DataError, match=r"shard-000009.tar has image_size 16 but the channel's other shards 8"):
        channels.read_channels(args_with(train=str(tmp_path / "a"), val=None, test=None))


def test_a_channel_with_no_readable_shard_says_how_to_write_them(tmp_path):
    os.makedirs(tmp_path / "train")
    with open(tmp_path / "train" / shards.shard_name(0), "wb") as fh:
        fh.write(b"\0" * 100)
    with pytest.raises(DataError, match=r"holds no readable shard .*prepare_data --folder DIR --shards"):
        channels.read_channels(args_with(train=str(tmp_path / "train"), val=None, test=None))


def test_streamed_shards_give_every_requested_image_once_in_exact_batches_and_fill_bad_ones(tmp_path, caplog):
    write_channel(tmp_path, n=50, per_shard=8)
    path = os.path.join(tmp_path, shards.shard_name(3))
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 2600)  # its last image is lost
    args = args_with(train=str(tmp_path), val=None, test=None, max_bad_fraction=0.5, cache_max_gb=0.0,
                     num_workers=2)
    _, _, listed = channels.read_channels(args)
    with caplog.at_level(logging.INFO, logger="train"):
        split = data_lib.decode_split("train", listed["train"], 1, 8, args, torch.device("cpu"), True, "multiclass")
    assert isinstance(split, loaders.ShardStreamSplit) and split.buffer == 50  # at most the split
    indices = list(range(49, -1, -1))
    seen = [b for b in split.batches(indices, 16, torch.device("cpu"), fill=False)]
    got = torch.cat([idx for _, _, idx in seen]).tolist()
    bad = {i for i, r in enumerate(listed["train"].paths) if r.skip}
    assert bad and sorted(got) == sorted(set(indices) - bad) and got != sorted(got)  # shuffled
    for x, y, idx in seen:  # each image's own pixels and label
        assert x[:, 0, 0, 0].tolist() == idx.tolist() and y.tolist() == [i % 2 for i in idx.tolist()]
    filled = [len(y) for _, y, _ in split.batches(indices, 16, torch.device("cpu"), fill=True)]
    assert filled == [16, 16, 16, 2]  # the same steps on every rank: bad images replaced, never dropped
    assert split.bound_bytes() == 64 * (2 * (split.buffer + 4 * split.CHUNK) + 2 * split.CHUNK)
