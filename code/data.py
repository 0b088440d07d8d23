"""What the channels hold, as train.py reads them: class names, the images of each split and their labels, a
validation split held out of train when there is none, and the pixels decoded (``load_data``).
"""
import json
import logging
import os

import numpy as np
import torch
from PIL import Image

import images
import layout
from errors import DataError
from loaders import CachedSplit, ImageFileDataset, StreamSplit, check_bad_fraction, decode_all

logger = logging.getLogger("train")

HERE = os.path.dirname(os.path.abspath(__file__))

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class Data:
    """The splits (CachedSplit or StreamSplit; ``test`` may be None), the class names (ClassNames) and how the
    pixels are shaped (channels, size, normalisation)."""

    def __init__(self, train, val, test, channels, size, mean, std, streamed, classes=None):
        self.train, self.val, self.test = train, val, test
        self.channels, self.size, self.mean, self.std, self.streamed = channels, size, mean, std, streamed
        self.classes = classes


# ==================================================================================================
# Class names: where they come from, said in every message about classes
# ==================================================================================================
class ClassNames(list):
    """Class names in index order, with ``source``: which label dict they came from (for messages)."""

    def __init__(self, names, source):
        super().__init__(names)
        self.source = source

    def describe(self):
        return f"{self.source} {list(self)}"


def read_label_dict(path, what):
    """Class names from a label_dict.json file; DataError naming ``what`` when it is missing or malformed."""
    if not os.path.isfile(path):
        raise DataError(f"{what} not found at {path}; write one as {{\"0\": \"normal\", \"1\": \"pneumonia\"}} "
                        "(index -> class name)")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what} at {path} is not valid JSON ({exc}); "
                        'write it as {"0": "normal", "1": "pneumonia"}') from exc
    try:
        return layout.parse_label_dict(raw, source=f"{what} at {path}")
    except layout.LayoutError as exc:
        raise DataError(str(exc)) from exc


def load_label_dict(path):
    """Class names in index order from ``path`` (a label_dict.json)."""
    return read_label_dict(path, layout.LABEL_DICT_FILE)


def resolve_class_names(args):
    """The class names of this run, and their source, by precedence: the ``label-dict`` hyperparameter (a path as
    given, else relative to code/), then the train channel's own label_dict.json (what prepare_data writes: the
    names travel with the data), then code/label_dict.json. A label dict in another channel, or a train channel's
    one beside the hyperparameter, must name the same classes."""
    channel_files = {name: os.path.join(getattr(args, name), layout.LABEL_DICT_FILE)
                     for name in ("train", "val", "test")
                     if getattr(args, name) and os.path.isfile(os.path.join(getattr(args, name), layout.LABEL_DICT_FILE))}
    if args.label_dict:
        path = args.label_dict if os.path.isfile(args.label_dict) else os.path.join(HERE, args.label_dict)
        names = ClassNames(read_label_dict(path, "the label-dict hyperparameter's file"),
                           f"the label dict {path} (label-dict hyperparameter)")
    elif "train" in channel_files:
        names = ClassNames(load_label_dict(channel_files["train"]),
                           f"the train channel's label_dict.json ({channel_files['train']})")
    else:
        path = os.path.join(HERE, layout.LABEL_DICT_FILE)
        names = ClassNames(load_label_dict(path), f"code/label_dict.json (the default: the train channel has no "
                                                  f"{layout.LABEL_DICT_FILE})")
    for channel, path in channel_files.items():
        other = load_label_dict(path)
        if other != list(names):
            raise DataError(f"the {channel} channel's label_dict.json ({path}) names {other}, but this run's classes "
                            f"come from {names.describe()}; make them the same (same names, same order)")
    return names


