"""Pixels as the data holds them: colour is what a file's pixels hold, whatever its mode (a palette PNG of red and
green discs is colour; an RGB JPEG of a grey X-ray is grey); a file is seen as a viewer shows it (its EXIF
orientation applied), at the ``page`` hyperparameter's page of a multi-page or animated file, with NaN and infinite
float pixels shown, never a black picture; and training, evaluation, the endpoint and the notebook's figures decode
the same file to the same array."""
import io
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

import images
import inference
import loaders
import model_config
from errors import BadImageError
from pictures import GREEN, RED, STORE, VIEW, disc, orientation_tag

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6


def grey_rgb(size=28):
    ramp = np.linspace(0, 255, size * size).reshape(size, size).astype(np.uint8)
    return Image.fromarray(np.stack([ramp] * 3, -1))


def reopen(im, fmt, **save):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    buf.seek(0)
    return Image.open(buf)


@pytest.mark.parametrize("make, colour", [
    (lambda: disc(RED).convert("P", palette=Image.ADAPTIVE), True),         # the issue's example
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


class Pages:
    """A first picture and the pages to append (what ``save_all`` writes)."""

    def __init__(self, first, rest):
        self.first, self.rest = first, rest


def pages_of(im, n=3):
    """``n`` pages: ``im`` turned by 0, 90, 180 ... degrees, so that each page is another picture."""
    return Pages(im, [im.rotate(90 * k) for k in range(1, n)])


def float_with_nonfinite(size=28):
    arr = np.linspace(-1000.0, 3000.0, size * size, dtype=np.float32).reshape(size, size)
    arr[0, :4] = [np.nan, -np.inf, np.inf, np.nan]
    return arr


def save(make, path, fmt, options):
    im = make()
    if isinstance(im, Pages):
        im.first.save(path, format=fmt, append_images=im.rest, **options)
    else:
        im.save(path, format=fmt, **options)


WRITERS = {  # name: (PIL image, format, save options)
    "palette-colour": (lambda: disc(RED).convert("P", palette=Image.ADAPTIVE), "PNG", {}),
    "rgba": (lambda: disc(GREEN).convert("RGBA"), "PNG", {}),
    "cmyk-jpeg": (lambda: disc(RED).convert("CMYK"), "JPEG", {"quality": 95}),
    "grey-jpeg": (lambda: grey_rgb(), "JPEG", {"quality": 95}),
    "tiff16": (lambda: Image.fromarray(np.arange(784, dtype=np.uint16).reshape(28, 28) * 80), "TIFF", {}),
    "gif": (lambda: disc(RED), "GIF", {}),
    "webp": (lambda: disc(GREEN), "WEBP", {"lossless": True}),
    "bmp": (lambda: grey_rgb(), "BMP", {}),
    # seen as a viewer shows them: stored turned, with an EXIF orientation
    "jpeg-rotated": (lambda: disc(RED), "JPEG", {"quality": 95, "exif": orientation_tag(6)}),
    "png-exif-transposed": (lambda: grey_rgb(), "PNG", {"exif": orientation_tag(5)}),
    "tiff-rotated": (lambda: disc(GREEN), "TIFF", {"exif": orientation_tag(8)}),
    "webp-mirrored": (lambda: disc(RED), "WEBP", {"lossless": True, "exif": orientation_tag(7)}),
    # more than one picture, or non-finite pixels
    "tiff-pages": (lambda: pages_of(grey_rgb().convert("L")), "TIFF", {"save_all": True}),
    "gif-frames": (lambda: pages_of(disc(RED)), "GIF", {"save_all": True}),
    "tiff-float-nan": (lambda: Image.fromarray(float_with_nonfinite()), "TIFF", {}),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
@pytest.mark.parametrize("channels", [1, 3])
def test_training_and_the_endpoint_decode_a_file_to_the_same_array(tmp_path, name, channels):
    make, fmt, options = WRITERS[name]
    path = tmp_path / f"{name}.img"
    save(make, path, fmt, options)
    for page in (0, 1) if "pages" in name or "frames" in name else (0,):
        trained = loaders.ImageFileDataset([str(path)], [0], channels, 24, 10 ** 7, page=page)[0][0]  # train.py's
        served = inference.to_batch(inference.input_fn(path.read_bytes(), "application/x-image"), channels, 24,
                                    page=page)[0]
        assert trained.dtype == served.dtype == torch.uint8 and torch.equal(trained, served)


# ---------------------------------------------------------------- what a viewer shows: the EXIF orientation
# VIEW and STORE (tests/support/pictures.py): EXIF 2.3's Orientation, from the standard's words
ORIENTED_FORMATS = {"JPEG": {"quality": 100}, "PNG": {}, "TIFF": {}, "WEBP": {"lossless": True}}


def encoded(arr, fmt, **options):
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format=fmt, **{**ORIENTED_FORMATS[fmt], **options})
    return buf.getvalue()


@pytest.mark.parametrize("fmt", sorted(ORIENTED_FORMATS))
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_shown_as_a_viewer_shows_it(tmp_path, fmt, orientation):
    """A 12x8 picture, stored turned with its tag (JPEG EXIF, PNG eXIf, TIFF tag 274, WebP EXIF): decoded as the
    standard says a viewer shows it, from a file object (the endpoint) and from a path (training), whose decodes
    differ in Pillow (a path's uncompressed TIFF is memory-mapped). JPEG's reference is the same bytes without the
    tag, decoded (JPEG is lossy)."""
    stored = np.random.default_rng(orientation).integers(0, 256, (8, 12), dtype=np.uint8)
    tagged = encoded(stored, fmt, exif=orientation_tag(orientation))
    path = tmp_path / f"tagged.{fmt.lower()}"
    path.write_bytes(tagged)
    with images.open_image(io.BytesIO(encoded(stored, fmt)), 10 ** 7) as plain:
        as_stored = np.asarray(plain)
    if fmt != "JPEG":
        np.testing.assert_array_equal(as_stored if as_stored.ndim == 2 else as_stored[:, :, 0], stored)
    for source in (io.BytesIO(tagged), str(path)):
        with images.open_image(source, 10 ** 7) as im:
            shown = np.asarray(im)
        np.testing.assert_array_equal(shown, VIEW[orientation](as_stored))
        assert shown.shape[:2] == ((8, 12) if orientation <= 4 else (12, 8))
    grey = as_stored if as_stored.ndim == 2 else as_stored[:, :, 0]
    np.testing.assert_array_equal(images.display(str(path), 10 ** 7), VIEW[orientation](grey))
    assert images.probe([str(path)], 10 ** 7) == (1, 12)  # a turn keeps the longer side


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_an_orientation_outside_the_standard_leaves_the_pixels_as_stored(value):
    stored = np.arange(96, dtype=np.uint8).reshape(8, 12)
    with images.open_image(io.BytesIO(encoded(stored, "PNG", exif=orientation_tag(value))), 10 ** 7) as im:
        np.testing.assert_array_equal(np.asarray(im), stored)


@pytest.mark.parametrize("fmt", sorted(ORIENTED_FORMATS))
@pytest.mark.parametrize("channels", [1, 3])
def test_training_and_the_endpoint_see_a_stored_turned_file_upright(tmp_path, fmt, channels):
    """The issue's example: a picture stored turned with an orientation tag reaches training and the endpoint as
    the upright picture (the one saved without a turn), not as the stored pixels."""
    upright = np.zeros((16, 24), np.uint8)
    upright[:4] = 255  # a bright band at the top: where it is tells what the model sees
    reference = tmp_path / "upright.png"
    Image.fromarray(upright).save(reference)
    expected = loaders.ImageFileDataset([str(reference)], [0], channels, 16, 10 ** 7)[0][0]
    for orientation in range(2, 9):
        path = tmp_path / f"{orientation}.{fmt.lower()}"
        path.write_bytes(encoded(STORE[orientation](upright), fmt, exif=orientation_tag(orientation)))
        trained = loaders.ImageFileDataset([str(path)], [0], channels, 16, 10 ** 7)[0][0]
        served = inference.to_batch(inference.input_fn(path.read_bytes(), "image/jpeg"), channels, 16)[0]
        tolerance = 12 if fmt == "JPEG" else 0
        assert torch.equal(trained, served), (fmt, orientation)
        assert (trained.int() - expected.int()).abs().max() <= tolerance, (fmt, orientation)


# ---------------------------------------------------------------- multi-page and animated files: the page
PAGE_WRITERS = {"TIFF": {}, "GIF": {}, "WEBP": {"lossless": True}, "PNG": {}}  # PNG: APNG


def page_file(path, fmt, values=(40, 120, 200)):
    """A 3-page file whose page k is a uniform grey values[k] with a dark square at the top left."""
    pages = []
    for value in values:
        arr = np.full((12, 12), value, np.uint8)
        arr[:3, :3] = 0
        pages.append(Image.fromarray(arr).convert("RGB" if fmt == "WEBP" else "L"))
    pages[0].save(path, format=fmt, save_all=True, append_images=pages[1:], **PAGE_WRITERS[fmt])
    return str(path)


@pytest.mark.parametrize("fmt", sorted(PAGE_WRITERS))
def test_page_chooses_the_page_of_multi_page_and_animated_files(tmp_path, fmt):
    path = page_file(tmp_path / f"three.{fmt.lower()}", fmt)
    for page, value in enumerate((40, 120, 200)):
        arr, notes = images.read(path, 1, 12, 10 ** 7, page)
        assert arr[6, 6, 0] == value and arr[0, 0, 0] == 0 and notes.pages == 3, (page, arr[6, 6, 0])
    with pytest.raises(BadImageError, match=r"^has 3 pages, so there is no page 3 \(pages count from 0"):
        images.load(path, 1, 12, 10 ** 7, page=3)
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "one.png")
    with pytest.raises(BadImageError, match=r"^has 1 page, so there is no page 1 "):
        images.load(str(tmp_path / "one.png"), 1, 12, 10 ** 7, page=1)
    assert images.read(str(tmp_path / "one.png"), 1, 12, 10 ** 7)[1] == images.Notes(1, 0, 144)


def test_the_probe_looks_at_the_page_that_is_read(tmp_path):
    grey = Image.fromarray(np.full((20, 20), 90, np.uint8)).convert("RGB")
    grey.save(tmp_path / "a.tif", format="TIFF", save_all=True, append_images=[disc(RED, size=20)])
    assert images.probe([str(tmp_path / "a.tif")], 10 ** 7) == (1, 20)
    assert images.probe([str(tmp_path / "a.tif")], 10 ** 7, page=1) == (3, 20)


def test_the_endpoint_reads_the_page_its_model_was_trained_on(tmp_path):
    body = open(page_file(tmp_path / "three.tif", "TIFF"), "rb").read()
    for page, value in enumerate((40, 120, 200)):
        batch = inference.to_batch(inference.input_fn(body, "image/tiff"), 1, 12, page=page)
        assert batch[0, 0, 6, 6] == value
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "one.png")
    items = inference.input_fn((tmp_path / "one.png").read_bytes(), "image/png")  # page 0 is readable
    with pytest.raises(inference.InferenceError) as info:
        inference.to_batch(items, 1, 12, page=1)
    assert info.value.status_code == 400 and "has 1 page, so there is no page 1" in info.value.message


