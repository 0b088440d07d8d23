"""DICOM in: a tree of DICOM files plus a CSV of labels -> manifest channels of PNGs (``prepare_data.py --dicom``).

    python scripts/prepare_data.py --dicom pacs_export/ --labels labels.csv --out data/cxr
    python scripts/prepare_data.py --dicom ct/ --labels ct.csv --out data/ct --window 40,400 --bits 16
    python scripts/prepare_data.py --dicom us/ --labels us.csv --out data/us --frame 0   # multi-frame files

The CSV (UTF-8, a header row): a ``file`` column (a path relative to the DICOM folder, ``/`` between folders), then
either one ``label`` column (class names: single-label) or one 0/1 column per finding (multi-label), and optionally a
``split`` column (``train``/``val``/``test`` or the aliases of code/layout.py's CHANNEL_ROLES: ``training``,
``validation``, ``valid``, ``testing``). Patients come from each file's DICOM PatientID (0010,0020), never from the
CSV, so the CSV may not have a ``patient_id`` column.

Pixels, per file (``to_pixels``): the modality LUT (Modality LUT Sequence or RescaleSlope/RescaleIntercept,
DICOM PS3.3 C.11.1), then the VOI LUT (VOI LUT Sequence, else the first WindowCenter/WindowWidth, PS3.3 C.11.2;
``--window CENTER,WIDTH`` replaces both, as a LINEAR window), MONOCHROME1 inverted so that bright is dense as in
MONOCHROME2 (PS3.3 C.7.6.3.1.2), colour (RGB, YBR_*, PALETTE COLOR) kept as RGB; scaled to 8 bits (or 16 with
``--bits 16``; greyscale only, as PNG has no 16-bit RGB that Pillow writes) over the window's output range, or the
image's own min..max when it has no window. Padding (Pixel Padding Value (0028,0120), up to Pixel Padding Range
Limit (0028,0121): the area outside a CT's scan circle, say) is left out of that min..max and shown black.

Privacy: output images are named by their index in the split (``images/<n>.png``, numbered in CSV order), and
labels.csv's ``patient_id`` is a salted hash of the PatientID (the first 16 hex digits of sha256(salt + PatientID),
with a random salt made for this conversion and written nowhere). No PatientID, name, accession number or source
file name is written to OUT or printed anywhere: a bad or multi-frame file is named by its line in the labels CSV
(a PACS path may hold a patient's name), and CSV errors name the line, not the file.

Splits: the ``split`` column when the CSV has one (``--hold-out-test F`` then holds a test split out of train when
no row is ``test``). Otherwise by patient (code/splits.py's ``split_indices`` with the hashed PatientIDs as groups,
stratified as far as the patients allow): ``--val-fraction`` of the images to val and as much (or
``--hold-out-test``) to test, whole patients each; a file without a PatientID is a patient of its own (a warning
says how many). All pixels are held in memory until everything has been checked; nothing is written to OUT before.
"""
import contextlib
import csv
import hashlib
import io
import logging
import os
import secrets
import shutil
import sys
import warnings
from collections.abc import Sequence

import numpy as np

from medimg import prepare_data
from medimg.container import layout, splits as split_rules
from medimg.prepare_data import PrepareError, Split
from medimg.progress import progress

FILE_COLUMN, SPLIT_COLUMN = "file", "split"
MAX_BAD_FRACTION = 0.10  # more bad files than this (of those listed) fails the conversion
NAMES_SHOWN = 5  # bad or multi-frame files named in one line
GREY = ("MONOCHROME1", "MONOCHROME2")
HASH_HEX = 16


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
def _pydicom():
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
    pydicom, _ = _pydicom()
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
    _, px = _pydicom()
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


