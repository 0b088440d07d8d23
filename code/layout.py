"""How data is laid out for train.py: the one home of the rules that the writers of data (scripts/prepare_data.py,
the notebook's upload) and its reader (train.py) must agree on.

* Channels: ``train`` (also ``training``), ``val`` (also ``validation``, ``valid``), ``test`` (also ``testing``);
  ``code`` and ``sm_drivers`` are what SDK v3's ModelTrainer adds for itself and are not data; ``weights`` (the
  backbone's weights file for ``pretrained=true``) and ``model`` (an earlier job's model.tar.gz to start from, the
  channel name of SageMaker's incremental training) are where a model starts from, not data splits.
* A channel is either class folders (``<channel>/<class folder>/<image>``) or a manifest
  (``<channel>/labels.csv`` with an ``image`` column, then ``label`` or one 0/1 column per finding, and an
  optional ``patient_id``: ``read_manifest``/``write_manifest``), with an optional ``label_dict.json``
  (index -> class name) at its root. ``read_manifest`` is the one reader of such CSVs: prepare_data --dicom's
  labels CSV is read by it too, with its own columns (``ManifestColumns``).
* A class name is a name ("normal, benign", "Pleural Effusion", "Ödem"); its folder is ``folder_name(name)``.

This module imports only the standard library and nothing else of ``code/``, so that the client package
(``medimg``) loads this very file instead of keeping a copy (tests/unit/repository/test_architecture.py checks it).
"""
import csv
import hashlib
import io
import os
import re
import unicodedata
from collections import Counter

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
LABEL_DICT_FILE = "label_dict.json"
MANIFEST_FILE = "labels.csv"
IMAGE_COLUMN, LABEL_COLUMN, PATIENT_COLUMN = "image", "label", "patient_id"

CHANNEL_ROLES = {"train": ("train", "training"), "val": ("val", "validation", "valid"),
                 "test": ("test", "testing")}
LAUNCHER_CHANNELS = ("code", "sm_drivers")  # SDK v3 ModelTrainer: the source dir and its drivers, not data
# where a model starts from (never read as data): role -> channel names
START_CHANNELS = {"weights": ("weights",), "model": ("model",)}

FOLDER_NAME_MAX = 80
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                    *(f"LPT{i}" for i in range(1, 10))}


class LayoutError(ValueError):
    """Data that breaks a rule of this module; the message is one line saying what to do."""


def is_image_file(name):
    """A visible file with one of IMAGE_EXTENSIONS (case-insensitive)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# ==================================================================================================
# Channels
# ==================================================================================================
def channel_role(name):
    """``"train"``, ``"val"`` or ``"test"`` for a channel name or one of its aliases (case-insensitive),
    ``"weights"`` or ``"model"`` for the channels a model starts from (START_CHANNELS), ``"launcher"`` for a channel
    a launcher adds for itself, else None. Only the first three are data splits (``role in CHANNEL_ROLES``)."""
    lowered = name.lower()
    if lowered in LAUNCHER_CHANNELS:
        return "launcher"
    return next((role for role, names in {**CHANNEL_ROLES, **START_CHANNELS}.items() if lowered in names), None)


# ==================================================================================================
# Class names and their folders
# ==================================================================================================
def folder_name(name):
    """The folder that holds a class's images: portable across S3 keys, Windows, macOS and shells.

    NFC-normalised; every run of characters other than letters, digits (any script), ``-``, ``_`` and ``.``
    becomes one ``_``; leading and trailing ``.``, ``_``, ``-`` are dropped; Windows' reserved device names get
    a trailing ``_``; a name longer than 80 characters, or one with nothing left, is cut and given 8 hex
    digits of its SHA-1 so that distinct names stay distinct. Examples: ``"normal, benign"`` ->
    ``"normal_benign"``, ``"Pleural Effusion"`` -> ``"Pleural_Effusion"``, ``"Ödem"`` -> ``"Ödem"``.
    """
    text = unicodedata.normalize("NFC", str(name).strip())
    safe = re.sub(r"_+", "_", re.sub(r"[^\w.-]+", "_", text)).strip("._-")
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    if not safe:
        return f"class-{digest}"
    if len(safe) > FOLDER_NAME_MAX:
        safe = f"{safe[:FOLDER_NAME_MAX - 9].rstrip('._-')}-{digest}"
    if safe.split(".")[0].upper() in WINDOWS_RESERVED:
        safe += "_"
    return safe


def usable_as_folder(name):
    """Whether a class name can itself be a folder name on Linux (no separators, not '.' or '..')."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0") and not name.startswith(".")