def test_the_page_is_saved_in_model_config_and_older_configs_read_page_0(tmp_path):
    config = model_config.build(architecture="smallcnn", classes=["a", "b"], in_channels=1, image_size=16,
                                mean=[0.5], std=[0.2], tta=False, hyperparameters={}, torch_version="2.6",
                                page=2)
    model_config.write(str(tmp_path), config)
    assert model_config.read(str(tmp_path))["page"] == 2
    del config["page"]
    model_config.write(str(tmp_path), config)
    assert model_config.read(str(tmp_path))["page"] == 0


# ---------------------------------------------------------------- float images with NaN or infinite pixels
def test_float_pixels_scale_by_the_finite_ones_nan_black_and_inf_white(tmp_path):
    arr = np.linspace(-1000.0, 3000.0, 64, dtype=np.float32).reshape(8, 8)
    arr[0, :3] = [np.nan, -np.inf, np.inf]
    Image.fromarray(arr).save(tmp_path / "f.tif")
    shown, notes = images.read(str(tmp_path / "f.tif"), 1, None, 10 ** 7)
    finite = np.isfinite(arr)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    expected = np.round((arr.astype(np.float64) - lo) * 255 / (hi - lo))
    np.testing.assert_array_equal(shown[:, :, 0][finite], expected[finite])
    assert shown[:, :, 0][finite].min() == 0 and shown[:, :, 0][finite].max() == 255  # the finite range is 0..255
    assert list(shown[0, :3, 0]) == [0, 0, 255] and notes == images.Notes(1, 3, 64)  # NaN, -inf, +inf
    np.testing.assert_array_equal(images.display(str(tmp_path / "f.tif"), 10 ** 7), shown[:, :, 0])


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_a_float_image_without_a_finite_pixel_is_unreadable_in_training_and_at_the_endpoint(tmp_path, fill):
    Image.fromarray(np.full((8, 8), fill, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(BadImageError, match="every one of its 64 pixels is NaN or infinite"):
        images.load(str(tmp_path / "f.tif"), 1, 8, 10 ** 7)
    x, y = loaders.ImageFileDataset([str(tmp_path / "f.tif")], [1], 1, 8, 10 ** 7)[0]
    assert not loaders.readable(y.reshape(1)) and loaders.skip_reason(y) == "no finite pixel"  # counted, with why
    with pytest.raises(inference.InferenceError) as info:
        inference.input_fn((tmp_path / "f.tif").read_bytes(), "image/tiff")
    assert info.value.status_code == 400 and "every one of its 64 pixels is NaN or infinite" in info.value.message


@pytest.mark.parametrize("values", [[-3e38, 0.0, 3e38], [0, 2 ** 31 - 1, 2 ** 31 - 2]])
def test_wide_ranges_are_scaled_not_overflowed_to_black(values):
    arr = np.array([values], dtype=np.float32 if isinstance(values[0], float) else np.int32)
    out = images.to_uint8(arr)
    assert out[0, 0] == 0 and out[0, 1] in (128, 255) and out.max() == 255, out


def test_a_uniform_image_stays_a_uniform_picture():
    assert images.to_uint8(np.full((4, 4), 700, np.uint16)).tolist() == [[0] * 4] * 4
    assert images.to_uint8(np.array([[5.0, 5.0, np.inf]], np.float32)).tolist() == [[0, 0, 255]]


# ---------------------------------------------------------------- each split says what it held, cached or streamed
def notes_files(folder):
    """A class folder of 3-page TIFFs, float TIFFs with a NaN, and plain PNGs."""
    os.makedirs(folder / "a", exist_ok=True)
    page_file(folder / "a" / "0.tif", "TIFF")
    page_file(folder / "a" / "1.tif", "TIFF")
    arr = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    arr[3, 3] = np.nan
    Image.fromarray(arr).save(folder / "a" / "2.tif")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a" / "3.png")
    return [str(folder / "a" / n) for n in ("0.tif", "1.tif", "2.tif", "3.png")], ["a/0.tif", "a/1.tif", "a/2.tif",
                                                                                  "a/3.png"]


@pytest.mark.parametrize("streamed", [False, True])
def test_each_split_says_its_multi_page_and_non_finite_images_once(tmp_path, caplog, streamed):
    paths, names = notes_files(tmp_path)
    dataset = loaders.ImageFileDataset(paths, [0] * 4, 1, 8, 10 ** 7, names=names, page=1)
    notes = loaders.PixelNotes("val", page=1)
    with caplog.at_level(logging.INFO, logger="train"):
        if streamed:  # DataLoader batches carry each item's notes back, as they carry the target -1
            split = loaders.StreamSplit(dataset, workers=0, pin_memory=False, notes=notes)
            for _ in range(2):  # said after the first pass only
                list(split.batches(range(4), 3, torch.device("cpu")))
        else:
            loaders.decode_all(dataset, workers=2, notes=notes)
            notes.say()
            notes.say()
    lines = [r.getMessage() for r in caplog.records if r.name == "train" and r.getMessage().startswith("val:")]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skipped) == (4 if streamed else 2)  # the float TIFF and the PNG have no page 1: read each pass
    assert all("has 1 page, so there is no page 1" in m for m in skipped), skipped
    assert lines == ["val: 2 of the 2 images read are multi-page or animated files, read at page 1 (e.g. a/0.tif "
                     "has 3 pages); the page hyperparameter chooses another"], lines
    dataset.page = notes.page = 0
    notes.__init__("val", 0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="train"):
        loaders.decode_all(dataset, workers=1, notes=notes)
        notes.say()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("val:")]
    assert lines == ["val: 2 of the 4 images read are multi-page or animated files, read at page 0 (e.g. a/0.tif "
                     "has 3 pages); the page hyperparameter chooses another",
                     "val: 1 of the 4 images read have NaN or infinite pixels, shown as black (NaN, -inf) or white "
                     "(+inf) beside their finite pixels' range (e.g. a/2.tif: 1 of 64 pixels)"], lines


