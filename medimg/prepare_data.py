#!/usr/bin/env python
"""Turn a MedMNIST-style .npz into class-folder channels for train.py.

    python scripts/prepare_data.py --npz pneumoniamnist.npz --out data/pneumonia
    python scripts/prepare_data.py --dataset pneumoniamnist --size 64 --out data/pneumonia64   # needs internet

Writes ``OUT/<split>/<class folder>/<n>.png`` for each split in the file (train, val, test), with the class
names in ``OUT/<split>/label_dict.json`` (index -> class name; train.py reads the train channel's) and
``OUT/label_dict.json``. Class folders are the names made portable (``layout.folder_name``: "normal, benign" ->
"normal_benign"); the names themselves stay names. They come from ``--label-dict`` or, with ``--dataset``, from
MedMNIST's INFO; otherwise from the default ``code/label_dict.json``.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

from medimg.container import layout

DEFAULT_LABEL_DICT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "code",
                                  "label_dict.json")
SPLITS = ("train", "val", "test")


class PrepareError(Exception):
    pass


def load_npz(path):
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise PrepareError(f"cannot read {path} as a .npz file ({exc})") from exc
    splits = {}
    for split in SPLITS:
        if f"{split}_images" in data.files:
            if f"{split}_labels" not in data.files:
                raise PrepareError(f"{path} has {split}_images but no {split}_labels")
            splits[split] = (data[f"{split}_images"], data[f"{split}_labels"])
    if not splits:
        raise PrepareError(f"{path} has none of the keys train_images/val_images/test_images (found {data.files}); "
                           "give a MedMNIST-style .npz")
    return splits


def read_label_dict(path):
    """Class names in index order from a label_dict.json (code/'s rules: layout.parse_label_dict)."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
        return layout.parse_label_dict(raw, source=path)
    except (OSError, ValueError) as exc:  # LayoutError and JSONDecodeError are ValueErrors
        raise PrepareError(f"cannot use {path} as a label dict: {exc}") from exc


def write_label_dict(path, classes):
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(layout.label_dict_json(classes), fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def write_splits(splits, classes, out):
    """Write every split's images as PNG under OUT/<split>/<class folder>/ (``layout.folder_name`` of the class name)
    and the class names, as names, in OUT/<split>/label_dict.json (they travel with each channel) and
    OUT/label_dict.json. Returns ``{split: {class name: images}}``."""
    folders = [layout.folder_name(c) for c in classes]
    counts = {}
    for split, (images, labels) in splits.items():
        labels = np.asarray(labels).reshape(len(labels), -1)
        if labels.shape[1] != 1:
            raise PrepareError(f"{split}_labels has shape {labels.shape}: multi-label data sets are not supported")
        labels = labels[:, 0].astype(int)
        unknown = sorted(set(labels.tolist()) - set(range(len(classes))))
        if unknown:
            raise PrepareError(f"{split} has labels {unknown} that the label dict {classes} does not name")
        counts[split] = {c: 0 for c in classes}
        for index in sorted(set(labels.tolist())):
            os.makedirs(os.path.join(out, split, folders[index]), exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(os.path.join(out, split, folders[label], f"{i}.png"))
            counts[split][classes[label]] += 1
        write_label_dict(os.path.join(out, split, layout.LABEL_DICT_FILE), classes)
    write_label_dict(os.path.join(out, layout.LABEL_DICT_FILE), classes)
    return counts


def download_medmnist(flag, size, root):
    """Fetch a MedMNIST data set through the medmnist package (needs internet). Returns (npz path, label dict)."""
    try:
        import medmnist
        from medmnist import INFO
    except ImportError as exc:
        raise PrepareError("--dataset needs the medmnist package: pip install medmnist") from exc
    if flag not in INFO:
        raise PrepareError(f"unknown MedMNIST flag {flag!r}; choose one of {sorted(INFO)}")
    info = INFO[flag]
    if info["task"] not in ("binary-class", "multi-class", "ordinal-regression"):
        raise PrepareError(f"{flag} is a {info['task']} task; train.py handles single-label classification only")
    cls = getattr(medmnist, info["python_class"])
    os.makedirs(root, exist_ok=True)
    try:
        cls(split="train", download=True, root=root, size=size)
    except Exception as exc:  # noqa: BLE001 - the network is the usual cause
        raise PrepareError(f"could not download {flag} at {size} px ({type(exc).__name__}: {exc}); "
                           "check the internet connection, or download the .npz yourself and use --npz") from exc
    suffix = "" if size == 28 else f"_{size}"
    return os.path.join(root, f"{flag}{suffix}.npz"), [info["label"][str(i)] for i in range(len(info["label"]))]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--npz", help="a MedMNIST-style .npz with {train,val,test}_{images,labels}")
    src.add_argument("--dataset", help="a MedMNIST flag (pneumoniamnist, dermamnist, ...); downloads it")
    p.add_argument("--size", type=int, choices=(28, 64, 128, 224), default=28, help="with --dataset")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--label-dict", help="JSON index -> class name (default: code/label_dict.json)")
    p.add_argument("--cache", default=os.path.expanduser("~/.medmnist"), help="download folder for --dataset")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.dataset:
            npz, classes = download_medmnist(args.dataset, args.size, args.cache)
        else:
            npz, classes = args.npz, None
        if args.label_dict or classes is None:
            classes = read_label_dict(args.label_dict or DEFAULT_LABEL_DICT)
        counts = write_splits(load_npz(npz), classes, args.out)
    except PrepareError as exc:
        print(f"prepare_data: error: {exc}", file=sys.stderr)
        return 2
    for split, per_class in counts.items():
        print(f"{split}: {sum(per_class.values())} images {per_class}")
    print(f"wrote {args.out}: one channel folder per split, each with its label_dict.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
