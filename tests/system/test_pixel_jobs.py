"""Pixels as the data holds them, through training runs (train.main in this process, or scripts/local_train.py and
the real toolkit): palette images that differ only in hue train as colour; a set stored under every EXIF
orientation trains on the upright pictures; page=1 reads that page of multi-page files, says so per split and
counts the files without it; float images with NaN and infinite pixels train on their finite pixels. The decoding
rules themselves: tests/unit/code/test_pixels.py."""
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

import train
from conftest import FAST_HPS, run_local_train
from pictures import GREEN, RED, STORE, disc, orientation_tag

pytestmark = [pytest.mark.slow, pytest.mark.torch26]  # trains; make test-torch26 runs them on torch 2.6 too


def test_palette_images_that_differ_only_in_hue_train_as_colour(tmp_path, capsys):
    """Two classes of palette PNGs: a red or a green disc of equal brightness. As grey they are one class."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    in_train = set()
    for split, n in (("train", 40), ("val", 12)):
        for name, colour in (("red", RED), ("green", GREEN)):
            os.makedirs(root / split / name)
            for i in range(n):
                im = disc(colour, rng=rng)
                while split == "val" and im.tobytes() in in_train:  # no image in two splits: train.py refuses it
                    im = disc(colour, rng=rng)
                in_train |= {im.tobytes()} if split == "train" else set()
                im.convert("P", palette=Image.ADAPTIVE).save(root / split / name / f"{i}.png")
    (root / "train" / "label_dict.json").write_text(json.dumps({"0": "red", "1": "green"}))
    job = tmp_path / "job"
    code = train.main(["--train", str(root / "train"), "--val", str(root / "val"), "--model-dir", str(job / "model"),
                       "--output-data-dir", str(job / "out"), "--output-dir", str(job / "out"),
                       "--checkpoint-dir", "", "--epochs", "6", "--batch-size", "16", "--ema", "0"])
    assert code == 0, capsys.readouterr().out[-3000:]
    config = json.loads((job / "model" / "model_config.json").read_text())
    metrics = json.loads((job / "out" / "metrics.json").read_text())
    assert config["in_channels"] == 3
    assert metrics["val"]["auc"] > 0.95, metrics["val"]


CLASS_NAMES = ("normal", "pneumonia")


def band_picture(label, rng, size=16):
    """The upright picture: noise with a bright band at the top (class 1) or at the bottom (class 0)."""
    arr = rng.normal(70, 15, (size, size))
    arr[:4 if label else 0] += 140
    arr[size - (0 if label else 4):] += 140
    return arr.clip(0, 255).astype(np.uint8)


def write_set(root, counts, write):
    """root/<split>/<class>/<i><ext> for {split: per-class count}; ``write(path_without_ext, label, rng, k)`` writes
    one file (k counts files over the whole set) and returns its path."""
    rng = np.random.default_rng(0)
    k = 0
    for split, n in counts.items():
        for label, name in enumerate(CLASS_NAMES):
            os.makedirs(root / split / name)
            for i in range(n):
                write(root / split / name / str(i), label, rng, k)
                k += 1
    (root / "label_dict.json").write_text(json.dumps(dict(enumerate(CLASS_NAMES))))
    return root


def trained_metrics(work):
    return json.loads((work / "output" / "data" / "metrics.json").read_text())


def test_a_set_stored_with_mixed_orientation_tags_trains_on_the_upright_pictures(tmp_path):
    """Which class an image is depends on where its band is as a viewer shows it (top or bottom); the files are
    stored turned by all eight orientations, as JPEG, PNG, WebP and TIFF. Read as stored, both classes look alike
    (each has its band on every side as often) and nothing can be learnt; read upright, it is learnt at once."""
    formats = (("JPEG", ".jpg", {"quality": 95}), ("PNG", ".png", {}), ("WEBP", ".webp", {"lossless": True}),
               ("TIFF", ".tif", {}))

    def write(stem, label, rng, k):
        orientation, (fmt, ext, options) = k % 8 + 1, formats[(k // 8) % 4]
        Image.fromarray(np.ascontiguousarray(STORE[orientation](band_picture(label, rng)))).save(
            f"{stem}{ext}", format=fmt, exif=orientation_tag(orientation), **options)

    data = write_set(tmp_path / "data", {"train": 40, "val": 12}, write)
    result = run_local_train(data, tmp_path / "work", FAST_HPS)
    assert result.returncode == 0, result.stdout[-3000:]
    assert trained_metrics(tmp_path / "work")["val"]["auc"] > 0.95  # read as stored: about 0.5


def page_set(tmp_path, formats):
    """Two-page files (TIFF pages, GIF/WebP/APNG frames): page 0 is noise alike in both classes, page 1 the band
    picture that tells the class."""
    def write(stem, label, rng, k):
        fmt, ext = formats[k % len(formats)]
        noise = Image.fromarray(rng.normal(110, 30, (16, 16)).clip(0, 255).astype(np.uint8))
        band = Image.fromarray(band_picture(label, rng))
        if fmt == "WEBP":
            noise, band = noise.convert("RGB"), band.convert("RGB")
        noise.save(f"{stem}{ext}", format=fmt, save_all=True, append_images=[band],
                   **({"lossless": True} if fmt == "WEBP" else {}))

    return write_set(tmp_path / "data", {"train": 20, "val": 8}, write)


def test_page_reads_that_page_of_multi_page_files_says_so_per_split_and_counts_files_without_it(tmp_path):
    """Streamed (DataLoader workers carry each file's page count back), page=1: the set learns from page 1, each
    split says how many multi-page files it read and at which page, a single-page file is an unreadable image
    saying why, and the model remembers the page for the endpoint."""
    data = page_set(tmp_path, (("TIFF", ".tif"), ("GIF", ".gif"), ("WEBP", ".webp"), ("PNG", ".png")))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(data / "train" / "normal" / "single.tif")
    hps = [*FAST_HPS, "epochs=3", "page=1", "cache-max-gb=0", "num-workers=1", "max-bad-fraction=0.05"]
    result = run_local_train(data, tmp_path / "work", hps)
    out = result.stdout
    assert result.returncode == 0, out[-3000:]
    assert ("/train/normal/single.tif: has 1 page, so there is no page 1 (pages count from 0: the page "
            "hyperparameter)") in out  # the toolkit's copy of the channel, under WORK/input/data
    said = {split: re.findall(rf"{split}: (\d+) of the (\d+) images read are multi-page or animated files, read at "
                              r"page 1 \(e\.g\. \S+ has 2 pages\); the page hyperparameter chooses another", out)
            for split in ("train", "val")}  # once each, after the first pass (train: the first epoch's full batches)
    assert said["val"] == [("16", "16")] and len(said["train"]) == 1, (said, out[-3000:])
    assert said["train"][0][0] == said["train"][0][1] and int(said["train"][0][0]) >= 31, said
    assert json.loads((tmp_path / "work" / "model" / "model_config.json").read_text())["page"] == 1
    assert trained_metrics(tmp_path / "work")["val"]["auc"] > 0.95  # page 0 is noise alike in both classes


def test_float_images_with_nan_and_infinite_pixels_train_on_their_finite_pixels(tmp_path):
    """32-bit float TIFFs (intensities -1000..1000), every one with NaN, -inf or +inf pixels: before, each was a
    black picture; now their finite pixels are the picture, the split says how many had non-finite pixels, and one
    without a finite pixel is an unreadable image saying so."""
    def write(stem, label, rng, k):
        arr = band_picture(label, rng).astype(np.float32) * 8 - 1000
        arr[rng.integers(4, 12), rng.integers(0, 16)] = (np.nan, np.inf, -np.inf)[k % 3]
        Image.fromarray(arr).save(f"{stem}.tif")

    data = write_set(tmp_path / "data", {"train": 40, "val": 12}, write)
    Image.fromarray(np.full((16, 16), np.nan, np.float32)).save(data / "train" / "pneumonia" / "all-nan.tif")
    result = run_local_train(data, tmp_path / "work", [*FAST_HPS, "max-bad-fraction=0.05"])
    out = result.stdout
    assert result.returncode == 0, out[-3000:]
    assert "/train/pneumonia/all-nan.tif: every one of its 256 pixels is NaN or infinite, so there is no picture" in out
    assert "1 of 81 images in train could not be read and were skipped" in out
    for split, n in (("train", 80), ("val", 24)):
        assert (f"{split}: {n} of the {n} images read have NaN or infinite pixels, shown as black (NaN, -inf) or "
                "white (+inf) beside their finite pixels' range (e.g. ") in out, (split, out[-3000:])
    assert trained_metrics(tmp_path / "work")["val"]["auc"] > 0.95
