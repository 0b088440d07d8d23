"""``prepare_data --shards``: channels of image files -> channels of shards, written once on the client.

    python -m medimg.prepare_data --folder data/chest --shards --out data/chest-shards [--image-size 224]
    python -m medimg.prepare_data --npz pneumoniamnist.npz --shards --out data/pneumonia-shards

The channels are read exactly as train.py reads them (code/channels.py, loaded from the files that ship: class
folders or labels.csv, label_dict.json, the class-name precedence, patients, the check that no image is in two
splits), and every image is decoded by train.py's own decoder (code/images.py) at the training size and channels,
so training from the shards sees the same listing, targets, patients, names and pixels as training from the
folders, and the same seed gives the same held-out val split. The size is ``--image-size`` or train.py's
``image-size auto`` rule (the train images' most common side, at most 224); the channels are the probe's rule (colour
when a sampled train image holds colour). Each channel is written by code/shards.py (the format's one home) into
``OUT/<channel>/shard-*.tar`` with index.json and label_dict.json; an image the decoder refuses is kept as a record
with its reason (train.py counts it under max-bad-fraction and names it in metrics.json, as for the file).
"""
import os
import types
from concurrent.futures import ThreadPoolExecutor

from medimg import container
from medimg.progress import progress

CHUNK = 256  # images decoded per task (in order), so that memory stays at a few chunks however many images


def source_channels(folder):
    """``{role: channel folder}`` of the top-level folders of ``folder`` that train.py reads as splits."""
    layout = container.layout
    out = {}
    for entry in sorted(os.listdir(folder)):
        role = layout.channel_role(entry)
        if role in layout.CHANNEL_ROLES and os.path.isdir(os.path.join(folder, entry)):
            if role in out:
                raise ValueError(f"{folder} has two folders for the {role} split: {out[role]!r} and {entry!r}")
            out[role] = entry
    if "train" not in out:
        raise ValueError(f"{folder} has no train channel folder (train/ or training/); give the folder whose "
                         "subfolders are the channels, as train.py reads them")
    return out


def read_source(folder, names, label_dict=None):
    """(ClassNames, task, {role: Listing}) of the channels as train.py lists them."""
    channels = container.load("channels")
    shards = container.load("shards")
    for role, name in names.items():
        if shards.holds_shards(os.path.join(folder, name)):
            raise ValueError(f"{os.path.join(folder, name)} already holds shards; give the folder of image files")
    args = types.SimpleNamespace(label_dict=label_dict, task="auto", max_bad_fraction=1.0, positive_class=None,
                                 ordinal=False, target_sensitivity=0.0,
                                 **{role: os.path.join(folder, names[role]) if role in names else None
                                    for role in ("train", "val", "test")})
    try:
        return channels.read_channels(args)
    except (channels.DataError, channels.ConfigError) as exc:
        raise ValueError(str(exc)) from exc


def decoded(listing, n_channels, size, max_pixels, page, workers):
    """``(pixels or None, reason or None)`` of each image of ``listing``, in order (code/images.py's decoder)."""
    images = container.load("images")

    def one(path):
        try:
            return images.load(path, n_channels, size, max_pixels, page), None
        except images.BadImageError as exc:
            return None, images.bad_image_reason(exc)

    def chunk(start):
        return [one(p) for p in listing.paths[start:start + CHUNK]]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        starts = range(0, len(listing), CHUNK)
        for begin in range(0, len(starts), workers * 2):  # a bounded window of chunks in flight
            for part in pool.map(chunk, starts[begin:begin + workers * 2]):
                yield from part


def write_shards(folder, out, *, image_size=None, shard_mb=None, label_dict=None, page=0,
                 max_pixels=64_000_000, workers=None, log=print):
    """Write the channels of ``folder`` as shards under ``out`` (which must not exist or be empty); returns
    ``{channel folder: index.json}``. ValueError with one line for data train.py would refuse."""
    shards, images, layout = container.load("shards"), container.load("images"), container.layout
    channels = container.load("channels")
    names = source_channels(folder)
    classes, task, listings = read_source(folder, names, label_dict)
    n_channels, most_common = images.probe(listings["train"].paths, max_pixels, page=page)
    size = image_size or min(most_common, images.AUTO_MAX_SIZE)
    meta = {"task": task, "classes": list(classes), "classes_from": classes.source,
            "sorted_names": bool(getattr(classes, "sorted_names", False)), "image_size": size,
            "channels": n_channels, "page": page, "max_image_pixels": max_pixels}
    workers = workers or min(8, os.cpu_count() or 1)
    shard_bytes = int((shard_mb or shards.DEFAULT_SHARD_MB) * 1_000_000)
    written = {}
    for role, listing in listings.items():
        if listing is None:
            continue
        target_dir = os.path.join(out, names[role])
        writer = shards.ShardWriter(target_dir, meta, shard_bytes=shard_bytes)
        digests = channels.file_digests(listing)
        pixels = progress(decoded(listing, n_channels, size, max_pixels, page, workers), total=len(listing),
                          desc=f"shards {names[role]}", unit="image")
        for i, (arr, reason) in enumerate(pixels):
            writer.add(listing.names[i], listing.targets[i], listing.groups[i] if listing.groups else None,
                       digests[i], pixels=arr, skip=reason)
        written[names[role]] = writer.close(skipped=listing.skipped)
        write_label_dict(os.path.join(target_dir, layout.LABEL_DICT_FILE), classes)
    write_label_dict(os.path.join(out, layout.LABEL_DICT_FILE), classes)
    for name, index in written.items():
        bad = sum(s["skipped"] for s in index["shards"])
        log(f"{name}: {index['count']} images in {len(index['shards'])} shard(s), "
            f"{sum(s['bytes'] for s in index['shards']) / 1e6:.1f} MB, {n_channels} channel(s) at {size} px"
            + (f"; {bad} unreadable image(s) recorded as skipped" if bad else "")
            + (f"; {len(index['skipped'])} listed but missing" if index["skipped"] else ""))
    log(f"wrote {out}: one shard channel per split, each with index.json and label_dict.json "
        f"({task}, classes {list(classes)} from {classes.source})")
    return written


def write_label_dict(path, classes):
    import json

    with open(path, "w", encoding="utf-8") as fh:
        json.dump(container.layout.label_dict_json(list(classes)), fh, indent=2, ensure_ascii=False)
        fh.write("\n")
