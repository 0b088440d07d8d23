"""Pixels as the data holds them: colour is what a file's pixels hold, whatever its mode (a palette PNG of red and
green discs is colour; an RGB JPEG of a grey X-ray is grey), and training, evaluation and the endpoint decode the
same file to the same array."""
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import images
import inference
import loaders
import train

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6

RED, GREEN = (196, 0, 0), (0, 100, 0)  # equal luma (0.299 * 196 = 0.587 * 100): the same grey


def disc(colour, size=28, rng=None):
    rng = rng or np.random.default_rng(0)
    arr = np.zeros((size, size, 3), np.uint8)
    cy, cx = rng.integers(9, size - 9, 2)
    yy, xx = np.mgrid[:size, :size]
    arr[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = colour
    return Image.fromarray(arr)


def grey_rgb(size=28):
    ramp = np.linspace(0, 255, size * size).reshape(size, size).astype(np.uint8)
    return Image.fromarray(np.stack([ramp] * 3, -1))


def reopen(im, fmt, **save):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    buf.seek(0)
    return Image.open(buf)


@pytest.mark.parametrize("make, colour", [
    (lambda: disc(RED).convert("P", palette=Image.ADAPTIVE), True),         # the example
    (lambda: disc(GREEN).convert("P", palette=Image.ADAPTIVE).convert("PA"), True),
    (lambda: grey_rgb().convert("P", palette=Image.ADAPTIVE), False),      # a palette of greys
    (lambda: disc(RED), True),
    (lambda: grey_rgb(), False),                                           # RGB mode, grey pixels
    (lambda: reopen(grey_rgb(), "JPEG", quality=90), False),               # chroma noise of JPEG is not colour
    (lambda: reopen(disc(RED), "JPEG", quality=90), True),
    (lambda: disc(RED).convert("RGBA"), True),
    (lambda: grey_rgb().convert("RGBA"), False),
    (lambda: disc(RED).convert("CMYK"), True),
    (lambda: grey_rgb().convert("CMYK"), False),
    (lambda: disc(RED).convert("YCbCr"), True),
    (lambda: grey_rgb().convert("L"), False),
    (lambda: grey_rgb().convert("LA"), False),
    (lambda: Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 200), False),  # 16-bit grey
    (lambda: Image.fromarray(np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)), False),
    (lambda: grey_rgb().convert("1"), False),
])
def test_colour_follows_what_the_pixels_hold(make, colour):
    assert images.holds_colour(make()) is colour


def test_a_small_coloured_mark_on_a_grey_image_is_colour():
    im = grey_rgb(200)
    im.paste(disc(RED, size=20), (0, 0))
    assert images.holds_colour(im)


def rgb_png_header(width, height):
    """A few hundred bytes that claim a width x height RGB PNG (the pixels are not there)."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def test_the_colour_probe_never_decodes_an_image_above_the_pixel_limit(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        disc(RED).save(paths[-1])
    (tmp_path / "bomb.png").write_bytes(rgb_png_header(30_000, 30_000))  # 2.7 GB of RGB once decoded
    paths.insert(0, str(tmp_path / "bomb.png"))
    looked_at = []
    real = images.holds_colour
    monkeypatch.setattr(images, "holds_colour", lambda im: looked_at.append(im.size) or real(im))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own limit is not the one that counts
    assert images.probe(paths, max_pixels=64_000_000) == (3, 28)
    assert looked_at == [(28, 28)]  # the bomb (first) was skipped; the first colour image settles it
    with pytest.raises(images.ImageTooLargeError, match="30000x30000 pixels is above the limit of 64000000"):
        images.open_image(paths[0], 64_000_000)


WRITERS = {  # name: (PIL image, format, save options)
    "palette-colour": (lambda: disc(RED).convert("P", palette=Image.ADAPTIVE), "PNG", {}),
    "rgba": (lambda: disc(GREEN).convert("RGBA"), "PNG", {}),
    "cmyk-jpeg": (lambda: disc(RED).convert("CMYK"), "JPEG", {"quality": 95}),
    "grey-jpeg": (lambda: grey_rgb(), "JPEG", {"quality": 95}),
    "tiff16": (lambda: Image.fromarray(np.arange(784, dtype=np.uint16).reshape(28, 28) * 80), "TIFF", {}),
    "gif": (lambda: disc(RED), "GIF", {}),
    "webp": (lambda: disc(GREEN), "WEBP", {"lossless": True}),
    "bmp": (lambda: grey_rgb(), "BMP", {}),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
@pytest.mark.parametrize("channels", [1, 3])
def test_training_and_the_endpoint_decode_a_file_to_the_same_array(tmp_path, name, channels):
    make, fmt, options = WRITERS[name]
    path = tmp_path / f"{name}.img"
    make().save(path, format=fmt, **options)
    trained = loaders.ImageFileDataset([str(path)], [0], channels, 24, 10 ** 7)[0][0]  # train.py's loader
    served = inference.to_batch(inference.input_fn(path.read_bytes(), "application/x-image"), channels, 24)[0]
    assert trained.dtype == served.dtype == torch.uint8 and torch.equal(trained, served)


@pytest.mark.slow
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