def folder_key(folder):
    """How a folder is matched to a class: NFC-normalised and case-folded, as Windows and macOS file systems and
    many S3 tools compare names (so Kaggle's ``NORMAL/`` is the class ``normal``)."""
    return unicodedata.normalize("NFC", folder).casefold()


def class_folders(classes, source="label_dict.json"):
    """``{folder: class index}`` accepting, for each class, its exact name (where that can be a folder) and its
    ``folder_name``; look a folder up by its ``folder_key`` in ``{folder_key(f): i for f, i in ...items()}``.
    Raises LayoutError when two classes would share a folder (compared by ``folder_key``)."""
    owner = {}
    for index, name in enumerate(classes):
        for folder in {folder_name(name), *([name] if usable_as_folder(name) else [])}:
            key = folder_key(folder)
            if key in owner and owner[key][0] != index:
                other = classes[owner[key][0]]
                raise LayoutError(f"class names {other!r} and {name!r} in {source} both map to the folder "
                                  f"{folder!r} (folders are compared ignoring case); rename one of them")
            owner[key] = (index, folder)
    return {folder: index for index, folder in owner.values()}


def class_matcher(classes, source="label_dict.json"):
    """The one rule by which a class name written in the data names a class, for class folders and labels.csv
    alike (its labels and its finding columns): the class's name or its ``folder_name``, compared by
    ``folder_key`` (NFC, ignoring case); a written name is tried as written and in its folder form, so
    ``Pneumonia``, ``PNEUMONIA`` and ``normal_benign`` name ``pneumonia`` and ``normal, benign``. Returns
    ``lookup(written) -> class index or None``; raises LayoutError when two classes would share a name
    (``class_folders``)."""
    index = {folder_key(f): i for f, i in class_folders(list(classes), source).items()}

    def lookup(written):
        found = index.get(folder_key(written))
        return found if found is not None else index.get(folder_key(folder_name(written)))

    return lookup


def class_spellings(written):
    """The class names that names as written (a labels.csv's labels, one per row) stand for, by
    ``class_matcher``'s rule: each class is named by its most frequent spelling (ties: the first in sorted
    order). Returns the names sorted."""
    counts = Counter(written)
    chosen = []
    for spelling in sorted(counts, key=lambda w: (-counts[w], w)):
        if class_matcher(chosen)(spelling) is None:
            chosen.append(spelling)
    return sorted(chosen)


def other_spellings(written, classes, lookup):
    """``{class name: {other spelling: count}}`` of the written names (matched by ``lookup``, class_matcher's)
    that are not spelled as their class; written names that match no class are left out."""
    out = {}
    for spelling, n in sorted(Counter(written).items()):
        index = lookup(spelling)
        if index is not None and spelling != classes[index]:
            out.setdefault(classes[index], {})[spelling] = n
    return out


def describe_spellings(spellings, unit="rows"):
    """``other_spellings`` in words: "'pneumonia' also as 'Pneumonia' (3 rows), 'PNEUMONIA' (1 row)"."""
    return "; ".join(f"{name!r} also as " + ", ".join(
        f"{w!r} ({n} {unit if n != 1 else unit.rstrip('s')})" for w, n in others.items())
        for name, others in spellings.items())


# ==================================================================================================
# The positive class of a binary task: the finding, not whatever sorts second
# ==================================================================================================
# A class name "means no finding" when one of its words (split on anything but letters and digits, and between a
# lower-case and an upper-case letter: "NoFinding" is "no finding"; compared case-folded) is one of NO_FINDING_WORDS,
# when its words hold one of NO_FINDING_PHRASES, or when its first word is one of NEGATIONS ("no tumor", "No DR",
# "non-COVID", "not detected"), unless that negation is of a no-finding word ("not normal", "non-healthy" are
# findings). Whole words only: "abnormal" is not "normal", "benignity" is not "benign". The glued words at the end
# are class names of public data sets (NIH malaria's "Uninfected", the Kaggle brain MRI set's "notumor").
NO_FINDING_WORDS = ("normal", "healthy", "negative", "benign", "control", "controls", "unremarkable", "none",
                    "absent", "uninfected", "unaffected", "nofinding", "nofindings", "notumor", "nontumor")
NO_FINDING_PHRASES = (("no", "finding"), ("no", "findings"), ("not", "detected"), ("disease", "free"),
                      ("within", "normal", "limits"))