# ==================================================================================================
# Listing a channel
# ==================================================================================================
def list_channel(root, classes, channel):
    """Return (paths, labels) of the images under ``root/<class folder>/``, sorted for reproducibility.

    A class folder is the class's name or its ``layout.folder_name`` ("normal, benign" or "normal_benign").
    Hidden files and folders are skipped; other files that are not images in a class folder are named in a
    warning and not used; a folder that is not a class is an error naming the label dict in use, as is a channel that is a file, missing, holds no class folders, or looks like
    the data set's root (folders named train/val/test).
    """
    source = classes.describe() if isinstance(classes, ClassNames) else f"label_dict.json {list(classes)}"
    if not os.path.exists(root):
        raise DataError(f"the {channel} channel folder {root} does not exist; give the {channel} channel "
                        f"as a folder of class folders (<{channel}>/<class name>/<image>)")
    if not os.path.isdir(root):
        raise DataError(f"the {channel} channel {root} is a single file, not a folder; upload a folder laid out "
                        f"as <{channel}>/<class name>/<image> and point the channel at that folder's prefix")
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    folders = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    if not folders:
        raise DataError(f"the {channel} channel {root} holds no class folders; lay it out as "
                        f"<{channel}>/<class folder>/<image> with the classes of {source}")
    index = layout.class_folders(list(classes), source)
    _refuse_data_set_root(root, channel, [f for f in folders if f not in index])
    unknown = [f for f in folders if f not in index]
    if unknown:
        expected = sorted({layout.folder_name(c) for c in classes})
        raise DataError(f"class folder {unknown[0]!r} in {channel} is not in {source}; class folders are the class "
                        f"names or their folder names {expected}; add the class there or remove the folder")
    paths, labels = [], []
    unused = [e for e in entries if e not in folders and e != layout.LABEL_DICT_FILE]
    for folder in folders:
        found = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if layout.is_image_file(name):
                    found.append(os.path.join(dirpath, name))
                elif not name.startswith("."):
                    unused.append(os.path.relpath(os.path.join(dirpath, name), root))
        if not found:
            logger.warning("class folder %r in %s holds no images; it is ignored", folder, channel)
        paths += found
        labels += [index[folder]] * len(found)
    if unused:
        logger.warning("%d file(s) in the %s channel are not images in a class folder and are not used: %s%s",
                       len(unused), channel, ", ".join(unused[:5]), ", ..." if len(unused) > 5 else "")
    if not paths:
        raise DataError(f"the {channel} channel {root} holds no images (.png, .jpg, ...) in its class folders; "
                        "check that the upload put the images under <channel>/<class name>/")
    return paths, labels


def _refuse_data_set_root(root, channel, unknown_folders):
    """A channel pointed at the data set's root (train/, val/, test/ inside) is a mistake to name, not a class."""
    splits = [f for f in unknown_folders if layout.channel_role(f) in layout.CHANNEL_ROLES]
    if splits:
        raise DataError(f"the {channel} channel {root} holds folders named {splits}: it looks like the data set's root, "
                        f"not its {channel} split; point each channel at its own prefix, e.g. fit({{'train': "
                        "'s3://bucket/data/train/', 'val': 's3://bucket/data/val/'}) (or --data DIR for local_train)")


def channel_path(path, name, required):
    """``path`` when it exists; None for an optional channel that was not given; else a DataError."""
    if path and os.path.exists(path):
        return path
    if path and required is None:  # given explicitly (argument or SM_CHANNEL_*) but missing
        raise DataError(f"the {name} channel {path} does not exist; check the channel's S3 prefix or the path")
    if required:
        raise DataError(f"no training data: the train channel {path} does not exist; pass a 'train' channel "
                        "(fit({'train': 's3://...'})) or --train PATH laid out as <train>/<class name>/<image>")
    return None


