"""Image files to pixels: the one decoder that training, evaluation, the endpoint and the notebook's figures share.

``open_image`` gives a file's picture as a viewer shows it: the chosen page of a multi-page or animated file
(``page``, 0-based), with its EXIF orientation applied (tag 0x0112, all eight values, as Pillow's
``ImageOps.exif_transpose``: JPEG and WebP EXIF, PNG eXIf, TIFF tag 274), refusing images above a pixel limit
from the header, before decoding (decompression bombs), and float images with no finite pixel. ``decode`` turns
any image Pillow opens (PNG, JPEG, TIFF, BMP, GIF, WebP; 1-, 8-, 16- or 32-bit, float, palette, grey, RGB, RGBA,
CMYK, ...) into a uint8 array at the model's channels and size, so that a file gives the same pixels in
train.py's evaluation and at the endpoint; ``display`` gives the same picture at the file's own size.
"""
import os
from collections import Counter
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from errors import BadImageError, DataError, ImageTooLargeError

WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits per pixel, one channel
GRAY_MODES = {"1", "L", "LA", "La", *WIDE_MODES}  # one channel by construction; every other mode is looked at
# what train.py reads (layout.IMAGE_EXTENSIONS) and the endpoint accepts; nothing else is even tried (Pillow's EPS
# plugin, for one, would start Ghostscript on untrusted bytes)
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
AUTO_MAX_SIZE = 224  # image-size auto: the most common side, at most this (data.image_size; prepare_data --shards)
COLOUR_SPREAD = 8        # a pixel is coloured when its channels differ by more than this (0..255): JPEG noise is less
COLOUR_FRACTION = 0.001  # and an image is in colour when more than this fraction of its pixels is
COLOUR_SAMPLE = 256      # the check looks at the image scaled down to at most this many pixels a side
ORIENTATION_TAG = 0x0112  # EXIF Orientation (TIFF tag 274): how the stored pixels are turned for display
# orientation value -> the transposition that shows the stored pixels upright, as ImageOps.exif_transpose does
# (1 and anything else: as stored, as viewers do)
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


# why an image is skipped, as metrics.json's ``skipped`` says it (loaders.py, and prepare_data --shards' records)
SKIP_REASONS = ("cannot decode", "above max-image-pixels", "no such page", "no finite pixel")
# the words of a BadImageError's message (below) that say its reason; anything else: "cannot decode"
_REASON_WORDS = (("there is no page", "no such page"), ("NaN or infinite", "no finite pixel"))


def bad_image_reason(exc):
    """The reason (SKIP_REASONS) for a BadImageError raised here."""
    if isinstance(exc, ImageTooLargeError):
        return "above max-image-pixels"
    return next((r for words, r in _REASON_WORDS if words in str(exc)), "cannot decode")


class Notes(NamedTuple):
    """What a file held beyond one plain picture: how many pages (frames) it has, and how many of the chosen
    page's pixels are NaN or infinite (of ``pixels``)."""
    pages: int = 1
    nonfinite: int = 0
    pixels: int = 0


def open_image(fp, max_pixels, page=0):
    """Open and load an image (a path or a file object) of one of FORMATS as a viewer shows it, with a
    decompression-bomb guard.

    Returns a loaded ``PIL.Image``: page ``page`` (0-based) of a multi-page or animated file, its EXIF orientation
    applied (``upright``). Raises ImageTooLargeError above ``max_pixels`` (width x height, read from the header,
    before anything is decoded), BadImageError for a file without that page, a float image without one finite
    pixel, and anything else Pillow cannot decode (corrupt, truncated, empty, not an image, another format).
    ``max_pixels`` is the one limit: Pillow's own check (``Image.MAX_IMAGE_PIXELS``, a process-wide setting: a
    warning above 89 Mpx, an error above 179 Mpx) is turned off, or it would refuse what the user allowed, with
    another message, depending on what ran before."""
    return open_with_notes(fp, max_pixels, page)[0]


