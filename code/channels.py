"""What the channels hold, as train.py reads them: the class (or finding) names and where they come from, and each
split's images with their targets and patients. Nothing here decodes a pixel (that is data.py and loaders.py).

A channel is class folders (``<channel>/<class folder>/<image>``) or a manifest (``<channel>/labels.csv``:
``image``, then ``label`` or one 0/1 column per finding, optional ``patient_id``; code/layout.py is the format's
home). ``read_channels`` returns a ``Listing`` per split and the task: ``multiclass`` (one class per image) or
``multilabel`` (any number of findings per image).
"""
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import layout
import shards
from errors import ConfigError, DataError

logger = logging.getLogger("train")

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("train", "val", "test")


MISSING = "listed in labels.csv but not in the channel"  # a skipped image's reason in metrics.json


class Listing:
    """One split: ``paths`` of its images, ``targets`` (a class index, or a tuple of 0/1 per finding), ``groups``
    (patient ids, or None when the data names no patients) and ``names`` (each image's path relative to its
    channel, with /: how per-image reports name it); ``skipped``: ``{name: reason}`` of the images the channel
    names but that are not listed (a manifest's rows without a file), for metrics.json's ``skipped``."""

    def __init__(self, paths, targets, groups=None, names=None, skipped=None):
        self.paths, self.targets, self.groups = list(paths), list(targets), groups
        self.names = list(names) if names is not None else list(self.paths)
        self.skipped = dict(skipped or {})

    def __len__(self):
        return len(self.paths)

    def subset(self, indices):
        return Listing([self.paths[i] for i in indices], [self.targets[i] for i in indices],
                       [self.groups[i] for i in indices] if self.groups is not None else None,
                       [self.names[i] for i in indices])


# ==================================================================================================
# Class names: where they come from, said in every message about classes
# ==================================================================================================
class ClassNames(list):
    """Class names in index order, with ``source``: which label dict they came from (for messages)."""

    def __init__(self, names, source, default=False, sorted_names=False):
        super().__init__(names)
        self.source = source
        self.default = default  # code/label_dict.json: the data brought no names of its own
        self.sorted_names = sorted_names  # the order is the names' sort order, not one a person gave
        self.positive, self.positive_from = None, None  # a binary task's positive class (choose_positive_class)

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


def resolve_class_names(args, manifests=None, shard_sets=None):
    """The class (finding) names of this run, and their source, by precedence: the ``label-dict`` hyperparameter (a
    path as given, else relative to code/), then the train channel's own label_dict.json (what prepare_data writes:
    the names travel with the data), then a train manifest's own names (its finding columns, or its sorted class
    names), then the train channel's class folders when they name none of code/label_dict.json's classes (sorted,
    as torchvision's ImageFolder), then code/label_dict.json. A label dict in another channel, or the train
    channel's beside the hyperparameter, must name the same classes."""
    manifests = manifests or {}
    channel_files = {name: os.path.join(getattr(args, name), layout.LABEL_DICT_FILE) for name in SPLITS
                     if getattr(args, name) and os.path.isfile(os.path.join(getattr(args, name),
                                                                            layout.LABEL_DICT_FILE))}
    train = manifests.get("train")
    if args.label_dict:
        path = args.label_dict if os.path.isfile(args.label_dict) else os.path.join(HERE, args.label_dict)
        names = ClassNames(read_label_dict(path, "the label-dict hyperparameter's file"),
                           f"the label dict {path} (label-dict hyperparameter)")
    elif "train" in channel_files:
        names = ClassNames(load_label_dict(channel_files["train"]),
                           f"the train channel's label_dict.json ({channel_files['train']})")
    elif (shard_sets or {}).get("train") is not None:
        held = shard_sets["train"]
        names = ClassNames(held.meta["classes"], f"the shard headers of the train channel ({held.classes_from})",
                           sorted_names=held.sorted_names)
    elif train is not None:
        found = train.findings if train.kind == "multi" else layout.class_spellings(train.labels)
        what = "finding columns" if train.kind == "multi" else "class names"
        names = ClassNames(found, f"the {what} of the train channel's labels.csv ({train.path})",
                           sorted_names=train.kind != "multi")
        if len(names) < (1 if train.kind == "multi" else 2):
            raise DataError(f"the train channel's labels.csv ({train.path}) names {list(names)}: at least two classes "
                            "are needed (or one finding column)")
    else:
        path = os.path.join(HERE, layout.LABEL_DICT_FILE)
        names = ClassNames(load_label_dict(path), f"code/label_dict.json (the default: the train channel has no "
                                                  f"{layout.LABEL_DICT_FILE})", default=True)
        names = _own_class_folders(args.train, names) or names
    for channel, path in channel_files.items():
        other = load_label_dict(path)
        if other != list(names):
            raise DataError(f"the {channel} channel's label_dict.json ({path}) names {other}, but this run's classes "
                            f"come from {names.describe()}; make them the same (same names, same order)")
    return names