# ---------------------------------------------------------------- the notebook's figures
def test_the_notebooks_figures_show_what_the_model_is_given(tmp_path):
    """plots.image_grid (the sample grid, the mistakes) draws a file as code/images.py decodes it: upright by its
    tag, the page asked for, 16-bit and float scaled with NaN black; loaded through medimg.container."""
    import matplotlib

    matplotlib.use("Agg")
    from medimg import plots

    upright = np.full((16, 24), 40, np.uint8)
    upright[:4] = 250  # the band is at the top as a viewer shows it
    (tmp_path / "turned.jpg").write_bytes(encoded(np.stack([STORE[6](upright)] * 3, -1), "JPEG",
                                                  exif=orientation_tag(6)))
    wide = (np.arange(24 * 16, dtype=np.uint16).reshape(16, 24) * 100)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(float_with_nonfinite(16)).save(tmp_path / "float.tif")
    page_file(tmp_path / "pages.tif", "TIFF")
    grids = {0: ["turned.jpg", "wide.png", "float.tif", "pages.tif"], 1: ["pages.tif"]}
    for page, names in grids.items():
        fig = plots.image_grid([(str(tmp_path / n), n) for n in names], cols=4, page=page)
        drawn = [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images]
        for name, arr in zip(names, drawn):
            np.testing.assert_array_equal(arr, images.display(str(tmp_path / name), 10 ** 7, page))
        if page == 0:
            turned, scaled, floats, first = drawn
            assert turned.shape == (16, 24) and turned[:4].min() > 200 and turned[6:].max() < 90  # upright, grey
            assert scaled.min() == 0 and scaled.max() == 255  # 16-bit by its own range
            assert list(floats[0, :4]) == [0, 0, 255, 0] and floats.max() == 255  # NaN, -inf black; +inf white
            assert first[6, 6] == 40
        else:
            assert drawn[0][6, 6] == 120  # page 1
        matplotlib.pyplot.close(fig)