# ==================================================================================================
# The CSV
# ==================================================================================================
class LabelTable:
    """A parsed labels CSV. ``files`` (relative paths), ``lines`` (CSV line numbers), ``kind`` "single" or "multi",
    ``classes`` (class or finding names, index order), ``targets`` (class index, or tuple of 0/1 per finding in
    ``classes`` order), ``splits`` (``train``/``val``/``test`` per row, or None without a split column),
    ``warnings`` (lines for the user: labels spelt more than one way)."""

    def __init__(self, path, kind, classes, files, lines, targets, splits):
        self.path, self.kind, self.classes = path, kind, classes
        self.files, self.lines, self.targets, self.splits = files, lines, targets, splits
        self.warnings = []


def read_labels(path, label_dict=None):
    """Parse the labels CSV at ``path`` (see the module docstring). ``label_dict``: class (finding) names in index
    order, from ``--label-dict``; they must name every label (the finding columns, in any order: the output
    follows the label dict's). Without it: the sorted label names, or the finding columns in CSV order.
    Raises PrepareError, naming the line (not the file, whose name may hold a patient id), for: no header or
    ``file`` column, a ``patient_id`` column, a ``label`` column beside finding columns, no label columns, an
    empty, absolute or climbing (``..``) path, a file listed twice, an empty label, a finding value other than 0/1,
    an empty or unknown split, too many fields, no rows."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(io.StringIO(fh.read())))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PrepareError(f"cannot read --labels {path} as a UTF-8 CSV file ({exc})") from exc
    header = [h.strip() for h in rows[0]] if rows else []
    file_col, split_col, columns, kind = _header(path, header)
    names = [header[i] for i in columns]
    files, lines, raw_targets, split_of, seen = [], [], [], [] if split_col is not None else None, {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            raise PrepareError(f"{path} line {line} has {len(row)} fields for {len(header)} columns; quote a value "
                               'that holds a comma ("normal, benign")')
        row = [cell.strip() for cell in row] + [""] * (len(header) - len(row))
        name = row[file_col]
        if not layout.is_relative_path(name):
            raise PrepareError(f"{path} line {line}: the {FILE_COLUMN} must be a path relative to the DICOM folder, "
                               "with / between folders (no leading /, no ..)")
        if name in seen:
            raise PrepareError(f"{path} lines {seen[name]} and {line} list the same file; list each file once")
        seen[name] = line
        raw_targets.append(_row_target(path, line, kind, names, [row[i] for i in columns]))
        if split_col is not None:
            role = layout.channel_role(row[split_col]) if row[split_col] else None
            if role not in layout.CHANNEL_ROLES:
                allowed = sorted(n for names_ in layout.CHANNEL_ROLES.values() for n in names_)
                raise PrepareError(f"{path} line {line}: split {row[split_col]!r} is not one of {allowed}")
            split_of.append(role)
        files.append(name)
        lines.append(line)
    if not files:
        raise PrepareError(f"{path} lists no files")
    classes, targets, spelt = _classes(path, kind, names, raw_targets, label_dict)
    table = LabelTable(path, kind, classes, files, lines, targets, split_of)
    table.warnings = spelt
    return table


def _header(path, header):
    """``(file column, split column or None, label columns, kind)`` of a header row; raises PrepareError."""
    lowered = [h.lower() for h in header]
    if FILE_COLUMN not in lowered:
        raise PrepareError(f"{path} must start with a header row with a {FILE_COLUMN!r} column (got {header[:4]}); "
                           "e.g. file,label[,split] or file,finding_a,finding_b[,split]")
    if layout.PATIENT_COLUMN in lowered:
        raise PrepareError(f"{path} has a {layout.PATIENT_COLUMN!r} column: patients come from each file's DICOM "
                           "PatientID tag (and are written as salted hashes); drop the column")
    file_col = lowered.index(FILE_COLUMN)
    split_col = lowered.index(SPLIT_COLUMN) if SPLIT_COLUMN in lowered else None
    columns = [i for i in range(len(header)) if i not in (file_col, split_col)]
    names = [header[i] for i in columns]
    if not columns:
        raise PrepareError(f"{path} has no label columns; add {layout.LABEL_COLUMN!r} or one 0/1 column per finding")
    if layout.LABEL_COLUMN in [n.lower() for n in names] and len(names) > 1:
        raise PrepareError(f"{path} has a {layout.LABEL_COLUMN!r} column beside other columns {names}: use either "
                           f"{layout.LABEL_COLUMN!r} (one class per image) or one 0/1 column per finding")
    if len(set(names)) != len(names) or any(not n for n in names):
        raise PrepareError(f"{path} has empty or repeated column names {names}")
    return file_col, split_col, columns, "single" if [n.lower() for n in names] == [layout.LABEL_COLUMN] else "multi"


def _row_target(path, line, kind, names, cells):
    """A row's label (single) or tuple of 0/1 (multi, in column order); raises PrepareError naming the line."""
    if kind == "single":
        if not cells[0]:
            raise PrepareError(f"{path} line {line} has no label")
        return cells[0]
    bad = [(names[k], c) for k, c in enumerate(cells) if c not in ("0", "1")]
    if bad:
        raise PrepareError(f"{path} line {line}: {bad[0][0]}={bad[0][1]!r}; finding values must be 0 or 1")
    return tuple(int(c) for c in cells)