# ==================================================================================================
# Listing a channel
# ==================================================================================================
def _own_class_folders(train_dir, default):
    """The train channel's class folders as the class names, sorted (torchvision's ImageFolder rule), when there
    are at least two, none is a class of ``default`` (code/label_dict.json; ignoring case) and none is named like
    a split (a data set's root, which list_channel explains); else None."""
    if not train_dir or not os.path.isdir(train_dir):
        return None
    folders = sorted(e for e in os.listdir(train_dir)
                     if not e.startswith(".") and os.path.isdir(os.path.join(train_dir, e)))
    known = {layout.folder_key(folder) for folder in layout.class_folders(list(default))}
    if len(folders) < 2 or any(layout.folder_key(f) in known or layout.channel_role(f) for f in folders):
        return None
    names = ClassNames(folders, f"the class folders of the train channel ({train_dir}), sorted as torchvision's "
                                f"ImageFolder sorts them: it has no {layout.LABEL_DICT_FILE} and its folders name "
                                f"none of code/label_dict.json's classes {list(default)}", sorted_names=True)
    return names


def list_channel(root, classes, channel):
    """Return (paths, labels) of the images under ``root/<class folder>/``, sorted for reproducibility.

    A class folder is the class's name or its ``layout.folder_name`` ("normal, benign" or "normal_benign"),
    compared by ``layout.folder_key`` (ignoring case: ``NORMAL`` is ``normal``).
    Hidden files and folders are skipped; other files that are not images in a class folder are named in a
    warning and not used; a folder that is not a class is an error naming the label dict in use (and, when that is
    code/label_dict.json, where the data's own class names go), as is a channel that is a file, missing, holds no
    class folders, or looks like the data set's root (folders named train/val/test).
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
    index = {layout.folder_key(f): i for f, i in layout.class_folders(list(classes), source).items()}
    _refuse_data_set_root(root, channel, [f for f in folders if layout.folder_key(f) not in index])
    unknown = [f for f in folders if layout.folder_key(f) not in index]
    if unknown:
        expected = sorted({layout.folder_name(c) for c in classes})
        if getattr(classes, "default", False):  # the user's own classes, no names given: say where they go
            example = json.dumps(layout.label_dict_json(folders), ensure_ascii=False)
            advice = (f"for your own classes put a {layout.LABEL_DICT_FILE} at the root of the train channel (index "
                      f"-> class name, e.g. {example}) or pass the label-dict hyperparameter, or remove the folder")
        else:
            advice = "add the class there or remove the folder"
        raise DataError(f"class folder {unknown[0]!r} in {channel} is not in {source}; class folders are the class "
                        f"names or their folder names {expected}; {advice}")
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
        labels += [index[layout.folder_key(folder)]] * len(found)
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
        raise DataError(f"the {channel} channel {root} holds folders named {splits}: it looks like the data set's "
                        f"root, not its {channel} split; point each channel at its own prefix, e.g. fit({{'train': "
                        "'s3://bucket/data/train/', 'val': 's3://bucket/data/val/'}) (or --data DIR for local_train)")


# ==================================================================================================
# Manifests
# ==================================================================================================
def read_manifests(args):
    """``{split: layout.Manifest}`` for the channels that hold a labels.csv; DataError for a malformed one."""
    out = {}
    for name in SPLITS:
        root = getattr(args, name)
        path = os.path.join(root, layout.MANIFEST_FILE) if root else None
        if path and os.path.isfile(path):
            try:
                out[name] = layout.read_manifest(path)
            except layout.LayoutError as exc:
                raise DataError(str(exc)) from exc
    return out


def decide_task(requested, manifests):
    """``multilabel`` when asked, or (``auto``) when the train channel's manifest has finding columns; else
    ``multiclass``. A request the data cannot meet is a ConfigError."""
    multi = {name: m.kind == "multi" for name, m in manifests.items()}
    task = requested if requested != "auto" else ("multilabel" if multi.get("train") else "multiclass")
    if task == "multilabel" and not multi.get("train"):
        raise ConfigError("task=multilabel needs a train channel with a labels.csv of 0/1 finding columns (image,"
                          "finding_a,finding_b,...); class folders and a label column hold one class per image")
    wrong = [n for n, is_multi in multi.items() if is_multi != (task == "multilabel")]
    if wrong:
        has = "finding columns" if multi[wrong[0]] else "a label column"
        why = " (task=auto follows the train channel)" if requested == "auto" else ""
        raise ConfigError(f"the {wrong[0]} channel's labels.csv has {has} but this run is {task}{why}; give every "
                          "channel the same kind of labels")
    return task


def list_manifest(root, manifest, classes, channel, task, max_bad_fraction):
    """A Listing of a manifest channel. Class names must be ``classes``' (single-label); finding columns must be
    the same set (multi-label, reordered to ``classes``). Images the file lists but the channel lacks are skipped
    and counted as unreadable images are (``max-bad-fraction``)."""
    source = classes.describe() if isinstance(classes, ClassNames) else str(list(classes))
    try:
        lookup = layout.class_matcher(classes, source)
    except layout.LayoutError as exc:
        raise DataError(str(exc)) from exc
    written = manifest.findings if task == "multilabel" else manifest.labels
    if task == "multilabel":
        columns = [lookup(name) for name in manifest.findings]
        if None in columns or sorted(columns) != list(range(len(classes))):
            raise DataError(f"the {channel} channel's labels.csv has the findings {manifest.findings}, but this run's "
                            f"findings come from {source}; give every channel the same finding columns (compared "
                            "ignoring case)")
        order = [columns.index(k) for k in range(len(classes))]
        targets = [tuple(row[k] for k in order) for row in manifest.values]
    else:
        targets = [lookup(name) for name in manifest.labels]
        if None in targets:
            unknown = manifest.labels[targets.index(None)]
            line = manifest.lines[targets.index(None)]
            raise DataError(f"{manifest.path} line {line}: class {unknown!r} is not in {source}; use those names "
                            "or add the class to the label dict")
    others = layout.other_spellings(written, classes, lookup)
    if others:
        what = "finding" if task == "multilabel" else "class"
        logger.warning("the %s channel's labels.csv (%s) spells %s %s: the same %s, as names are compared ignoring "
                       "case and in their folder form (as class folders are)", channel, manifest.path, what,
                       layout.describe_spellings(others, "columns" if task == "multilabel" else "rows"), what)
    paths = [os.path.join(root, *image.split("/")) for image in manifest.images]
    present = [i for i, p in enumerate(paths) if os.path.isfile(p)]
    listing = Listing(paths, targets, manifest.patients, manifest.images).subset(present)
    missing = [manifest.images[i] for i in sorted(set(range(len(paths))) - set(present))]
    _count_missing(manifest, len(missing), missing, channel, max_bad_fraction)
    listing.skipped = {name: MISSING for name in missing}
    return listing


def _count_missing(manifest, n_missing, missing, channel, max_bad_fraction):
    if not n_missing:
        return
    what = (f"{n_missing} of the {len(manifest.images)} images that {manifest.path} lists are not in the {channel} "
            f"channel (first: {sorted(missing)[0]!r})")
    if n_missing / len(manifest.images) > max_bad_fraction:
        raise DataError(f"{what}, above max-bad-fraction={max_bad_fraction}; upload them, remove their rows, or raise "
                        "max-bad-fraction")
    logger.warning("%s; they are skipped", what)


SLOW_CHECK_S = 30  # a duplicate check that takes longer is said in the log


def check_no_image_in_two_splits(listings, threads=8):
    """The same image file (same bytes, compared by SHA-1) in two splits is leakage, whatever the layout (class
    folders or manifests): DataError naming both files. Every file of the given splits is read once, with
    threads; nothing is read when fewer than two splits are given. Empty files are not images (they are skipped
    as unreadable) and are not compared."""
    given = {name: listing for name, listing in listings.items() if listing is not None}
    if len(given) < 2:
        return
    started, owner = time.perf_counter(), {}
    for name, listing in given.items():
        for path, digest in zip(listing.paths, file_digests(listing, threads)):
            if digest is None:  # an empty file is no image (it is skipped as unreadable), so not leakage
                continue
            if digest in owner and owner[digest][0] != name:
                other_split, other = owner[digest]
                raise DataError(f"the same image is in {other_split} ({other}) and in {name} ({path}); an image may "
                                "be in one split only: remove one of them")
            owner.setdefault(digest, (name, path))
    seconds = time.perf_counter() - started
    if seconds > SLOW_CHECK_S:
        logger.info("checked that no image is in two splits: %d files read in %.0f s",
                    sum(len(listing) for listing in given.values()), seconds)


def file_digests(listing, threads=8):
    """The SHA-1 of each file of ``listing`` (None for an empty one), read once per listing, with threads."""
    if getattr(listing, "_digests", None) is None and listing.paths and isinstance(listing.paths[0], shards.ShardRef):
        listing._digests = [ref.digest for ref in listing.paths]  # kept in the shard headers: nothing to read
    if getattr(listing, "_digests", None) is None:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            listing._digests = list(pool.map(_digest, listing.paths))
    return listing._digests


def groups_keeping_copies_together(listing):
    """``(groups, copies)`` for holding a split out of ``listing``: its patients (or, without patient ids, each
    image on its own), merged wherever two files hold the same bytes, so that the held-out split never gets a copy
    of a kept image; ``copies`` counts the files that repeat another. ``groups`` is ``listing.groups`` when there
    is no copy (the split is then exactly what it was without this check)."""
    base = listing.groups if listing.groups is not None else list(range(len(listing)))
    parent, first, copies = {}, {}, 0

    def root(g):
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    for group, digest in zip(base, file_digests(listing)):
        if digest is None:
            continue
        if digest in first:
            copies += 1
            parent[root(group)] = root(first[digest])
        else:
            first[digest] = group
    return (listing.groups, 0) if not copies else ([root(g) for g in base], copies)


def _digest(path):
    """SHA-1 of a file's bytes; None for an empty file."""
    if isinstance(path, shards.ShardRef):  # the SHA-1 of the file the sample was made from, kept in its header
        return path.digest
    if os.path.getsize(path) == 0:
        return None
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