def open_with_notes(fp, max_pixels, page=0):
    """``open_image`` and the file's Notes (pages, non-finite pixels)."""
    try:
        if isinstance(fp, (str, os.PathLike)):
            with open_file(fp) as fh:
                return _open_loaded(fh, max_pixels, page)
        return _open_loaded(fp, max_pixels, page)
    except BadImageError:
        raise
    except UnidentifiedImageError as exc:  # its text names a file object's address: not for a reader
        raise BadImageError("cannot decode: no image format that Pillow reads was found in it") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's ways of saying corrupt/truncated
        raise BadImageError(f"cannot decode ({type(exc).__name__}: {exc})") from exc


def open_file(path):
    """A path's file, to hand to ``Image.open`` instead of the path: Pillow memory-maps an uncompressed file it opens
    by path, and (Pillow 13) its TIFF reader then turns a mapped image of orientation 5..8 into scrambled pixels of
    the stored size; from a file object it reads, and turns, correctly."""
    return open(path, "rb")


def _open_loaded(fp, max_pixels, page):
    im = open_header(fp)
    try:
        check_pixels(im, max_pixels)
        pages = seek_page(im, page)
        check_pixels(im, max_pixels)  # a page of its own size
        im.load()
        shown = upright(im)
    except BaseException:
        im.close()
        raise
    if shown is not im:  # a turned copy: close the file Pillow opened (a path's), never a caller's file object
        with im:
            pass
    try:
        return shown, Notes(pages, count_nonfinite(shown), shown.width * shown.height)
    except BaseException:
        shown.close()
        raise


def open_header(fp):
    """``Image.open`` of FORMATS only (the header is read, nothing decoded), with Pillow's own pixel limit off."""
    Image.MAX_IMAGE_PIXELS = None
    return Image.open(fp, formats=FORMATS)


def seek_page(im, page):
    """Go to page ``page`` (0-based) of an opened multi-page TIFF or animated GIF/WebP/PNG (a no-op for 0); returns
    how many pages the file has. Raises BadImageError when it has no such page."""
    pages = getattr(im, "n_frames", 1)
    if page >= pages:
        raise BadImageError(f"has {pages} page{'s' if pages != 1 else ''}, so there is no page {page} (pages count "
                            "from 0: the page hyperparameter)")
    if page:
        im.seek(page)
    return pages