NEGATIONS = ("no", "non", "not")
POSITIVE_AUTO = "auto"  # the positive-class hyperparameter's default: the rule below


def name_words(name):
    """The words of a class name, case-folded: ``"normal, benign"`` -> ``["normal", "benign"]``, ``"No_Finding"``
    and ``"NoFinding"`` -> ``["no", "finding"]``."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", unicodedata.normalize("NFC", str(name)))
    return [w.casefold() for w in re.split(r"[\W_]+", spaced) if w]


def means_no_finding(name):
    """Whether a class name says "no finding" (normal, healthy, negative, benign, control, unremarkable, none,
    absent, uninfected, no finding, not detected, disease free, within normal limits, or a first word no/non/not,
    but not "not normal")."""
    words = name_words(name)
    if not words:
        return False
    if words[0] in NEGATIONS:
        return len(words) == 1 or words[1] not in NO_FINDING_WORDS
    if any(w in NO_FINDING_WORDS for w in words):
        return True
    return any(tuple(words[i:i + len(p)]) == p for p in NO_FINDING_PHRASES for i in range(len(words)))


def positive_class(classes, requested=None):
    """``(index, why)``: the positive class of a binary single-label task (the one whose sensitivity, PPV and
    operating threshold are reported) and where that choice came from, in words for the log and metrics.json.

    ``requested`` (the positive-class hyperparameter; None or "auto": the rule) is matched as class folders are (the
    name or its folder_name, ignoring case); a name that is not a class raises LayoutError listing the classes.
    Else, when exactly one of the two names means no finding (``means_no_finding``), the other class is positive;
    else the second class (index 1), saying why (neither or both names mean no finding)."""
    classes = list(classes)
    if len(classes) != 2:
        raise LayoutError(f"a positive class is chosen for two classes, not {len(classes)} ({classes})")
    if requested is not None and str(requested).strip().casefold() != POSITIVE_AUTO:
        index = _matching_class(classes, str(requested))
        if index is None:
            raise LayoutError(f"positive-class {requested!r} is not one of the classes {classes}; give one of "
                              f"them (ignoring case), or auto")
        return index, "set by the positive-class hyperparameter"
    meaning = [means_no_finding(name) for name in classes]
    if meaning.count(True) == 1:
        negative = meaning.index(True)
        return 1 - negative, f"the other class of {classes[negative]!r}, a name meaning no finding"
    why = "both names mean no finding" if all(meaning) else "neither name means no finding"
    return 1, f"the second class, as {why}"


def _matching_class(classes, requested):
    keys = {folder_key(folder): index for folder, index in class_folders(classes).items()}
    for candidate in (requested.strip(), folder_name(requested)):
        if folder_key(candidate) in keys:
            return keys[folder_key(candidate)]
    return None


# ==================================================================================================
# label_dict.json: {"0": "normal", "1": "pneumonia"} (index -> class name), as MedMNIST's INFO["label"]
# ==================================================================================================
def parse_label_dict(raw, source=LABEL_DICT_FILE, minimum=2):
    """Class names in index order from a decoded label_dict.json; raises LayoutError with what to fix."""
    shape = 'an object mapping indices 0..K-1 to class names, e.g. {"0": "normal", "1": "pneumonia"}'
    if not isinstance(raw, dict) or len(raw) < minimum:
        raise LayoutError(f"{source} must be {shape}, with at least {minimum} classes")
    try:
        items = {int(k): v for k, v in raw.items()}
    except (TypeError, ValueError):
        raise LayoutError(f"{source} has a key that is not an integer index ({sorted(raw)}); it must be {shape}")
    if sorted(items) != list(range(len(items))):
        raise LayoutError(f"{source} indices must be 0..{len(items) - 1} without gaps, got {sorted(items)}; "
                          f"it must be {shape}")
    names = [items[i] for i in range(len(items))]
    for name in names:
        if not isinstance(name, str) or not name.strip() or any(unicodedata.category(c) == "Cc" for c in name):
            raise LayoutError(f"{source} has an invalid class name {name!r}; names are non-empty text on one line")
    if len(set(names)) != len(names):
        raise LayoutError(f"{source} has duplicate class names {names}; each class needs its own name")
    class_folders(names, source)  # two names that would share a folder are refused here, for every reader
    return names


def label_dict_json(classes):
    """The label_dict.json object for class names in index order."""
    return {str(i): name for i, name in enumerate(classes)}


# ==================================================================================================
# labels.csv: a manifest instead of class folders (CheXpert, NIH ChestX-ray14, ISIC and most challenges ship these)
# ==================================================================================================
class Manifest:
    """A parsed labels.csv. ``kind`` is "single" (one class name per image, ``labels``) or "multi" (one 0/1 value
    per finding per image: ``findings`` names the columns, ``values`` the rows); ``patients`` when the file has a
    patient_id column; ``splits`` (train/val/test per row) when it has the split column asked for; ``lines`` the
    file's line number of each row (for messages). ``images`` are the paths of the path column."""

    def __init__(self, path, kind, images, lines, labels=None, findings=None, values=None, patients=None,
                 splits=None):
        self.path, self.kind, self.images, self.lines = path, kind, images, lines
        self.labels, self.findings, self.values, self.patients = labels, findings, values, patients
        self.splits = splits


