"""One DICOM file -> pixels, as the standard says (the rules a user sees: medimg/dicom.py's docstring). pydicom
(2.4 or 3.x) is a client-side dependency only: code/ never imports it, and this module imports it when first used.

``read_dataset`` reads a file (DicomFileError for one that cannot be used), ``patient_id`` its PatientID (kept in
memory, never written), ``to_pixels`` decodes a frame: the modality LUT (PS3.3 C.11.1), the VOI LUT or window
(C.11.2; ``--window`` parsed by ``parse_window``), MONOCHROME1 inverted (C.7.6.3.1.2), colour as RGB, padding left
out of the range and shown black, scaled to 8 or 16 bits. A multi-frame file without a frame is a MultiFrameError.
"""
import contextlib
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np

from medimg.prepare_data import PrepareError

GREY = ("MONOCHROME1", "MONOCHROME2")


class DicomFileError(Exception):
    """One file that cannot be used (not readable, no pixel data, no decoder, unsupported layout): it is skipped
    and counted. The message is a short reason, without patient data."""


class MultiFrameError(Exception):
    """A multi-frame file met without ``--frame`` (or with a frame it does not have); fatal. ``frames``: its count."""

    def __init__(self, frames, message):
        super().__init__(message)
        self.frames = frames


# ==================================================================================================
# pydicom, 2.4 or 3.x (a client-side dependency only: code/ never imports it)
# ==================================================================================================
def load_pydicom():
    """The pydicom module and its pixel helpers ``{name: function}`` (pydicom.pixels in 3.x,
    pydicom.pixel_data_handlers.util in 2.x). Raises PrepareError when pydicom is not installed."""
    try:
        import pydicom
    except ImportError as exc:
        raise PrepareError("--dicom needs pydicom: pip install 'pydicom>=2.4' (the client side only; code/ does "
                           "not need it)") from exc
    names = ("apply_modality_lut", "apply_voi", "apply_windowing", "apply_color_lut", "convert_color_space")
    try:
        from pydicom import pixels as helpers  # pydicom >= 3

        funcs = {name: getattr(helpers, name) for name in names}
        funcs["pixel_array"] = helpers.pixel_array
    except (ImportError, AttributeError):
        from pydicom.pixel_data_handlers import util as helpers  # pydicom 2.x

        funcs = {name: getattr(helpers, name) for name in names}
        funcs["pixel_array"] = None
    return pydicom, funcs


# ==================================================================================================
# One file -> pixels
# ==================================================================================================
def parse_window(text):
    """``(center, width)`` floats from ``"CENTER,WIDTH"`` (e.g. ``"40,400"``); None for None. Raises PrepareError
    for anything else, or a width below 1 (a LINEAR window needs width >= 1, DICOM PS3.3 C.11.2.1.2.1)."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        center, width = (float(p) for p in parts)
    except ValueError:
        raise PrepareError(f"--window {text!r} must be CENTER,WIDTH, two numbers (e.g. 40,400)") from None
    if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
        raise PrepareError(f"--window {text!r}: the width must be a number >= 1 (DICOM PS3.3 C.11.2.1.2.1)")
    return center, width


def read_dataset(path):
    """The pydicom Dataset of the file at ``path``, pixel data included. A file without the DICOM preamble is read
    again leniently (``force=True``; older exports lack it). Raises DicomFileError when the file is missing, is not
    DICOM or has no pixel data."""
    pydicom, _ = load_pydicom()
    from pydicom.errors import InvalidDicomError

    if not os.path.isfile(path):
        raise DicomFileError("missing")
    with _quiet():
        try:
            try:
                ds = pydicom.dcmread(path)
            except InvalidDicomError:
                ds = pydicom.dcmread(path, force=True)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
            raise DicomFileError(f"not a readable DICOM file ({type(exc).__name__})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomFileError("not a DICOM image (no pixel data)")
    return ds


def number_of_frames(ds):
    """(0028,0008) Number of Frames, 1 when absent or empty."""
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def patient_id(ds):
    """The file's PatientID (0010,0020), stripped; None when absent or empty."""
    value = ds.get("PatientID")
    value = str(value).strip() if value is not None else ""
    return value or None