def upright(im):
    """A loaded image as a viewer shows it: its EXIF orientation (2..8, mirrored ones too) applied; the image itself
    when it has none. Pillow's TIFF reader applies a TIFF's own tag when it loads the image and drops it, so a TIFF
    is not turned twice. A damaged EXIF block is read as no orientation, as viewers do."""
    try:
        orientation = im.getexif().get(ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - Pillow's ways of failing on a malformed EXIF block vary by version
        return im
    method = ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None
    return im if method is None else im.transpose(method)


def count_nonfinite(im):
    """How many pixels of a float ("F") image are NaN or infinite (0 for other modes); BadImageError when every one
    is: there is no picture to show."""
    if im.mode != "F":
        return 0
    arr = np.asarray(im)
    nonfinite = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if arr.size and nonfinite == arr.size:
        raise BadImageError(f"every one of its {arr.size} pixels is NaN or infinite, so there is no picture")
    return nonfinite


def check_pixels(im, max_pixels):
    """Raise ImageTooLargeError when an opened (not yet decoded) image has more than ``max_pixels`` pixels."""
    width, height = im.size
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{width}x{height} pixels is above the limit of {max_pixels}")


def to_uint8(arr):
    """Scale any integer or float array to uint8: 8-bit as is, wider ranges by the min and max of their finite
    values; NaN and -inf become the darkest value (0), +inf the brightest (255); a uniform image is uniformly
    black. BadImageError when no value is finite."""
    if arr.dtype == np.uint8:
        return arr
    top = None
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            if not finite.any():
                raise BadImageError(f"every one of its {arr.size} pixels is NaN or infinite, so there is no picture")
            top = np.isposinf(arr)
            arr = np.where(finite, arr, arr[finite].min())
    # float64 where float32 would round the values (32-bit integers) or overflow (float32 near its limits)
    work = np.float32 if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2 else np.float64
    arr = arr.astype(work)
    lo, hi = float(arr.min()), float(arr.max())
    out = np.zeros(arr.shape, dtype=np.uint8)
    if hi > lo:
        out = np.round((arr - work(lo)) * work(255.0 / (hi - lo))).astype(np.uint8)
    if top is not None:
        out[top] = 255
    return out


def holds_colour(im):
    """Whether an image's pixels are in colour: what the file holds, not what its mode allows.

    One-channel modes are grey. Every other mode (RGB, RGBA, palette, CMYK, YCbCr, ...) is converted to RGB, as
    ``decode`` would, at most COLOUR_SAMPLE pixels a side (nearest neighbour: no new colours), and is in colour
    when more than COLOUR_FRACTION of its pixels have channels more than COLOUR_SPREAD apart. So a palette PNG of
    red and green discs is colour, and an RGB JPEG of a grey X-ray is grey."""
    if im.mode in GRAY_MODES:
        return False
    small = im.copy()
    small.thumbnail((COLOUR_SAMPLE, COLOUR_SAMPLE), Image.NEAREST)
    rgb = np.asarray(_to_rgb(small), dtype=np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return bool((spread > COLOUR_SPREAD).mean() > COLOUR_FRACTION)


def _to_rgb(im):
    """RGB as ``decode`` makes it: palette through RGBA (transparency resolved), alpha dropped."""
    return im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA") else im.convert("RGB")


def decode(im, channels, size):
    """A PIL image of any mode and bit depth -> uint8 array (size, size, channels), resized bilinearly with
    antialiasing (``size`` None: the image's own size). Grey from colour is Pillow's ITU-R 601-2 luma; alpha is
    dropped; 16-bit and float images are scaled by their own minimum and maximum (``to_uint8``)."""
    if im.mode in WIDE_MODES:
        im = Image.fromarray(to_uint8(np.asarray(im)), mode="L")
    if channels == 1:
        im = im.convert("L")
    elif im.mode != "RGB":
        im = _to_rgb(im)
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
    arr = np.array(im, dtype=np.uint8)  # a writable copy
    return arr[:, :, None] if arr.ndim == 2 else arr


def load(path, channels, size, max_pixels, page=0):
    """Decode one file (see ``open_image`` and ``decode``); raises BadImageError / ImageTooLargeError."""
    return read(path, channels, size, max_pixels, page)[0]


def read(path, channels, size, max_pixels, page=0):
    """``load`` and the file's Notes: (uint8 array, Notes)."""
    im, notes = open_with_notes(path, max_pixels, page)
    with im:
        return decode(im, channels, size), notes


def display(fp, max_pixels, page=0):
    """What the model's decoder makes of a file, at the file's own size, for a figure: uint8 (H, W) when its pixels
    are grey, (H, W, 3) when they hold colour (``holds_colour``); the page and orientation of ``open_image``, 16-bit
    and float scaled as ``decode`` scales them."""
    with open_image(fp, max_pixels, page) as im:
        arr = decode(im, 3 if holds_colour(im) else 1, None)
    return arr[:, :, 0] if arr.shape[-1] == 1 else arr


def probe(paths, max_pixels, limit=256, page=0):
    """Look at page ``page`` of up to ``limit`` evenly spread images: (channels 3 if any holds colour
    (``holds_colour``) else 1, most common longer side in pixels: an orientation turns the picture, not its longer
    side). Unreadable files are skipped here (they are counted when decoded); raises DataError if none opens."""
    step = max(1, len(paths) // limit)
    colour, sizes = False, Counter()
    for path in paths[::step][:limit]:
        try:
            with open_file(path) as fh, open_header(fh) as im:
                check_pixels(im, max_pixels)
                seek_page(im, page)
                check_pixels(im, max_pixels)  # before holds_colour decodes it
                sizes[max(im.size)] += 1
                colour = colour or holds_colour(im)
        except Exception:  # noqa: BLE001 - a bad file is counted when the data is decoded
            continue
    if not sizes:
        raise DataError("none of the sampled training images could be opened; check the files are images")
    return (3 if colour else 1), sizes.most_common(1)[0][0]