# ==================================================================================================
# All channels
# ==================================================================================================
def channel_path(path, name, required):
    """``path`` when it exists; None for an optional channel that was not given; else a DataError."""
    if path and os.path.exists(path):
        return path
    if path and required is None:  # given explicitly (argument or SM_CHANNEL_*) but missing
        raise DataError(f"the {name} channel {path} does not exist; check the channel's S3 prefix or the path")
    if required:
        raise DataError(f"no training data: the train channel {path} does not exist; pass a 'train' channel "
                        "(fit({'train': 's3://...'})) or --train PATH laid out as <train>/<class name>/<image> or "
                        "with a labels.csv")
    return None


def read_channels(args):
    """(ClassNames, task, {split: Listing or None}) for the run's channels (see the module docstring)."""
    roots = {"train": channel_path(args.train, "train", True)}
    roots.update({name: channel_path(getattr(args, name), name, None) if getattr(args, name) else None
                  for name in ("val", "test")})
    manifests = read_manifests(args)
    shard_sets = read_shard_channels(roots)
    task = decide_task(getattr(args, "task", "auto"), {**manifests, **{
        name: _Kind("multi" if held.meta["task"] == "multilabel" else "single") for name, held in shard_sets.items()}})
    classes = resolve_class_names(args, manifests, shard_sets)
    listings = {}
    for name, root in roots.items():
        if root is None:
            listings[name] = None
        elif name in shard_sets:
            listings[name] = list_shards(shard_sets[name], classes, name, task, args.max_bad_fraction)
        elif name in manifests:
            listings[name] = list_manifest(root, manifests[name], classes, name, task, args.max_bad_fraction)
        else:
            paths, labels = list_channel(root, classes, name)
            names = [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]
            listings[name] = Listing(paths, labels, names=names)
    check_no_image_in_two_splits(listings)  # every layout: class folders hold copies as easily as manifests
    if manifests:
        warn_of_patients_in_two_splits(listings)
    check_settings_fit_the_task(args, task, classes)
    choose_positive_class(args, task, classes)
    return classes, task, listings