def _classes(path, kind, names, raw_targets, label_dict):
    """(classes, targets, warnings): labels (and finding columns) name classes by train.py's one rule
    (layout.class_matcher: ignoring case, in their folder form); without --label-dict a class is named by its
    most frequent spelling (layout.class_spellings), and other spellings are a warning."""
    written = raw_targets if kind == "single" else names
    if label_dict is not None:
        classes = list(label_dict)
    else:
        classes = layout.class_spellings(raw_targets) if kind == "single" else list(names)
    _check_names(path, classes)
    lookup = layout.class_matcher(classes)
    found = [lookup(name) for name in written]
    if kind == "single" and None in found:
        raise PrepareError(f"{path} has the label {written[found.index(None)]!r} that --label-dict {classes} does "
                           "not name; add it there or fix the CSV")
    if kind == "multi" and (None in found or sorted(found) != list(range(len(classes)))):
        raise PrepareError(f"{path} has the finding columns {names}, but --label-dict names {classes}; give one "
                           "name per finding column (in any order, compared ignoring case)")
    others = layout.other_spellings(written, classes, lookup)
    warnings_ = [f"{path} spells {'class' if kind == 'single' else 'finding'} "
                 f"{layout.describe_spellings(others, 'rows' if kind == 'single' else 'columns')}: the same "
                 f"{'class' if kind == 'single' else 'finding'}, as train.py compares names (ignoring case)"] \
        if others else []
    if kind == "single":
        return classes, found, warnings_
    order = [found.index(k) for k in range(len(classes))]
    return classes, [tuple(row[k] for k in order) for row in raw_targets], warnings_


def _check_names(path, classes):
    try:
        layout.parse_label_dict(layout.label_dict_json(classes), source=f"the class names of {path}", minimum=1)
    except layout.LayoutError as exc:
        raise PrepareError(str(exc)) from exc


# ==================================================================================================
# Patients and splits
# ==================================================================================================
def patient_hasher(salt=None):
    """A function PatientID -> 16 hex digits of sha256(salt + PatientID). ``salt``: default a fresh random one
    (secrets.token_hex(16)) that the caller must not write anywhere, so the hashes cannot be traced back by
    hashing guessed ids; the same id gives the same hash within one conversion only."""
    salt = secrets.token_hex(16) if salt is None else salt

    def digest(value):
        return hashlib.sha256((salt + value).encode("utf-8")).hexdigest()[:HASH_HEX]

    return digest


