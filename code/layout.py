"""How data is laid out for train.py: the one home of the rules that the writers of data (scripts/prepare_data.py,
the notebook's upload) and its reader (train.py) must agree on.

* Channels: ``train`` (also ``training``), ``val`` (also ``validation``, ``valid``), ``test`` (also ``testing``);
  ``code`` and ``sm_drivers`` are what SDK v3's ModelTrainer adds for itself and are not data.
* A channel is either class folders (``<channel>/<class folder>/<image>``) or a manifest
  (``<channel>/labels.csv`` with an ``image`` column, then ``label`` or one 0/1 column per finding, and an
  optional ``patient_id``), with an optional ``label_dict.json`` (index -> class name) at its root.
* A class name is a name ("normal, benign", "Pleural Effusion", "Ödem"); its folder is ``folder_name(name)``.

This module imports only the standard library and nothing else of ``code/``, so that the client package
(``medimg``) loads this very file instead of keeping a copy (tests/test_architecture.py checks it).
"""
import hashlib
import os
import re
import unicodedata

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
LABEL_DICT_FILE = "label_dict.json"
MANIFEST_FILE = "labels.csv"
IMAGE_COLUMN, LABEL_COLUMN, PATIENT_COLUMN = "image", "label", "patient_id"

CHANNEL_ROLES = {"train": ("train", "training"), "val": ("val", "validation", "valid"),
                 "test": ("test", "testing")}
LAUNCHER_CHANNELS = ("code", "sm_drivers")  # SDK v3 ModelTrainer: the source dir and its drivers, not data

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
    ``"launcher"`` for a channel a launcher adds for itself, else None."""
    lowered = name.lower()
    if lowered in LAUNCHER_CHANNELS:
        return "launcher"
    return next((role for role, names in CHANNEL_ROLES.items() if lowered in names), None)


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


def class_folders(classes, source="label_dict.json"):
    """``{folder: class index}`` accepting, for each class, its exact name (where that can be a folder) and its
    ``folder_name``. Raises LayoutError when two classes would share a folder (compared case-insensitively, as
    Windows and macOS file systems and many S3 tools do)."""
    owner = {}
    for index, name in enumerate(classes):
        for folder in {folder_name(name), *([name] if usable_as_folder(name) else [])}:
            key = unicodedata.normalize("NFC", folder).casefold()
            if key in owner and owner[key][0] != index:
                other = classes[owner[key][0]]
                raise LayoutError(f"class names {other!r} and {name!r} in {source} both map to the folder "
                                  f"{folder!r} (folders are compared ignoring case); rename one of them")
            owner[key] = (index, folder)
    return {folder: index for index, folder in owner.values()}


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