class _Kind:
    """What decide_task needs of a channel's labels: ``kind`` "multi" (findings) or "single"."""

    def __init__(self, kind):
        self.kind = kind


# ==================================================================================================
# Shards (code/shards.py: written once by prepare_data --shards)
# ==================================================================================================
def read_shard_channels(roots):
    """``{split: shards.ShardChannel}`` for the channels that hold shards; DataError for one that cannot be read or
    holds no readable shard."""
    out = {}
    for name, root in roots.items():
        if root is None or not shards.holds_shards(root):
            continue
        try:
            held = shards.ShardChannel(root)
        except shards.ShardError as exc:
            raise DataError(f"the {name} channel's shards: {exc}") from exc
        for shard, why, count in held.damaged:
            logger.warning("the %s channel's shard %s is damaged (%s): its %s count as unreadable images "
                           "(max-bad-fraction); write and upload the shards again to get them back", name, shard, why,
                           f"{count} images" if count else "images")
        if held.meta is None:
            raise DataError(f"the {name} channel {root} holds no readable shard ({len(held.files)} shard file(s), "
                            f"index.json: {'yes' if shards.read_index(root) else 'no'}); write the shards again "
                            "(python -m medimg.prepare_data --folder DIR --shards) and upload them")
        out[name] = held
    return out


