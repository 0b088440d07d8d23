"""Labels, channel layout and image decoding: every format the channels may hold, and clear errors."""
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import channels as code_channels
import data
import images
import layout
import loaders
import splits
from conftest import CLASSES, CODE, make_image
from errors import BadImageError, DataError

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6


def write_json(path, obj):
    with open(path, "w") as fh:
        fh.write(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


# ---------------------------------------------------------------- label_dict.json
def test_label_dict_gives_names_in_index_order(tmp_path):
    path = write_json(tmp_path / "l.json", {"1": "pneumonia", "0": "normal"})
    assert code_channels.load_label_dict(path) == ["normal", "pneumonia"]


def test_shipped_label_dict_is_medmnist_shaped():
    with open(os.path.join(CODE, "label_dict.json")) as fh:
        assert json.load(fh) == {"0": "normal", "1": "pneumonia"}


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    ('["normal", "pneumonia"]', "must be an object"),
    ('{"0": "normal"}', "at least 2 classes"),
    ('{"0": "a", "2": "b"}', "without gaps"),
    ('{"zero": "a", "1": "b"}', "not an integer index"),
    ('{"0": "a", "1": "a"}', "duplicate class names"),
    ('{"0": "a", "1": "two\\nlines"}', "invalid class name"),
    ('{"0": "a", "1": "  "}', "invalid class name"),
])
def test_malformed_label_dict_is_a_clear_error(tmp_path, content, fragment):
    with pytest.raises(DataError, match=fragment):
        code_channels.load_label_dict(write_json(tmp_path / "l.json", content))


def test_missing_label_dict_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="label_dict.json not found at .*nothere"):
        code_channels.load_label_dict(str(tmp_path / "nothere" / "label_dict.json"))


# ---------------------------------------------------------------- channel layout
def make_channel(root, per_class=3):
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            make_image(label, rng).save(root / name / f"{i}.png")
    return root


def test_list_channel_ignores_hidden_and_non_images(tmp_path):
    root = make_channel(tmp_path / "train")
    (root / "normal" / ".DS_Store").write_bytes(b"junk")
    (root / "normal" / "notes.txt").write_text("not an image")
    (root / ".hidden_folder").mkdir()
    (root / "README.md").write_text("a file at the channel root")
    paths, labels = code_channels.list_channel(str(root), CLASSES, "train")
    assert len(paths) == 6 and labels == [0, 0, 0, 1, 1, 1]
    assert all(p.endswith(".png") for p in paths)


def test_class_folder_not_in_label_dict_is_an_error(tmp_path):
    root = make_channel(tmp_path / "train")
    (root / "covid").mkdir()
    with pytest.raises(DataError, match="class folder 'covid' in train is not in label_dict.json"):
        code_channels.list_channel(str(root), CLASSES, "train")


def test_channel_given_as_a_single_file_is_an_error(tmp_path):
    (tmp_path / "train.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="is a single file, not a folder"):
        code_channels.list_channel(str(tmp_path / "train.zip"), CLASSES, "train")


def test_empty_channel_is_an_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="holds no class folders"):
        code_channels.list_channel(str(tmp_path / "train"), CLASSES, "train")


def test_class_folders_without_images_are_an_error(tmp_path):
    for name in CLASSES:
        (tmp_path / "train" / name).mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        code_channels.list_channel(str(tmp_path / "train"), CLASSES, "train")


def test_stratified_split_is_seeded_and_keeps_every_class():
    labels = [0] * 30 + [1] * 70
    tr, va = splits.split_indices(labels, 0.1, seed=1)
    assert splits.split_indices(labels, 0.1, seed=1) == (tr, va)
    assert splits.split_indices(labels, 0.1, seed=2) != (tr, va)
    assert sorted(tr + va) == list(range(100)) and not set(tr) & set(va)
    assert sorted(labels[i] for i in va) == [0] * 3 + [1] * 7
    tr, va = splits.split_indices([0, 0, 1, 2, 2, 2], 0.1, seed=0)  # every class with 2+ images has 1 held out
    assert sorted([0, 0, 1, 2, 2, 2][i] for i in va) == [0, 2]


# ---------------------------------------------------------------- image decoding
def encode(im, fmt="PNG"):
    buf = io.BytesIO()
    im.save(buf, fmt)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB", "RGBA"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_decodes_to_uint8_with_the_asked_channels(mode, channels):
    im = make_image(1, np.random.default_rng(0), size=20, mode=mode)
    with images.open_image(encode(im), max_pixels=10_000) as opened:
        arr = images.decode(opened, channels, 16)
    assert arr.shape == (16, 16, channels) and arr.dtype == np.uint8
    assert arr.max() > 150  # the bright square survives every conversion


def test_16_bit_images_use_their_full_range():
    arr16 = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)  # 12-bit data in a 16-bit PNG
    with images.open_image(encode(Image.fromarray(arr16)), 10_000) as im:
        out = images.decode(im, 1, 64)
    assert out.min() == 0 and out.max() == 255


def test_jpeg_decodes():
    im = make_image(0, np.random.default_rng(0), 32, "RGB")
    with images.open_image(encode(im, "JPEG"), 10_000) as opened:
        assert images.decode(opened, 3, 32).shape == (32, 32, 3)


def test_truncated_and_empty_files_are_bad_images(tmp_path):
    good = encode(make_image(0, np.random.default_rng(0), 64)).getvalue()
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("trunc.png", "empty.png"):
        with pytest.raises(BadImageError, match="cannot decode"):
            images.load(str(tmp_path / name), 1, 16, 10_000)


def test_decompression_bomb_is_refused_before_decoding():
    big = Image.new("L", (3000, 3000))
    with pytest.raises(BadImageError, match="above the limit"):
        images.open_image(encode(big), max_pixels=1_000_000)


def test_decode_all_skips_and_counts_bad_files(tmp_path):
    root = make_channel(tmp_path / "train", per_class=4)
    (root / "normal" / "0.png").write_bytes(b"")
    paths, labels = code_channels.list_channel(str(root), CLASSES, "train")
    images, labs, bad = loaders.decode_all(loaders.ImageFileDataset(paths, labels, 1, 16, 10_000), workers=2)
    assert images.shape == (7, 1, 16, 16) and images.dtype == torch.uint8
    assert labs.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert [os.path.basename(b) for b in bad] == ["0.png"]


def test_bad_fraction_over_the_limit_fails_with_the_hyperparameter_named():
    loaders.check_bad_fraction(1, 200, 0.01, "train")  # within the limit: a warning only
    with pytest.raises(DataError, match="raise max-bad-fraction"):
        loaders.check_bad_fraction(3, 200, 0.01, "train")
