"""Image files to pixels: the one decoder that training, evaluation and the endpoint share.

``decode`` turns any image Pillow opens (PNG, JPEG, TIFF, BMP, GIF, WebP; 1-, 8-, 16- or 32-bit, float,
palette, grey, RGB, RGBA, CMYK, ...) into a uint8 array at the model's channels and size, so that a file gives
the same pixels in train.py's evaluation and at the endpoint. ``open_image`` refuses images above a pixel limit
from the header, before decoding (decompression bombs).
"""
from collections import Counter

import numpy as np
from PIL import Image, UnidentifiedImageError

from errors import BadImageError, DataError, ImageTooLargeError

WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits per pixel, one channel
GRAY_MODES = {"1", "L", "LA", "La", *WIDE_MODES}  # one channel by construction; every other mode is looked at
# what train.py reads (layout.IMAGE_EXTENSIONS) and the endpoint accepts; nothing else is even tried (Pillow's EPS
# plugin, for one, would start Ghostscript on untrusted bytes)
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
COLOUR_SPREAD = 8        # a pixel is coloured when its channels differ by more than this (0..255): JPEG noise is less
COLOUR_FRACTION = 0.001  # and an image is in colour when more than this fraction of its pixels is
COLOUR_SAMPLE = 256      # the check looks at the image scaled down to at most this many pixels a side


def open_image(fp, max_pixels):
    """Open and load an image (a path or a file object) of one of FORMATS, with a decompression-bomb guard.

    Returns a loaded ``PIL.Image``. Raises ImageTooLargeError above ``max_pixels`` (width x height, read from
    the header, before anything is decoded), BadImageError for anything else Pillow cannot decode (corrupt,
    truncated, empty, not an image, another format). ``max_pixels`` is the one limit: Pillow's own check
    (``Image.MAX_IMAGE_PIXELS``, a process-wide setting: a warning above 89 Mpx, an error above 179 Mpx) is turned
    off, or it would refuse what the user allowed, with another message, depending on what ran before."""
    try:
        im = open_header(fp)
        try:
            check_pixels(im, max_pixels)
            im.load()
        except BaseException:
            im.close()
            raise
        return im
    except BadImageError:
        raise
    except UnidentifiedImageError as exc:  # its text names a file object's address: not for a reader
        raise BadImageError("cannot decode: no image format that Pillow reads was found in it") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's ways of saying corrupt/truncated
        raise BadImageError(f"cannot decode ({type(exc).__name__}: {exc})") from exc


def open_header(fp):
    """``Image.open`` of FORMATS only (the header is read, nothing decoded), with Pillow's own pixel limit off."""
    Image.MAX_IMAGE_PIXELS = None
    return Image.open(fp, formats=FORMATS)


def check_pixels(im, max_pixels):
    """Raise ImageTooLargeError when an opened (not yet decoded) image has more than ``max_pixels`` pixels."""
    width, height = im.size
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{width}x{height} pixels is above the limit of {max_pixels}")


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
    antialiasing. Grey from colour is Pillow's ITU-R 601-2 luma; alpha is dropped; 16-bit and float images are
    scaled by their own minimum and maximum."""
    if im.mode in WIDE_MODES:
        im = Image.fromarray(to_uint8(np.asarray(im)), mode="L")
    if channels == 1:
        im = im.convert("L")
    elif im.mode != "RGB":
        im = _to_rgb(im)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
    arr = np.array(im, dtype=np.uint8)  # a writable copy
    return arr[:, :, None] if arr.ndim == 2 else arr


def load(path, channels, size, max_pixels):
    """Decode one file (see ``decode``); raises BadImageError / ImageTooLargeError."""
    with open_image(path, max_pixels) as im:
        return decode(im, channels, size)


def probe(paths, max_pixels, limit=256):
    """Look at up to ``limit`` evenly spread images: (channels 3 if any holds colour (``holds_colour``) else 1,
    most common longer side in pixels). Unreadable files are skipped here (they are counted when decoded);
    raises DataError if none opens."""
    step = max(1, len(paths) // limit)
    colour, sizes = False, Counter()
    for path in paths[::step][:limit]:
        try:
            with open_header(path) as im:
                check_pixels(im, max_pixels)  # before holds_colour decodes it
                sizes[max(im.size)] += 1
                colour = colour or holds_colour(im)
        except Exception:  # noqa: BLE001 - a bad file is counted when the data is decoded
            continue
    if not sizes:
        raise DataError("none of the sampled training images could be opened; check the files are images")
    return (3 if colour else 1), sizes.most_common(1)[0][0]
