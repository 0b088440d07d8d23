"""DICOM in: a tree of DICOM files plus a CSV of labels -> manifest channels of PNGs (``prepare_data.py --dicom``).
This module is the conversion (checks, patients, splits, writing) and its command line; one file's pixels are
medimg.dicom_pixels', the CSV medimg.dicom_labels'.

    python scripts/prepare_data.py --dicom pacs_export/ --labels labels.csv --out data/cxr
    python scripts/prepare_data.py --dicom ct/ --labels ct.csv --out data/ct --window 40,400 --bits 16
    python scripts/prepare_data.py --dicom us/ --labels us.csv --out data/us --frame 0   # multi-frame files

The CSV (UTF-8, a header row): a ``file`` column (a path relative to the DICOM folder, ``/`` between folders), then
either one ``label`` column (class names: single-label) or one 0/1 column per finding (multi-label), and optionally a
``split`` column (``train``/``val``/``test`` or the aliases of code/layout.py's CHANNEL_ROLES: ``training``,
``validation``, ``valid``, ``testing``). Patients come from each file's DICOM PatientID (0010,0020), never from the
CSV, so the CSV may not have a ``patient_id`` column. Column names are compared ignoring case. Every other rule
(blank lines, quoting, paths inside the folder, each file once, 0/1 values) and its message is a channel's
labels.csv's: medimg.dicom_labels reads the CSV with code/layout.py's one reader.

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
import hashlib
import os
import secrets
import shutil
import sys

from medimg import prepare_data
from medimg.container import layout, splits as split_rules
from medimg.dicom_labels import read_labels
from medimg.dicom_pixels import (DicomFileError, MultiFrameError, load_pydicom, parse_window, patient_id,
                                 read_dataset, to_pixels)
from medimg.prepare_data import PrepareError, Split
from medimg.progress import progress

MAX_BAD_FRACTION = 0.10  # more bad files than this (of those listed) fails the conversion
NAMES_SHOWN = 5  # bad or multi-frame files named in one line
HASH_HEX = 16


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
        load_pydicom()
        label_dict = prepare_data.read_label_dict(args.label_dict) if getattr(args, "label_dict", None) else None
        convert(args.dicom, args.labels, args.out, label_dict=label_dict, window=parse_window(args.window),
                bits=args.bits, frame=args.frame, val_fraction=args.val_fraction,
                hold_out_test=getattr(args, "hold_out_test", None), seed=args.seed)
    except PrepareError as exc:
        print(f"prepare_data: error: {exc}", file=sys.stderr)
        return 2
    return 0