class ManifestColumns:
    """What a CSV of paths and labels calls its columns, the one thing its readers differ in. A channel's labels.csv
    (the default): ``image`` first, paths inside the channel, an optional ``patient_id``. prepare_data --dicom's
    CSV (medimg.dicom_labels): ``file`` anywhere, paths inside the DICOM folder, an optional ``split``, patients from
    the DICOM files (``patients_from``: a patient_id column is refused, saying where they come from), and rows named
    by their line only (``show_paths=False``: a PACS path may hold a patient's name). Reserved column names are
    compared ignoring case."""

    def __init__(self, path=IMAGE_COLUMN, *, path_first=True, inside="the channel", split=None, patients_from=None,
                 show_paths=True):
        self.path, self.path_first, self.inside, self.split = path, path_first, inside, split
        self.patients_from, self.show_paths = patients_from, show_paths
        self.noun = "image" if path == IMAGE_COLUMN else path

    def example(self):
        extra = f"[,{self.split or PATIENT_COLUMN}]" if self.split or not self.patients_from else ""
        return f"{self.path},{LABEL_COLUMN}{extra} or {self.path},finding_a,finding_b{extra}"

    def row(self, line, image=None):
        """How a message names a row: its line, and its path unless paths are not shown."""
        return f"line {line}: {image!r}" if image is not None and self.show_paths else f"line {line}"


LABELS_CSV = ManifestColumns()


def read_manifest(path, columns=LABELS_CSV):
    """Parse ``path`` (a labels.csv: a header row, ``image`` first, then ``label`` or one 0/1 column per finding,
    and optionally ``patient_id``; ``columns`` for another CSV of paths and labels, see ManifestColumns). Blank
    lines are skipped. Raises LayoutError naming the line for: no header or no path column (first), ``label``
    beside finding columns, an empty, absolute or climbing (``..``) path (``is_relative_path``), a value other
    than 0/1, a missing label, a path listed twice, too many fields (an unquoted comma), an unknown split."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(io.StringIO(fh.read())))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LayoutError(f"cannot read {path} as a UTF-8 CSV file ({exc})") from exc
    header = [h.strip() for h in rows[0]] if rows else []
    path_col, split_col, patient_col, label_cols = _manifest_header(path, header, columns)
    names = [header[i] for i in label_cols]
    kind = "single" if [n.lower() for n in names] == [LABEL_COLUMN] else "multi"
    out = Manifest(path, kind, [], [], labels=[] if kind == "single" else None,
                   findings=None if kind == "single" else names, values=None if kind == "single" else [],
                   patients=[] if patient_col is not None else None, splits=[] if split_col is not None else None)
    seen = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) > len(header):
            raise LayoutError(f"{path} line {line} has {len(row)} fields for {len(header)} columns; quote a value that "
                              'holds a comma ("normal, benign")')
        cells = [cell.strip() for cell in row] + [""] * (len(header) - len(row))
        _manifest_row(out, columns, line, cells, (path_col, label_cols, patient_col, split_col), seen)
    if not out.images:
        raise LayoutError(f"{path} lists no {columns.noun}s")
    return out


def _manifest_header(path, header, columns):
    """``(path column, split column, patient column, label columns)`` of a header row (split and patient None when
    absent); raises LayoutError."""
    lowered = [h.lower() for h in header]
    if columns.path_first and lowered[:1] != [columns.path]:
        raise LayoutError(f"{path} must start with a header row whose first column is {columns.path!r} (got "
                          f"{header[:4]}); e.g. {columns.example()}")
    if columns.path not in lowered:
        raise LayoutError(f"{path} must start with a header row with a {columns.path!r} column (got {header[:4]}); "
                          f"e.g. {columns.example()}")
    if columns.patients_from and PATIENT_COLUMN in lowered:
        raise LayoutError(f"{path} has a {PATIENT_COLUMN!r} column: patients come from {columns.patients_from}; "
                          "drop the column")
    found = {c: lowered.index(c) for c in (columns.path, columns.split, PATIENT_COLUMN) if c and c in lowered}
    label_cols = [i for i in range(len(header)) if i not in found.values()]
    names = [header[i] for i in label_cols]
    if not label_cols:
        raise LayoutError(f"{path} has no label columns; add {LABEL_COLUMN!r} or one 0/1 column per finding")
    if LABEL_COLUMN in [n.lower() for n in names] and len(names) > 1:
        raise LayoutError(f"{path} has a {LABEL_COLUMN!r} column beside other columns {names}: use either "
                          f"{LABEL_COLUMN!r} (one class per image) or one 0/1 column per finding")
    if len(set(names)) != len(names) or any(not n for n in names):
        raise LayoutError(f"{path} has empty or repeated column names {names}")
    return found[columns.path], found.get(columns.split), found.get(PATIENT_COLUMN), label_cols


def is_relative_path(name):
    """True when ``name`` (str) is a path inside a folder as a CSV column of paths must give it: not empty, ``/``
    between folders, no leading ``/``, no ``..``, no backslash and no drive (``C:``). Used for labels.csv's
    ``image`` and for the DICOM labels CSV's ``file`` (read_manifest with their ManifestColumns)."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and "\\" not in name and ".." not in parts and ":" not in parts[0]


