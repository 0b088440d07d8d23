"""Image files to pixels: the one decoder that training, evaluation and the endpoint share.

``decode`` turns any image Pillow opens (PNG, JPEG, TIFF, BMP, GIF, WebP; 1-, 8-, 16- or 32-bit, float,
palette, grey, RGB, RGBA, CMYK, ...) into a uint8 array at the model's channels and size, so that a file gives
the same pixels in train.py's evaluation and at the endpoint. ``open_image`` refuses images above a pixel limit
from the header, before decoding (decompression bombs).
"""
import warnings
from collections import Counter

import numpy as np
from PIL import Image

from errors import BadImageError, DataError, ImageTooLargeError

WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits per pixel, one channel
GRAY_MODES = {"1", "L", "LA", "La", "P", "PA", *WIDE_MODES}


def open_image(fp, max_pixels):
    """Open and load an image (a path or a file object) with a decompression-bomb guard.

    Returns a loaded ``PIL.Image``. Raises ImageTooLargeError above ``max_pixels`` (width x height, read from
    the header), BadImageError for anything Pillow cannot decode (corrupt, truncated, empty, not an image)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp)
            width, height = im.size
            if width * height > max_pixels:
                raise ImageTooLargeError(f"{width}x{height} pixels is above the limit of {max_pixels}")
            im.load()
            return im
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"too many pixels ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's ways of saying corrupt/truncated
        raise BadImageError(f"cannot decode ({type(exc).__name__}: {exc})") from exc


def to_uint8(arr):
    """Scale any integer or float array to uint8: 8-bit as is, wider ranges by their own min and max."""
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def holds_colour(im):
    """Whether an image's pixels are in colour (any mode but the one-channel ones), as its mode says."""
    return im.mode not in GRAY_MODES


def decode(im, channels, size):
    """A PIL image of any mode and bit depth -> uint8 array (size, size, channels), resized bilinearly with
    antialiasing. Grey from colour is Pillow's ITU-R 601-2 luma; alpha is dropped; 16-bit and float images are
    scaled by their own minimum and maximum."""
    if im.mode in WIDE_MODES:
        im = Image.fromarray(to_uint8(np.asarray(im)), mode="L")
    if channels == 1:
        im = im.convert("L")
    elif im.mode != "RGB":
        im = im.convert("RGBA").convert("RGB") if im.mode == "P" else im.convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
    arr = np.array(im, dtype=np.uint8)  # a writable copy
    return arr[:, :, None] if arr.ndim == 2 else arr


def load(path, channels, size, max_pixels):
    """Decode one file (see ``decode``); raises BadImageError / ImageTooLargeError."""
    with open_image(path, max_pixels) as im:
        return decode(im, channels, size)


def probe(paths, max_pixels, limit=256):
    """Look at up to ``limit`` evenly spread images: (channels 1 or 3, most common longer side in pixels).
    Unreadable files are skipped here (they are counted when decoded); raises DataError if none opens."""
    step = max(1, len(paths) // limit)
    colour, sizes = False, Counter()
    for path in paths[::step][:limit]:
        try:
            with Image.open(path) as im:
                colour |= holds_colour(im)
                sizes[max(im.size)] += 1
        except Exception:  # noqa: BLE001 - a bad file is counted when the data is decoded
            continue
    if not sizes:
        raise DataError("none of the sampled training images could be opened; check the files are images")
    return (3 if colour else 1), sizes.most_common(1)[0][0]