def list_shards(held, classes, channel, task, max_bad_fraction):
    """A Listing of a shard channel (``paths`` are shards.ShardRef), its targets in this run's class order (names
    compared as class folders are); ``shape`` (channels, size) of its pixels; images that are in no shard
    (index.json's ``skipped``, a damaged shard's) are counted as a manifest's missing images are."""
    source = classes.describe() if isinstance(classes, ClassNames) else str(list(classes))
    try:
        lookup = layout.class_matcher(classes, source)
    except layout.LayoutError as exc:
        raise DataError(str(exc)) from exc
    mapped = [lookup(name) for name in held.meta["classes"]]
    if None in mapped or (task == "multilabel" and sorted(mapped) != list(range(len(classes)))):
        raise DataError(f"the {channel} channel's shards name the {'findings' if task == 'multilabel' else 'classes'} "
                        f"{held.meta['classes']} ({held.classes_from}), but this run's come from {source}; make them "
                        "the same, or write the shards again with that label dict")
    if task == "multilabel":
        order = [mapped.index(k) for k in range(len(classes))]
        targets = [tuple(t[k] for k in order) for t in held.targets]
    else:
        targets = [mapped[t] for t in held.targets]
    patients = held.patients if any(p is not None for p in held.patients) else None
    listing = Listing(held.refs, targets, patients, held.names, skipped=held.skipped)
    listing.shape, listing.shard_count = (held.meta["channels"], held.meta["image_size"]), len(held.files)
    listing.lost = held.lost + len(held.skipped)
    total = len(listing) + listing.lost
    if listing.lost and listing.lost / max(total, 1) > max_bad_fraction:
        raise DataError(f"{listing.lost} of the {total} images of the {channel} channel are in no readable shard, "
                        f"above max-bad-fraction={max_bad_fraction}; write and upload the shards again, or raise "
                        "max-bad-fraction")
    for shard, why, count in held.damaged:
        if count:
            listing.skipped[shard] = f"{count} images {shards.DAMAGED} ({why})"
    return listing