def _manifest_row(out, columns, line, row, where, seen):
    path_col, label_cols, patient_col, split_col = where
    path, image = out.path, row[path_col]
    if not is_relative_path(image):
        named = f"{columns.path} {image!r}" if columns.show_paths else f"the {columns.path}"
        raise LayoutError(f"{path} line {line}: {named} must be a path relative to {columns.inside}, with / between "
                          f"folders, inside {columns.inside} (no leading /, no ..)")
    if image in seen:
        named = repr(image) if columns.show_paths else f"the same {columns.noun}"
        raise LayoutError(f"{path} lines {seen[image]} and {line} both list {named}; list each {columns.noun} once")
    seen[image] = line
    if out.kind == "single":
        if not row[label_cols[0]]:
            raise LayoutError(f"{path} {columns.row(line, image)} has no label")
        out.labels.append(row[label_cols[0]])
    else:
        bad = [(out.findings[k], row[i]) for k, i in enumerate(label_cols) if row[i] not in ("0", "1")]
        if bad:
            named = f" for {image!r}" if columns.show_paths else ""
            raise LayoutError(f"{path} line {line}: {bad[0][0]}={bad[0][1]!r}{named}; finding values must be 0 or 1 "
                              f"(map uncertain or missing labels to 0 or 1, or leave the {columns.noun} out)")
        out.values.append(tuple(int(row[i]) for i in label_cols))
    if patient_col is not None:
        if not row[patient_col]:
            raise LayoutError(f"{path} {columns.row(line, image)} has no {PATIENT_COLUMN}")
        out.patients.append(row[patient_col])
    if split_col is not None:
        out.splits.append(_split_of(path, line, row[split_col]))
    out.images.append(image)
    out.lines.append(line)


def _split_of(path, line, written):
    """The split a row's split column names (``train``/``val``/``test`` or an alias of CHANNEL_ROLES)."""
    role = channel_role(written) if written else None
    if role not in CHANNEL_ROLES:
        allowed = sorted(n for names in CHANNEL_ROLES.values() for n in names)
        raise LayoutError(f"{path} line {line}: split {written!r} is not one of {allowed}")
    return role


def write_manifest(path, images, *, labels=None, findings=None, values=None, patients=None):
    """Write a labels.csv that ``read_manifest`` reads back: ``labels`` (class names) or ``findings`` and ``values``
    (rows of 0/1), optional ``patients``."""
    header = [IMAGE_COLUMN] + ([LABEL_COLUMN] if labels is not None else list(findings))
    header += [PATIENT_COLUMN] if patients is not None else []
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for i, image in enumerate(images):
            row = [image] + ([labels[i]] if labels is not None else [int(v) for v in values[i]])
            writer.writerow(row + ([patients[i]] if patients is not None else []))
