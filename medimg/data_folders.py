"""Channel folders on the client (what scripts/prepare_data.py writes and train.py reads): list them, count and
sample their images, and cut a small subset for the smoke test.

A data folder holds ``train/``, ``val/`` and ``test/`` (those present; or their aliases ``validation/`` ...: code/
layout.py's rules), each class folders (``<class folder>/<image>``) or a ``labels.csv`` manifest, with its
``label_dict.json`` (class folders are the names made portable, the label dict keeps the names, which this module
reports). Uploading them is medimg.s3_data's.
"""
import json
import os
import random
import shutil

from medimg.container import layout

ROLE_ORDER = ("train", "val", "test")


class ChannelError(Exception):
    pass


# ==================================================================================================
# Local folders
# ==================================================================================================
def channels_in(data_dir):
    """The channel folders of ``data_dir`` (train/val/test or their aliases), in train, val, test order.

    Raises ChannelError when there is no train channel, when two folders hold the same split, or when a visible
    folder is not a channel train.py reads (it would refuse the job: better to say so before uploading)."""
    folders = sorted(e for e in os.listdir(data_dir) if not e.startswith(".")
                     and os.path.isdir(os.path.join(data_dir, e))) if os.path.isdir(data_dir) else []
    roles = {}
    for folder in folders:
        role = layout.channel_role(folder)
        if role not in ROLE_ORDER:
            raise ChannelError(f"{data_dir}/{folder} is not a channel train.py reads (train, val, test or their "
                               "aliases training, validation, valid, testing); move it out of the data folder")
        if role in roles:
            raise ChannelError(f"{data_dir} has both {roles[role]}/ and {folder}/ for the {role} split; keep one")
        roles[role] = folder
    if "train" not in roles:
        raise ChannelError(f"{data_dir} has no train/ folder; lay the data out as {data_dir}/train/<class>/<image> "
                           "(scripts/prepare_data.py writes this layout)")
    return [roles[r] for r in ROLE_ORDER if r in roles]


def channel_folder(data_dir, role):
    """The folder of ``data_dir`` that holds the ``role`` split ("train", "val", "test": a folder of that name or an
    alias, layout.CHANNEL_ROLES), or None."""
    return next((os.path.join(data_dir, ch) for ch in channels_in(data_dir) if layout.channel_role(ch) == role), None)


def class_names(channel_dir):
    """``{layout.folder_key(class folder): class name}`` from the label dict the data carries (the channel's
    label_dict.json, else the data folder's); {} when there is none (folders are then shown as they are)."""
    for path in (os.path.join(channel_dir, layout.LABEL_DICT_FILE),
                 os.path.join(os.path.dirname(os.path.abspath(channel_dir)), layout.LABEL_DICT_FILE)):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                names = layout.parse_label_dict(json.load(fh), source=path)
            return {layout.folder_key(folder): names[i] for folder, i in layout.class_folders(names, path).items()}
    return {}


NO_FINDING = "no finding"


def _named_as_training_names(channel_dir, written):
    """``label -> class name`` for a labels.csv's labels, by train.py's rule (layout.class_matcher): the name in
    the data's label dict, else the label's most frequent spelling in the file; a label that names no class is
    kept as written."""
    known = list(dict.fromkeys(class_names(channel_dir).values())) or layout.class_spellings(written)
    lookup = layout.class_matcher(known)
    return lambda label: known[lookup(label)] if lookup(label) is not None else label