def choose_positive_class(args, task, classes):
    """A binary single-label run's positive class (layout.positive_class: the positive-class hyperparameter, else
    the other class of a name meaning no finding, else the second), set as ``classes.positive`` (its index) and
    ``classes.positive_from`` and logged; a warning when it is the second of names in their sorted order only."""
    if task == "multilabel" or len(classes) != 2:
        return
    try:
        classes.positive, classes.positive_from = layout.positive_class(
            classes, getattr(args, "positive_class", None))
    except layout.LayoutError as exc:
        raise ConfigError(f"invalid hyperparameter: {exc} (the classes come from {classes.source})") from exc
    arbitrary = classes.positive_from.startswith("the second class") and getattr(classes, "sorted_names", False)
    advice = "" if "hyperparameter" in classes.positive_from else "; set positive-class to choose"
    (logger.warning if arbitrary else logger.info)(
        "positive class: %s (%s%s%s)", classes[classes.positive], classes.positive_from,
        ", and the names are in their sorted order only" if arbitrary else "", advice)


def check_settings_fit_the_task(args, task, classes):
    """Hyperparameters that this task would not use are a ConfigError (nothing set is silently ignored), and
    ordered grades whose order is only their names' sort order are a warning."""
    auto = getattr(args, "task", "auto") == "auto"
    why = " (task=auto follows the train channel's labels.csv)" if auto else ""
    if getattr(args, "ordinal", False) and task == "multilabel":  # the one home of this rule: task=auto or not
        raise ConfigError(f"invalid hyperparameter: ordinal=true needs one grade per image, but this run is "
                          f"multilabel{why or ' (task=multilabel)'}; leave ordinal out or give a label column"
                          f"{'' if auto else ' and task=auto'}")
    if getattr(args, "target_sensitivity", 0) and task == "multiclass" and len(classes) > 2:
        raise ConfigError(f"invalid hyperparameter: target-sensitivity chooses the threshold of a binary or "
                          f"multi-label decision, but this run has {len(classes)} classes (the label is the argmax); "
                          f"leave it out")
    positive = getattr(args, "positive_class", None)
    if positive is not None and str(positive).strip().casefold() != layout.POSITIVE_AUTO and (
            task == "multilabel" or len(classes) != 2):
        what = "is multilabel (each finding is its own positive)" if task == "multilabel" else \
            f"has {len(classes)} classes"
        raise ConfigError(f"invalid hyperparameter: positive-class={positive!r} chooses the positive class of a "
                          f"binary task, but this run {what}{why if task == 'multilabel' else ''}; leave it out")
    if getattr(args, "ordinal", False) and getattr(classes, "sorted_names", False):
        logger.warning("ordinal=true: the grades are in the order %s, their names sorted (%s); if that is not the "
                       "order of the grades, give a label_dict.json that lists them in order", list(classes),
                       classes.source)


def warn_of_patients_in_two_splits(listings):
    """A patient with images in two splits (train and val or test) makes the held-out figures optimistic: named in
    a warning (the images themselves may differ, so it is not an error)."""
    owner = {}
    for name, listing in listings.items():
        for patient in set(listing.groups or ()) if listing is not None else ():
            owner.setdefault(patient, []).append(name)
    shared = {p: s for p, s in owner.items() if len(s) > 1}
    if shared:
        pairs = sorted({" and ".join(s) for s in shared.values()})
        logger.warning("%d patient(s) have images in more than one split (%s): the held-out figures are optimistic; "
                       "keep each patient in one split (prepare_data's splits do)", len(shared), "; ".join(pairs))
