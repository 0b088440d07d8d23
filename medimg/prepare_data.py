#!/usr/bin/env python
"""Turn a MedMNIST-style .npz (or a DICOM tree, medimg.dicom) into channels for train.py, or channels into shards.

    python scripts/prepare_data.py --npz pneumoniamnist.npz --out data/pneumonia
    python scripts/prepare_data.py --folder data/pneumonia --shards --out data/pneumonia-shards   # decoded once
    python scripts/prepare_data.py --npz chestmnist.npz --label-dict findings.json --out data/chest   # multi-label
    python scripts/prepare_data.py --dataset pneumoniamnist --size 64 --out data/pneumonia64   # needs internet
    python scripts/prepare_data.py --npz x.npz --out data/x --hold-out-test 0.15   # when the source has no test

Writes one channel folder per split in the source (train, val, test), each with the class (finding) names in its
``label_dict.json`` (index -> name: train.py reads the train channel's), plus ``OUT/label_dict.json``:

* single-label data (labels (N,) or (N, 1)): class folders, ``OUT/<split>/<class folder>/<n>.png``; folders are the
  names made portable (``layout.folder_name``: "normal, benign" -> "normal_benign"), the names stay names;
* multi-label data (labels (N, K) of 0/1, K findings, as ChestMNIST's): a manifest channel,
  ``OUT/<split>/images/<n>.png`` and ``OUT/<split>/labels.csv`` with one 0/1 column per finding.

With ``--shards`` the channels are written as shards instead (medimg.shard_data, code/shards.py: a few large tar
files of pixels at the training size): from ``--folder DIR`` (channels as train.py reads them), or from what
--npz/--dataset/--dicom would write, through a temporary folder (``--image-size``, ``--shard-size-mb``).

Names come from ``--label-dict`` or, with ``--dataset``, from MedMNIST's INFO; otherwise from the default
``code/label_dict.json``. ``--hold-out-test F`` holds a test split out of train when the source has none
(stratified, seeded, by patient when the data names patients: code/splits.py, the rule train.py uses for val).
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import sys

import numpy as np
from PIL import Image

from medimg.container import layout, splits as split_rules
from medimg.progress import progress

DEFAULT_LABEL_DICT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "code",
                                  "label_dict.json")
SPLITS = ("train", "val", "test")
MEDMNIST_TASKS = ("binary-class", "multi-class", "ordinal-regression", "multi-label, binary-class")


class PrepareError(Exception):
    pass


class Split:
    """One split in memory: ``images`` (uint8 or uint16 arrays, (H, W) or (H, W, C)), ``targets`` (a class index,
    or a tuple of 0/1 per finding) and ``patients`` (ids, or None)."""

    def __init__(self, images, targets, patients=None):
        self.images, self.targets, self.patients = images, list(targets), patients

    def __len__(self):
        return len(self.targets)

    def subset(self, indices):
        return Split([self.images[i] for i in indices], [self.targets[i] for i in indices],
                     [self.patients[i] for i in indices] if self.patients is not None else None)


# ==================================================================================================
# Sources
# ==================================================================================================
def load_npz(path):
    """``{split: Split}`` from a MedMNIST-style .npz (``<split>_images``, ``<split>_labels``)."""
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise PrepareError(f"cannot read {path} as a .npz file ({exc})") from exc
    out = {}
    for split in SPLITS:
        if f"{split}_images" in data.files:
            if f"{split}_labels" not in data.files:
                raise PrepareError(f"{path} has {split}_images but no {split}_labels")
            out[split] = Split(data[f"{split}_images"], _targets(data[f"{split}_labels"], f"{split}_labels"))
    if not out:
        raise PrepareError(f"{path} has none of the keys train_images/val_images/test_images (found {data.files}); "
                           "give a MedMNIST-style .npz")
    return out


def _targets(labels, what):
    labels = np.asarray(labels)
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] == 1:
        return [int(v) for v in labels[:, 0]]
    if not np.isin(labels, (0, 1)).all():
        raise PrepareError(f"{what} has shape {labels.shape} with values other than 0/1: several columns must be "
                           "0/1 findings (multi-label)")
    return [tuple(int(v) for v in row) for row in labels]


def read_label_dict(path):
    """Class names in index order from a label_dict.json (code/'s rules: layout.parse_label_dict)."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
        return layout.parse_label_dict(raw, source=path, minimum=1)
    except (OSError, ValueError) as exc:  # LayoutError and JSONDecodeError are ValueErrors
        raise PrepareError(f"cannot use {path} as a label dict: {exc}") from exc


def download_medmnist(flag, size, root):
    """Fetch a MedMNIST data set through the medmnist package (needs internet). Returns (npz path, names)."""
    try:
        import medmnist
        from medmnist import INFO
    except ImportError as exc:
        raise PrepareError("--dataset needs the medmnist package: pip install medmnist") from exc
    if flag not in INFO:
        raise PrepareError(f"unknown MedMNIST flag {flag!r}; choose one of {sorted(INFO)}")
    info = INFO[flag]
    if info["task"] not in MEDMNIST_TASKS:
        raise PrepareError(f"{flag} is a {info['task']} task; train.py handles {', '.join(MEDMNIST_TASKS)}")
    cls = getattr(medmnist, info["python_class"])
    os.makedirs(root, exist_ok=True)
    try:
        cls(split="train", download=True, root=root, size=size)
    except Exception as exc:  # noqa: BLE001 - the network is the usual cause
        raise PrepareError(f"could not download {flag} at {size} px ({type(exc).__name__}: {exc}); "
                           "check the internet connection, or download the .npz yourself and use --npz") from exc
    suffix = "" if size == 28 else f"_{size}"
    return os.path.join(root, f"{flag}{suffix}.npz"), [info["label"][str(i)] for i in range(len(info["label"]))]


# ==================================================================================================
# Splits
# ==================================================================================================
def hold_out_test(data, fraction, seed, log=print):
    """Hold ``fraction`` of train out as the test split when ``data`` has none (code/splits.py's rule: stratified,
    seeded, by patient when the data names patients). Says what it did either way."""
    if "test" in data:
        log(f"the source has its own test split ({len(data['test'])} images): nothing held out")
        return data
    train = data["train"]
    multi = bool(train.targets) and isinstance(train.targets[0], tuple)
    targets = [tuple(k for k, v in enumerate(t) if v) for t in train.targets] if multi else train.targets
    kept, held = split_rules.split_indices(targets, fraction, seed, groups=train.patients)
    how = "by patient, stratified" if train.patients is not None else "stratified"
    log(f"the source has no test split: held out {len(held)} of {len(train)} training images as test "
        f"({fraction:.0%}, {how}, seed {seed}); val and test stay untouched by training and selection")
    return dict(data, train=train.subset(kept), test=train.subset(held))


# ==================================================================================================
# Writing channels
# ==================================================================================================
def write_label_dict(path, classes):
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(layout.label_dict_json(classes), fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def save_png(array, path):
    """uint8 or uint16 pixels (H, W) or (H, W, 3|4) to a PNG (16-bit grey stays 16-bit)."""
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise PrepareError(f"pixels must be uint8 or uint16 to be written as PNG, got {array.dtype}")
    Image.fromarray(array).save(path)


def _writing(split, folder):
    """The split's images, with the progress of writing them (medimg.progress: a bar, or lines in a log)."""
    return progress(split.images, total=len(split), desc=f"writing {os.path.basename(folder)}", unit="image")


def write_channel(folder, split, classes, *, manifest=None, names=None):
    """Write one channel into ``folder``: class folders of PNGs, or (``manifest``; always for multi-label targets)
    ``images/<name>.png`` and labels.csv; and its label_dict.json. ``names``: file names without extension (default
    the index). Returns ``{class: images}``, or ``{finding: positive images}`` for multi-label targets."""
    multi = bool(split.targets) and isinstance(split.targets[0], tuple)
    manifest = multi if manifest is None else manifest or multi
    names = names or [str(i) for i in range(len(split))]
    counts = {c: 0 for c in classes}
    if manifest:
        os.makedirs(os.path.join(folder, "images"), exist_ok=True)
        files = [f"images/{n}.png" for n in names]
        for image, rel in zip(_writing(split, folder), files):
            save_png(image, os.path.join(folder, *rel.split("/")))
        if multi:
            layout.write_manifest(os.path.join(folder, layout.MANIFEST_FILE), files, findings=classes,
                                  values=split.targets, patients=split.patients)
            for target in split.targets:
                for name, value in zip(classes, target):
                    counts[name] += value
        else:
            layout.write_manifest(os.path.join(folder, layout.MANIFEST_FILE), files,
                                  labels=[classes[t] for t in split.targets], patients=split.patients)
    else:
        if split.patients is not None:
            raise PrepareError("class folders cannot carry patient ids: write a manifest channel instead")
        for index in sorted(set(split.targets)):
            os.makedirs(os.path.join(folder, layout.folder_name(classes[index])), exist_ok=True)
        for image, target, name in zip(_writing(split, folder), split.targets, names):
            save_png(image, os.path.join(folder, layout.folder_name(classes[target]), f"{name}.png"))
    if not multi:
        for target in split.targets:
            counts[classes[target]] += 1
    write_label_dict(os.path.join(folder, layout.LABEL_DICT_FILE), classes)
    return counts


def write_splits(data, classes, out, manifest=None, warn=None, drop_copies=True):
    """Write every split of ``data`` ({split: Split}) as a channel under ``out`` and OUT/label_dict.json; checks the
    targets against ``classes`` first. With ``drop_copies``, an image whose pixels are also in a later split is left
    out (``drop_copies_across_splits``: train.py refuses a file in two splits), with a line to ``warn`` (default:
    stdout). Returns ``{split: (images, {class: images or finding: positives})}``. Nothing is written when a
    check fails."""
    data = {name: split if isinstance(split, Split) else Split(split[0], _targets(split[1], f"{name} labels"))
            for name, split in data.items()}  # (images, labels) pairs, as a .npz holds them, are accepted too
    for split_name, split in data.items():
        _check_targets(split_name, split, classes)
    names = {}
    if drop_copies:
        data, names = drop_copies_across_splits(data, warn or (lambda line: print(f"prepare_data: warning: {line}")))
    counts = {}
    os.makedirs(out, exist_ok=True)
    for split_name, split in data.items():
        counts[split_name] = (len(split), write_channel(os.path.join(out, split_name), split, classes,
                                                        manifest=manifest, names=names.get(split_name)))
    write_label_dict(os.path.join(out, layout.LABEL_DICT_FILE), classes)
    return counts


def drop_copies_across_splits(data, warn):
    """``(data, names)``: an image whose pixels (dtype, shape and values) are also in a later split of train, val,
    test is left out of the earlier one, so that the test split stays the source's (MedMNIST's PneumoniaMNIST has
    such copies in its own splits) and no written file is in two channels, which train.py refuses. ``names``: for
    a split that lost images, the kept ones' file names (their index in the source split); ``warn`` gets one line
    per such split."""
    seen, out, names = {}, dict(data), {}
    for name in [s for s in reversed(SPLITS) if s in data] + [s for s in data if s not in SPLITS]:
        split = data[name]
        digests = [hashlib.sha1(f"{a.dtype}{a.shape}".encode() + np.ascontiguousarray(a).tobytes()).digest()
                   for a in map(np.asarray, split.images)]
        keep = [i for i, d in enumerate(digests) if d not in seen]
        if len(keep) < len(split):
            later = sorted({seen[d] for d in digests if d in seen}, key=lambda s: (s not in SPLITS, s in SPLITS and
                                                                                     SPLITS.index(s), s))
            warn(f"{len(split) - len(keep)} of the {len(split)} {name} images have the same pixels as images of "
                 f"{' and '.join(later)}: left out of {name}, so that no image is in two splits (train.py refuses "
                 "that)")
            out[name], names[name] = split.subset(keep), [str(i) for i in keep]
        for digest in digests:
            seen.setdefault(digest, name)
    return out, names


def _check_targets(split_name, split, classes):
    if split.targets and isinstance(split.targets[0], tuple):
        if len(split.targets[0]) != len(classes):
            raise PrepareError(f"{split_name} has {len(split.targets[0])} finding columns but the label dict names "
                               f"{len(classes)} ({classes}); give --label-dict with one name per finding, in column "
                               "order")
        return
    unknown = sorted(set(split.targets) - set(range(len(classes))))
    if unknown:
        raise PrepareError(f"{split_name} has labels {unknown} that the label dict {classes} does not name")


# ==================================================================================================
# Command line
# ==================================================================================================
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--npz", help="a MedMNIST-style .npz with {train,val,test}_{images,labels}")
    src.add_argument("--dataset", help="a MedMNIST flag (pneumoniamnist, chestmnist, ...); downloads it")
    src.add_argument("--dicom", help="a folder of DICOM files (with --labels): see medimg.dicom")
    src.add_argument("--folder", help="with --shards: a folder of channels as train.py reads them (train/, val/, test/: "
                                      "class folders or labels.csv, label_dict.json)")
    p.add_argument("--shards", action="store_true", help="write the channels as shards (a few large tar files of "
                                                         "pixels at the training size: medimg.shard_data)")
    p.add_argument("--image-size", type=int, help="with --shards: the side the pixels are resized to (default: "
                                                  "train.py's image-size auto: the most common side, at most 224)")
    p.add_argument("--shard-size-mb", type=float, help="with --shards: about this many MB per shard (default 128)")
    p.add_argument("--labels", help="with --dicom: a CSV of file (relative to the folder), label or finding "
                                    "columns, optional split")
    p.add_argument("--window", metavar="CENTER,WIDTH", help="with --dicom: CENTER,WIDTH in the modality's units "
                                                             "(e.g. -600,1500 for lung) instead of the files' own VOI "
                                                             "LUT or window")
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="with --dicom: PNG bit depth")
    p.add_argument("--frame", type=int, help="with --dicom: the frame of multi-frame files to use")
    p.add_argument("--size", type=int, choices=(28, 64, 128, 224), default=28, help="with --dataset")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--label-dict", help="JSON index -> class (finding) name (default: code/label_dict.json)")
    p.add_argument("--hold-out-test", type=float, metavar="FRACTION",
                   help="hold this fraction of train out as the test split when the source has none")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="FRACTION",
                   help="with --dicom and no split column: the fraction of patients for val (and as much for test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out splits")
    p.add_argument("--cache", default=os.path.expanduser("~/.medmnist"), help="download folder for --dataset")
    return p.parse_args(_window_with_its_value(sys.argv[1:] if argv is None else list(argv)))