def read_channel(channel_dir):
    """``[(path, labels, row), ...]`` for a channel: ``labels`` is a tuple of class or finding names (one class; the
    findings present, () for none), ``row`` the manifest row (None for class folders). Class folders: names from
    the data's label dict (``class_names``), folder names standing in when there is none; labels.csv: its rows
    whose image exists, a label spelt another way (``Pneumonia``) named as train.py names its class."""
    manifest_path = os.path.join(channel_dir, layout.MANIFEST_FILE)
    if os.path.isfile(manifest_path):
        manifest = layout.read_manifest(manifest_path)
        named = _named_as_training_names(channel_dir, manifest.labels) if manifest.kind == "single" else None
        out = []
        for row, image in enumerate(manifest.images):
            path = os.path.join(channel_dir, *image.split("/"))
            if not os.path.isfile(path):
                continue
            if manifest.kind == "single":
                labels = (named(manifest.labels[row]),)
            else:
                labels = tuple(f for f, v in zip(manifest.findings, manifest.values[row]) if v)
            out.append((path, labels, row))
        return out
    names = class_names(channel_dir)
    out = []
    for folder in sorted(os.listdir(channel_dir)):
        root = os.path.join(channel_dir, folder)
        if folder.startswith(".") or not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            label = (names.get(layout.folder_key(folder), folder),)
            out += [(os.path.join(dirpath, f), label, None) for f in sorted(filenames) if layout.is_image_file(f)]
    return out


def caption(labels):
    """How an image's labels read: its class, its findings joined by " + ", or "no finding"."""
    return " + ".join(labels) if labels else NO_FINDING


def list_images(channel_dir):
    """``[(path, label), ...]`` for a channel's images, sorted as stored; ``label`` is ``caption`` of its labels."""
    return [(path, caption(labels)) for path, labels, _ in read_channel(channel_dir)]


def sample_images(channel_dir, per_class=4, seed=0):
    """Up to ``per_class`` images of each label (class, or combination of findings), picked reproducibly:
    ``[(path, label), ...]``."""
    by_class = {}
    for path, cls in list_images(channel_dir):
        by_class.setdefault(cls, []).append(path)
    rng = random.Random(seed)
    out = []
    for cls, paths in sorted(by_class.items()):
        out += [(p, cls) for p in sorted(rng.sample(paths, min(per_class, len(paths))))]
    return out


def make_subset(data_dir, out_dir, per_class=16, seed=0):
    """Copy up to ``per_class`` images of each label of each channel, in the same layout, with the label dicts and
    (manifest channels) the kept rows of labels.csv, to ``out_dir``."""
    shutil.rmtree(out_dir, ignore_errors=True)
    for ch in channels_in(data_dir):
        channel = os.path.join(data_dir, ch)
        picked = {p for p, _ in sample_images(channel, per_class, seed)}
        rows = [r for p, _, r in read_channel(channel) if p in picked]
        for path in sorted(picked):
            dest = os.path.join(out_dir, ch, os.path.relpath(path, channel))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(path, dest)
        if rows and rows[0] is not None:
            _write_rows(os.path.join(channel, layout.MANIFEST_FILE), sorted(rows),
                        os.path.join(out_dir, ch, layout.MANIFEST_FILE))
        if os.path.isfile(os.path.join(channel, layout.LABEL_DICT_FILE)):
            shutil.copyfile(os.path.join(channel, layout.LABEL_DICT_FILE),
                            os.path.join(out_dir, ch, layout.LABEL_DICT_FILE))
    if os.path.isfile(os.path.join(data_dir, layout.LABEL_DICT_FILE)):
        shutil.copyfile(os.path.join(data_dir, layout.LABEL_DICT_FILE), os.path.join(out_dir, layout.LABEL_DICT_FILE))
    return out_dir


def _write_rows(source, rows, dest):
    m = layout.read_manifest(source)
    pick = lambda values: [values[r] for r in rows] if values is not None else None  # noqa: E731
    layout.write_manifest(dest, pick(m.images), labels=pick(m.labels), findings=m.findings, values=pick(m.values),
                          patients=pick(m.patients))


def class_counts(data_dir):
    """``{channel: {class: images}}``; for multi-label channels ``{finding: images with it}`` (and how many have
    none, under "no finding")."""
    counts = {}
    for ch in channels_in(data_dir):
        counts[ch] = {}
        for _, labels, _ in read_channel(os.path.join(data_dir, ch)):
            for name in labels or (NO_FINDING,):
                counts[ch][name] = counts[ch].get(name, 0) + 1
    return counts


def channel_sizes(data_dir):
    """``{channel: images}``."""
    return {ch: len(read_channel(os.path.join(data_dir, ch))) for ch in channels_in(data_dir)}