def to_pixels(ds, *, frame=None, window=None, bits=8):
    """The display pixels of one DICOM image: uint8 (``bits=8``) or uint16 (``bits=16``) of shape (H, W) for
    greyscale, uint8 (H, W, 3) RGB for colour.

    * Multi-frame files (Number of Frames > 1) need ``frame`` (0-based); a single-frame file ignores it.
    * Greyscale (MONOCHROME1/2): the modality LUT (PS3.3 C.11.1: Modality LUT Sequence, else RescaleSlope and
      RescaleIntercept), then the VOI LUT (PS3.3 C.11.2: the first VOI LUT Sequence item, else the first
      WindowCenter/WindowWidth with the file's VOI LUT Function), both with pydicom's own functions; ``window``
      ``(center, width)`` replaces the file's VOI LUT and window with a LINEAR window (C.11.2.1.2.1). The result is
      scaled to the full output range over the window's output range (the LUT's min..max entries for a VOI LUT),
      or over the image's own min..max when it has neither; MONOCHROME1 is then inverted (PS3.3 C.7.6.3.1.2: its
      minimum is white), so that dense is bright in every output. Padding pixels (``padding_mask``: Pixel Padding
      Value, and Range Limit, PS3.3 C.7.5.1.1.2) are left out of that min..max and are black in the output (with a
      window too, and after the inversion); a file of nothing but padding raises DicomFileError.
    * Colour: RGB kept; YBR_FULL/YBR_FULL_422 converted to RGB (PS3.3 C.7.6.3.1.2; JPEG 2000's YBR_ICT/YBR_RCT
      come out of the decoder as RGB); PALETTE COLOR mapped through its palette (C.7.6.3.1.5). Scaled from the
      nominal range (0..2**BitsStored-1, or the palette's entry depth) to 8 bits; ``window`` does not apply and
      the output is 8-bit whatever ``bits`` says (the caller warns).
    * Enhanced multi-frame files: the chosen frame's Pixel Value Transformation and Frame VOI LUT
      (Per-Frame, else Shared Functional Groups, PS3.3 C.7.6.16.2.9/.10) take the place of the top-level ones.

    ``ds`` may be changed (window attributes). Raises MultiFrameError for a multi-frame file without ``frame`` or
    with a frame out of range; DicomFileError when the pixel data cannot be decoded (a compressed transfer syntax
    without a decoder installed, a truncated file) or the layout is unsupported.
    """
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    _, px = load_pydicom()
    frames = number_of_frames(ds)
    if frames > 1 and frame is None:
        raise MultiFrameError(frames, f"is a multi-frame file ({frames} frames)")
    if frames > 1 and not 0 <= frame < frames:
        raise MultiFrameError(frames, f"has {frames} frames, so --frame {frame} is out of range (0..{frames - 1})")
    index = frame if frames > 1 else None
    if index is not None:
        _use_frame_groups(ds, index)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    with _quiet():
        arr, photometric = _decode(ds, index, photometric, px)
        if samples == 1 and photometric in GREY:
            return _grey(arr, ds, photometric, window, bits, px)
        if photometric == "PALETTE COLOR" and samples == 1:
            try:
                rgb = px["apply_color_lut"](arr, ds)
            except Exception as exc:  # noqa: BLE001
                raise DicomFileError(f"its palette cannot be applied ({type(exc).__name__})") from exc
            depth = 16 if rgb.dtype == np.uint16 else 8
            return _to_uint8(rgb, depth)
        if samples == 3 and photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
            if photometric != "RGB":
                arr = px["convert_color_space"](arr, photometric, "RGB")
            return _to_uint8(arr, int(ds.get("BitsStored") or 8))
    raise DicomFileError(f"unsupported photometric interpretation {photometric or '(none)'!r} with "
                         f"{samples} samples per pixel")


@contextlib.contextmanager
def _quiet():
    """pydicom's warnings and log records silenced: a damaged file is reported once, by the caller, in a line that
    names no patient (pydicom's messages may quote header values)."""
    logger = logging.getLogger("pydicom")
    disabled, logger.disabled = logger.disabled, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = disabled