def _window_with_its_value(argv):
    """``--window -600,1500`` as ``--window=-600,1500``: argparse would take a value that starts with ``-`` (a
    negative centre, as the lung window's) for an option."""
    out = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--window" and re.match(r"^-\d", arg):
            out[-1] = f"--window={arg}"
        else:
            out.append(arg)
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.shards or args.folder:
        return main_shards(args)
    return write_images(args)


def main_shards(args):
    """``--shards``: the channels of ``--folder`` (or those --npz/--dataset/--dicom write, in a temporary folder
    removed after) as shards in ``--out``; OUT as it was on an error."""
    from medimg import shard_data

    if not args.shards:
        print("prepare_data: error: --folder is read only to write shards: add --shards", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and os.listdir(args.out):
        print(f"prepare_data: error: {args.out} is not empty; give a new folder (nothing was written)", file=sys.stderr)
        return 2
    source = args.folder
    temporary = None if source else os.path.abspath(args.out.rstrip(os.sep)) + ".images.partial"
    try:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
            code = write_images(argparse.Namespace(**{**vars(args), "out": temporary}))
            if code:
                return code
            source = temporary
        shard_data.write_shards(source, args.out, image_size=args.image_size, shard_mb=args.shard_size_mb,
                                label_dict=args.label_dict if args.folder else None)
    except (ValueError, OSError) as exc:
        shutil.rmtree(args.out, ignore_errors=True)
        print(f"prepare_data: error: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        shutil.rmtree(args.out, ignore_errors=True)
        raise
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    return 0


def write_images(args):
    """--npz, --dataset, --dicom: write the channels as image files in ``args.out``."""
    try:
        if args.dicom:
            from medimg import dicom

            return dicom.main_from_prepare(args)
        if args.dataset:
            npz, classes = download_medmnist(args.dataset, args.size, args.cache)
        else:
            npz, classes = args.npz, None
        if args.label_dict or classes is None:
            classes = read_label_dict(args.label_dict or DEFAULT_LABEL_DICT)
        data = load_npz(npz)
        if args.hold_out_test:
            data = hold_out_test(data, args.hold_out_test, args.seed)
        if os.path.exists(args.out) and os.listdir(args.out):
            raise PrepareError(f"{args.out} is not empty; give a new folder (nothing was written)")
        try:
            counts = write_splits(data, classes, args.out)
        except BaseException:
            shutil.rmtree(args.out, ignore_errors=True)
            raise
    except PrepareError as exc:
        print(f"prepare_data: error: {exc}", file=sys.stderr)
        return 2
    multi = any(split.targets and isinstance(split.targets[0], tuple) for split in data.values())
    report(counts, args.out, None if multi else classes)
    return 0


def report(counts, out, classes=None):
    """One line per split: its images, and per class its images (or per finding its positive images); then, for
    two classes (single-label ``classes``), which one train.py will report as positive (``positive_note``)."""
    for split, (n, per_class) in counts.items():
        what = "images" if sum(per_class.values()) == n else "images; positives per finding"
        print(f"{split}: {n} {what} {per_class}")
    print(f"wrote {out}: one channel folder per split, each with its label_dict.json")
    note = positive_note(classes) if classes else None
    if note:
        print(note)


def positive_note(classes):
    """For two single-label classes, the line that says which one train.py will report as the positive class
    (code/layout.py's rule, as train.py applies it without the positive-class hyperparameter); else None."""
    if len(classes) != 2:
        return None
    index, why = layout.positive_class(classes)
    return (f"positive class: {classes[index]} ({why}): train.py reports its sensitivity, PPV and operating point; "
            "set train.py's positive-class hyperparameter to choose the other")


if __name__ == "__main__":
    sys.exit(main())