def split_by_patient(targets, groups, val_fraction, test_fraction, seed):
    """``{"train": indices, "val": indices, "test": indices}``: whole groups (patients) to each side, stratified as
    far as the groups allow (code/splits.py's ``split_indices``). About ``test_fraction`` of the samples go to test,
    then ``val_fraction`` (of all samples) to val. ``targets``: class indices, or tuples of finding indices.
    Raises PrepareError when the fractions leave nothing for train."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1) or val_fraction + test_fraction >= 1:
        raise PrepareError(f"--val-fraction {val_fraction} and the test fraction {test_fraction} must each be "
                           "between 0 and 1 and leave some patients for train")
    rest, test = split_rules.split_indices(targets, test_fraction, seed, groups=groups)
    kept, val = split_rules.split_indices([targets[i] for i in rest], val_fraction / (1 - test_fraction), seed,
                                          groups=[groups[i] for i in rest])
    return {"train": [rest[i] for i in kept], "val": [rest[i] for i in val], "test": test}


# ==================================================================================================
# The conversion
# ==================================================================================================
def convert(dicom_dir, labels_csv, out, *, label_dict=None, window=None, bits=8, frame=None, val_fraction=0.1,
            hold_out_test=None, seed=0, log=print, warn=None):
    """Convert the files that ``labels_csv`` lists under ``dicom_dir`` into manifest channels under ``out``
    (``prepare_data.write_splits(..., manifest=True)``: ``<split>/images/<n>.png``, ``<split>/labels.csv`` with a
    hashed ``patient_id``, ``label_dict.json``). ``label_dict``: names in index order or None; ``window``:
    ``(center, width)`` or None; ``frame``: 0-based frame of multi-frame files or None. ``log`` gets the summary
    lines, ``warn`` (default: stderr) the warnings - only once every check has passed.

    Returns ``{split: (images, {class: images or finding: positives}, patients)}``. Raises PrepareError (one line)
    for a bad CSV, a multi-frame file without ``frame``, more than MAX_BAD_FRACTION of the listed files bad (or
    all of them), a non-empty ``out``, or a split left empty that cannot be; ``out`` is then left as it was.
    """
    warn = warn or (lambda line: print(f"prepare_data: warning: {line}", file=sys.stderr))
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise PrepareError(f"{out} is not an empty folder; give a new one (nothing was written)")
    if not os.path.isdir(dicom_dir):
        raise PrepareError(f"--dicom {dicom_dir} is not a folder")
    if bits not in (8, 16):
        raise PrepareError(f"--bits must be 8 or 16, got {bits}")
    if frame is not None and frame < 0:
        raise PrepareError(f"--frame {frame}: frames are numbered from 0")
    table = read_labels(labels_csv, label_dict)
    digest = patient_hasher()
    loaded = _read_all(table, dicom_dir, frame=frame, window=window, bits=bits)
    warnings_ = table.warnings + _check_files(loaded, len(table.files), labels_csv)
    keep = loaded.keep
    no_id = sum(p is None for p in loaded.pids)
    patients = [digest(p) if p is not None else digest(f"\0file {keep[k]}") for k, p in enumerate(loaded.pids)]
    colour = sum(image.ndim == 3 for image in loaded.images)
    if colour and bits == 16:
        warnings_.append(f"{colour} colour images were written with 8 bits per channel (--bits 16 applies to "
                         "greyscale; PNG writers here have no 16-bit colour)")
    if colour and window is not None:
        warnings_.append(f"--window does not apply to the {colour} colour images; they keep their colours")
    notes = []
    data = _split(table, keep, loaded.images, [table.targets[i] for i in keep], patients, no_id, val_fraction,
                  hold_out_test, seed, warnings_, notes)
    return _write(data, table, out, len(table.files), len(loaded.bad), warnings_, notes, log, warn)


class _Loaded:
    """What reading the listed files gave: ``images`` (pixels), ``keep`` (their rows in the table), ``pids``
    (PatientID or None, in memory only), ``bad`` and ``multi`` ((file, reason) pairs), ``ids`` (every PatientID
    read, for blanking them out of messages)."""

    def __init__(self):
        self.images, self.keep, self.pids, self.bad, self.multi, self.ids = [], [], [], [], [], set()


def _read_all(table, dicom_dir, *, frame, window, bits):
    loaded = _Loaded()
    for i, name in enumerate(progress(table.files, desc="reading DICOM", unit="file")):
        try:
            ds = read_dataset(os.path.join(dicom_dir, *name.split("/")))
            pid = patient_id(ds)
            if pid:
                loaded.ids.add(pid)
            pixels = to_pixels(ds, frame=frame, window=window, bits=bits)
        except DicomFileError as exc:  # named by its CSV line: a PACS path may hold a patient's name
            loaded.bad.append((f"the file on line {table.lines[i]}", str(exc)))
            continue
        except MultiFrameError as exc:
            loaded.multi.append((f"the file on line {table.lines[i]}", str(exc)))
            continue
        loaded.images.append(pixels)
        loaded.keep.append(i)
        loaded.pids.append(pid)
    return loaded


def _check_files(loaded, n, labels_csv):
    """Raise PrepareError for multi-frame files met without a usable ``--frame``, or for more than MAX_BAD_FRACTION
    of the ``n`` listed files bad (or all); else return the warning about the skipped ones (if any) in a list."""
    if loaded.multi:
        first, why = loaded.multi[0]
        more = f" (and {len(loaded.multi) - 1} more multi-frame files)" if len(loaded.multi) > 1 else ""
        hint = "give --frame N (0-based) to take frame N of each multi-frame file, or leave them out of the CSV"
        if "out of range" in why:
            hint = "choose a frame that every multi-frame file has, or leave the others out of the CSV"
        raise PrepareError(_redact(f"{first} {why}{more}; {hint}", loaded.ids))
    bad = loaded.bad
    if not bad:
        return []
    named = _redact(", ".join(f"{f} ({why})" for f, why in bad[:NAMES_SHOWN])
                    + (f" and {len(bad) - NAMES_SHOWN} more" if len(bad) > NAMES_SHOWN else ""), loaded.ids)
    if len(bad) == n:
        raise PrepareError(f"none of the {n} files that {labels_csv} lists could be used: {named}")
    if len(bad) > MAX_BAD_FRACTION * n:
        raise PrepareError(f"{len(bad)} of the {n} files that {labels_csv} lists could not be used (more than "
                           f"{MAX_BAD_FRACTION:.0%}): {named}; fix them or leave them out of the CSV")
    return [f"skipped {len(bad)} of the {n} files that {labels_csv} lists (at most {MAX_BAD_FRACTION:.0%} may be): "
            f"{named}"]


def _split(table, keep, images, targets, patients, no_id, val_fraction, hold_out_test, seed, warnings_, notes):
    multi = table.kind == "multi"
    split_targets = [tuple(k for k, v in enumerate(t) if v) for t in targets] if multi else targets
    if table.splits is not None:
        roles = [table.splits[i] for i in keep]
        members = {role: [k for k, r in enumerate(roles) if r == role] for role in layout.CHANNEL_ROLES}
        if not members["train"]:
            raise PrepareError(f"{table.path} has no usable train rows in its split column; train.py needs a train "
                               "split")
        sides = {}
        for k, role in enumerate(roles):
            sides.setdefault(patients[k], set()).add(role)
        shared = sum(len(s) > 1 for s in sides.values())
        if shared:
            warnings_.append(f"{shared} patient(s) have images in more than one split of {table.path}'s split column; "
                             "their val/test metrics are optimistic (leave the split column out to split by patient)")
        notes.append(f"split as {table.path}'s split column says")
    else:
        test_fraction = hold_out_test or val_fraction
        members = split_by_patient(split_targets, patients, val_fraction, test_fraction, seed)
        notes.append(f"split by DICOM PatientID: about {val_fraction:.0%} of the images to val and "
                     f"{test_fraction:.0%} to test, whole patients each, stratified as far as the patients allow "
                     f"(seed {seed})")
        if no_id:
            warnings_.append(f"{no_id} files have no PatientID: each is taken as a patient of its own, so images of "
                             "one patient may be in two splits")
    data = {}
    for role in ("train", "val", "test"):
        idx = members[role]
        if idx:
            data[role] = Split([images[k] for k in idx], [targets[k] for k in idx], [patients[k] for k in idx])
        elif role == "train":
            raise PrepareError("no patient is left for train; lower --val-fraction or add patients")
        elif table.splits is None:
            warnings_.append(f"{role} got no patients (too few patients for the fraction); "
                             + ("train.py holds out its own val" if role == "val" else "no test split written"))
    if table.splits is not None and hold_out_test and "test" not in data:
        data = prepare_data.hold_out_test(data, hold_out_test, seed, log=notes.append)
    return data


def _write(data, table, out, n, n_bad, warnings_, notes, log, warn):
    existed = os.path.isdir(out)
    try:
        counts = prepare_data.write_splits(data, table.classes, out, manifest=True, drop_copies=False)
    except BaseException:
        if existed:
            for entry in os.listdir(out):
                path = os.path.join(out, entry)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
        else:
            shutil.rmtree(out, ignore_errors=True)
        raise
    for line in warnings_:
        warn(line)
    summary = {split: (count[0], count[1], len(set(data[split].patients))) for split, count in counts.items()}
    log(f"converted {n - n_bad} of the {n} DICOM files that {table.path} lists"
        + (f" ({n_bad} skipped)" if n_bad else ""))
    for line in notes:
        log(line)
    for split, (images, per_class, n_patients) in summary.items():
        what = "images" if table.kind == "single" else "images; positives per finding"
        log(f"{split}: {images} {what} {per_class}; {n_patients} patient{'s' if n_patients != 1 else ''}")
        lacking = [name for name, count in per_class.items() if count == 0]
        if lacking and split != "train":
            warn(f"the {split} split has no {'images' if table.kind == 'single' else 'positives'} of {lacking}: "
                 f"its figures cannot measure them (too few patients of that class; add some, or set the split "
                 "column yourself)")
    log(f"wrote {out}: one manifest channel per split (images/<n>.png, labels.csv with salted-hash patient ids, "
        "label_dict.json)")
    note = prepare_data.positive_note(table.classes) if table.kind == "single" else None
    if note:
        log(note)
    return summary


def _redact(text, ids):
    """``text`` with every known PatientID (of 3 characters or more, longest first) replaced by <PatientID>."""
    for value in sorted((i for i in ids if len(i) >= 3), key=len, reverse=True):
        text = text.replace(value, "<PatientID>")
    return text


def main_from_prepare(args):
    """``prepare_data.py --dicom DIR --labels CSV --out OUT [--label-dict F] [--window C,W] [--bits 8|16]
    [--frame N] [--val-fraction F] [--hold-out-test F] [--seed S]``: convert, print the summary and return 0; on
    an error print one line ``prepare_data: error: ...`` on stderr and return 2, with OUT as it was."""
    try:
        if not getattr(args, "labels", None):
            raise PrepareError("--dicom needs --labels CSV (file, then label or finding columns, optional split)")
        _pydicom()
        label_dict = prepare_data.read_label_dict(args.label_dict) if getattr(args, "label_dict", None) else None
        convert(args.dicom, args.labels, args.out, label_dict=label_dict, window=parse_window(args.window),
                bits=args.bits, frame=args.frame, val_fraction=args.val_fraction,
                hold_out_test=getattr(args, "hold_out_test", None), seed=args.seed)
    except PrepareError as exc:
        print(f"prepare_data: error: {exc}", file=sys.stderr)
        return 2
    return 0