# ==================================================================================================
# Splits and statistics
# ==================================================================================================
def stratified_split(labels, fraction, seed):
    """Indices (train, val) holding out ``fraction`` of each class, reproducibly for a seed."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val_idx += idx[:k].tolist()
        train_idx += idx[k:].tolist()
    return sorted(train_idx), sorted(val_idx)


def channel_stats(pixels, limit=4096):
    """Per-channel mean and std of a uint8 NCHW tensor (a sample of it), on the 0..1 scale."""
    step = max(1, len(pixels) // limit)
    x = pixels[::step].float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(v, 5) for v in mean.tolist()], [round(v, 5) for v in std.tolist()]


# ==================================================================================================
# Loading
# ==================================================================================================
def load_data(args, device):
    """Resolve the class names, read the channels, hold out val when there is no val channel, and decode the
    images once into memory when they fit (``cache-max-gb``), else stream them from disk every epoch. Returns
    Data."""
    # images.open_image checks max-image-pixels from the header before decoding; Pillow's own fixed 89 Mpx check
    # would otherwise refuse what the user allowed, with another message
    Image.MAX_IMAGE_PIXELS = None
    classes = resolve_class_names(args)
    listed = list_splits(args, classes)
    channels, size = images.probe(listed["train"][0], args.max_image_pixels)
    channels, size = args.in_channels or channels, args.image_size or size
    if listed["val"] is None:
        listed["train"], listed["val"] = hold_out_val(*listed["train"], args.val_fraction, args.seed)
    missing = [classes[c] for c in range(len(classes)) if c not in set(listed["train"][1])]
    if missing:
        raise DataError(f"train has no images of class {missing[0]!r} of {classes.describe()}; add images of every "
                        "class, or remove the classes that have none from that label dict")
    nbytes = sum(len(v[0]) for v in listed.values() if v is not None) * channels * size * size
    streamed = nbytes > args.cache_max_gb * 1e9
    splits = {name: decode_split(name, listing, channels, size, args, device, streamed)
              for name, listing in listed.items()}
    if len(splits["val"]) == 0:
        raise DataError("the validation set is empty; add a val channel or raise val-fraction")
    if device.type == "cuda" and not streamed and nbytes < 0.25 * torch.cuda.mem_get_info(device)[0]:
        for split in splits.values():
            if split is not None:
                split.to(device)
    mean, std = normalisation(args, splits["train"], channels, streamed)
    train, val, test = splits["train"], splits["val"], splits["test"]
    logger.info("data: train=%d val=%d test=%s | %d channel(s), %dx%d px, %s (%.1f MB as uint8) | classes %s",
                len(train), len(val), len(test) if test is not None else "none", channels, size, size,
                "streamed from disk" if streamed else "cached in memory", nbytes / 1e6, list(classes))
    logger.info("classes from %s", classes.source)
    return Data(train, val, test, channels, size, mean, std, streamed, classes)


def list_splits(args, classes):
    """``{"train": (paths, labels), "val": ... or None, "test": ... or None}`` from the channels."""
    out = {"train": list_channel(channel_path(args.train, "train", True), classes, "train")}
    for name in ("val", "test"):
        folder = channel_path(getattr(args, name), name, None) if getattr(args, name) else None
        out[name] = list_channel(folder, classes, name) if folder else None
    return out


def hold_out_val(paths, labels, fraction, seed):
    """Split a train listing into (train, val) listings, stratified and seeded."""
    tr, va = stratified_split(labels, fraction, seed)
    logger.info("no val channel: held out %d of %d training images (val-fraction=%s, stratified)",
                len(va), len(paths), fraction)
    return ([paths[i] for i in tr], [labels[i] for i in tr]), ([paths[i] for i in va], [labels[i] for i in va])


def decode_split(name, listing, channels, size, args, device, streamed):
    """A StreamSplit (decoded by workers every epoch) or a CachedSplit (decoded now, bad images counted)."""
    if listing is None:
        return None
    paths, labels = listing
    ds = ImageFileDataset(paths, labels, channels, size, args.max_image_pixels)
    if streamed:
        workers = args.num_workers if args.num_workers >= 0 else min(8, os.cpu_count() or 1)
        return StreamSplit(ds, workers, pin_memory=device.type == "cuda")
    pixels, labs, bad = decode_all(ds, workers=max(2, os.cpu_count() or 1))
    check_bad_fraction(len(bad), len(paths), args.max_bad_fraction, name)
    if len(labs) == 0:
        raise DataError(f"none of the {len(paths)} images in {name} could be read; check the files")
    split = CachedSplit(pixels, labs)
    split.bad = len(bad)
    return split


def normalisation(args, train, channels, streamed):
    """Per-channel (mean, std): ImageNet's for pretrained weights, else the training images' own."""
    if args.pretrained:
        mean = IMAGENET_MEAN if channels == 3 else [float(np.mean(IMAGENET_MEAN))]
        std = IMAGENET_STD if channels == 3 else [float(np.mean(IMAGENET_STD))]
        return mean, std
    if streamed:
        sample = [train.dataset[i][0] for i in range(0, len(train), max(1, len(train) // 1024))]
        return channel_stats(torch.stack(sample))
    return channel_stats(train.images.cpu())