def _decode(ds, index, photometric, px):
    """The stored pixel values of frame ``index`` (None: the only frame), and the colour space they are in."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        if px["pixel_array"] is not None:  # pydicom 3: one frame decoded, YBR_FULL(_422) converted to RGB
            arr = px["pixel_array"](ds, index=index)
            if photometric.startswith("YBR"):
                photometric = "RGB"
        else:  # pydicom 2: every frame; a decoder that converts colour says so in the dataset
            arr = ds.pixel_array
            arr = arr[index] if index is not None else arr
            photometric = str(ds.get("PhotometricInterpretation", photometric)).strip().upper()
            if photometric in ("YBR_ICT", "YBR_RCT"):
                photometric = "RGB"
    except Exception as exc:  # noqa: BLE001 - missing decoders raise RuntimeError/NotImplementedError, damage others
        if syntax is not None and getattr(syntax, "is_compressed", False):
            raise DicomFileError(f"compressed as {syntax.name!r} and no installed decoder could decode it (pip "
                                 "install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or python-gdcm)") from exc
        raise DicomFileError(f"its pixel data cannot be decoded ({type(exc).__name__})") from exc
    return np.asarray(arr), photometric


def _use_frame_groups(ds, index):
    """Enhanced multi-frame: copy the frame's rescale and window (Per-Frame Functional Groups item ``index``, else
    the Shared Functional Groups) to the top level, where the modality and VOI LUT functions read them."""
    macros = (("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
              ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")))
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):  # per-frame wins
        groups = ds.get(sequence)
        if not groups:
            continue
        group = groups[index] if sequence.startswith("PerFrame") and len(groups) > index else groups[0]
        for macro, keys in macros:
            items = group.get(macro)
            if items:
                for key in keys:
                    if items[0].get(key) not in (None, ""):
                        setattr(ds, key, items[0].get(key))


def _grey(arr, ds, photometric, window, bits, px):
    top = 2 ** bits - 1
    padding = padding_mask(arr, ds)
    if padding is not None and padding.all():
        raise DicomFileError("every pixel is Pixel Padding Value (0028,0120): there is no picture")
    try:
        values = px["apply_modality_lut"](arr, ds)
        if window is not None:  # --window: a LINEAR window instead of the file's VOI LUT and window
            if "VOILUTSequence" in ds:
                del ds.VOILUTSequence
            if "VOILUTFunction" in ds:
                del ds.VOILUTFunction
            ds.WindowCenter, ds.WindowWidth = format(window[0], ".10g"), format(window[1], ".10g")
        if window is None and ds.get("VOILUTSequence"):
            ints = np.rint(values).astype(np.int64) if not np.issubdtype(values.dtype, np.integer) else values
            out = px["apply_voi"](ints, ds, index=0).astype(np.float64)
            item = ds.VOILUTSequence[0]
            entries, first = int(item.LUTDescriptor[0]) or 2 ** 16, int(item.LUTDescriptor[1])
            lut = px["apply_voi"](np.arange(first, first + entries, dtype=np.int64), ds, index=0)
            low, high = float(np.min(lut)), float(np.max(lut))
        elif _has_window(ds):
            out = px["apply_windowing"](np.array(values, dtype=np.float64), ds, index=0)
            center, width = _first(ds.WindowCenter), abs(_first(ds.WindowWidth))
            probe = np.array([center - 1000 * width - 1, center + 1000 * width + 1], dtype=np.float64)
            low, high = px["apply_windowing"](probe, ds, index=0)  # the window's output for black and white
        else:
            out = np.asarray(values, dtype=np.float64)
            real = out if padding is None else out[~padding]  # padding is not part of the picture's range
            low, high = float(real.min()), float(real.max())
    except Exception as exc:  # noqa: BLE001 - a broken LUT or window in the file
        raise DicomFileError(f"its modality or VOI LUT cannot be applied ({type(exc).__name__}: {exc})") from exc
    if high == low:
        scaled = np.zeros(out.shape, dtype=np.float64)
    else:
        scaled = np.clip((out - low) / (high - low), 0.0, 1.0)
    result = np.rint(scaled * top).astype(np.uint8 if bits == 8 else np.uint16)
    if photometric == "MONOCHROME1":
        result = (top - result).astype(result.dtype)  # exact inverse, after rounding
    if padding is not None:
        result[padding] = 0  # outside the scanned area: black, whatever the window or the inversion
    return result


def padding_mask(arr, ds):
    """Which stored pixels are padding (True), or None when the file declares none: Pixel Padding Value
    (0028,0120), and with Pixel Padding Range Limit (0028,0121) every stored value between the two, inclusive
    (PS3.3 C.7.5.1.1.2). Both are stored values (before the modality LUT), US or SS as Pixel Representation says;
    a value written as the other (a 16-bit pattern) is read as the pixels are."""
    value = _stored_value(ds, "PixelPaddingValue")
    if value is None:
        return None
    limit = _stored_value(ds, "PixelPaddingRangeLimit")
    if limit is None:
        return arr == value
    return (arr >= min(value, limit)) & (arr <= max(value, limit))


def _stored_value(ds, keyword):
    """A US-or-SS attribute as a stored pixel value (Pixel Representation's sign), or None when absent or empty."""
    raw = ds.get(keyword)
    if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)):
        raw = raw[0] if len(raw) else None
    if raw is None or raw == "" or raw == b"":
        return None
    if isinstance(raw, bytes):  # an ambiguous US/SS element left as bytes: the file's byte order
        raw = int.from_bytes(raw[:2], "little" if getattr(ds, "is_little_endian", True) is not False else "big")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise DicomFileError(f"its {keyword} {raw!r} is not a whole number") from None
    allocated = int(ds.get("BitsAllocated") or 16)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    if signed and value >= 2 ** (allocated - 1):  # SS written as US: the same 16-bit pattern
        value -= 2 ** allocated
    elif not signed and value < 0:  # US written as SS
        value += 2 ** allocated
    return value


def _has_window(ds):
    return ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, "")


def _first(value):
    """The first value of a DS element that may hold several (VM 1-n)."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return float(value[0])
    return float(value)


def _to_uint8(arr, depth):
    arr = np.asarray(arr)
    if depth <= 8 and arr.dtype == np.uint8:
        return arr
    top = float(2 ** max(depth, 1) - 1)
    return np.rint(np.clip(arr.astype(np.float64) / top, 0.0, 1.0) * 255).astype(np.uint8)
