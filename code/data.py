"""The data a run trains on: the channels read (channels.py), a validation split held out of train when there is
none (splits.py: stratified, by patient), and the pixels decoded once or streamed (``load_data``).
"""
import logging
import math
import os

import numpy as np
import torch

import channels
import distributed
import hosts
import images
import splits
from errors import ConfigError, DataError
from loaders import (CachedSplit, PixelNotes, ShardDataset, ShardStreamSplit, StreamSplit, check_bad_fraction, dataset,
                     decode_all)

logger = logging.getLogger("train")

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
AUTO_MAX_SIZE = images.AUTO_MAX_SIZE
SHUFFLE_BYTES = 512 * 1024 ** 2  # streamed shards: the shuffle buffers of all DataLoader workers together,
SHUFFLE_MAX = 8192               # and at most this many images per worker


class Data:
    """The splits (CachedSplit or StreamSplit; ``test`` may be None), the class names (channels.ClassNames), the
    task (multiclass or multilabel) and how the pixels are shaped (channels, size, normalisation)."""

    def __init__(self, train, val, test, channels, size, mean, std, streamed, classes=None, task="multiclass"):
        self.train, self.val, self.test = train, val, test
        self.channels, self.size, self.mean, self.std, self.streamed = channels, size, mean, std, streamed
        self.classes, self.task = classes, task


# ==================================================================================================
# Statistics
# ==================================================================================================
def channel_stats(pixels, limit=4096, max_pixels=2 ** 24):
    """Per-channel mean and std of a uint8 NCHW tensor (a sample of it: at most ``limit`` images evenly spread, and
    at most ``max_pixels`` pixels per channel, 334 images at 224 px), on the 0..1 scale."""
    limit = max(1, min(limit, max_pixels // max(1, pixels.shape[-1] * pixels.shape[-2])))
    step = max(1, len(pixels) // limit)
    x = pixels[::step]
    # from each channel's histogram of its 256 values: exact, and without a float copy of the sample (at 224 px,
    # 4096 images would be 800 MB of floats per channel)
    counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])]).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum(dim=1)
    mean = (counts * values).sum(dim=1) / n
    var = ((counts * (values - mean[:, None]) ** 2).sum(dim=1) / (n - 1).clamp_min(1))
    std = var.sqrt().clamp_min(1e-3)
    return [round(v, 5) for v in mean.tolist()], [round(v, 5) for v in std.tolist()]


# ==================================================================================================
# Loading
# ==================================================================================================
def load_data(args, device, dist_info=None):
    """Read the channels (class names, task, listings: channels.read_channels), hold out val when there is no val
    channel, and decode the images once into memory when they fit (``cache-max-gb``), else stream them from disk
    every epoch. Returns Data, with each host's part of the train split (``placement``)."""
    dist_info = dist_info or distributed.DistInfo()
    sharded = hosts.check_channels(args)
    classes, task, listed = channels.read_channels(args)
    n_channels, size = pixel_shape(args, listed)
    held = sum(getattr(v, "shard_count", 0) for v in listed.values() if v is not None)
    if listed["val"] is None:
        listed["train"], listed["val"] = hold_out_val(listed["train"], args.val_fraction, args.seed, task)
    place = placement(listed["train"], classes, task, sharded, dist_info)
    warn_of_a_val_split_that_cannot_judge(listed["val"], classes, task)
    warn_of_a_test_split_that_cannot_judge(listed["test"], classes, task)
    nbytes = sum(len(v) for v in listed.values() if v is not None) * n_channels * size * size
    streamed = nbytes > args.cache_max_gb * 1e9
    splits = {name: decode_split(name, listing, n_channels, size, args, device, streamed, task)
              for name, listing in listed.items()}
    if len(splits["val"]) == 0:
        raise DataError("the validation set is empty; add a val channel or raise val-fraction")
    if device.type == "cuda" and not streamed and nbytes < 0.25 * torch.cuda.mem_get_info(device)[0]:
        for split in splits.values():
            if split is not None:
                split.to(device)
    mean, std = normalisation(args, splits["train"], n_channels, streamed)
    if place.part is not None and not args.pretrained:  # every host's part: one normalisation for the model
        mean, std = (np.round(np.array(distributed.all_reduce_sum(v, dist_info, device)) / dist_info.world_size,
                              5).tolist() for v in (mean, std))
    train, val, test = splits["train"], splits["val"], splits["test"]
    logger.info("data: train=%d val=%d test=%s | %d colour channel(s), %dx%d px, %s (%.1f MB as uint8%s) | %s %s",
                len(train), len(val), len(test) if test is not None else "none", n_channels, size, size,
                "streamed from disk" if streamed else "cached in memory", nbytes / 1e6,
                (f", from {held} shards" if held else "") + streamed_memory(splits),
                "findings" if task == "multilabel" else "classes", list(classes))
    logger.info("%s from %s", "findings" if task == "multilabel" else "classes", classes.source)
    if len(place.by_host) > 1 or place.part is not None:
        logger.info("train images by host: %s%s", place.by_host, f" (each host its own part, {SHARDED_WHY})"
                    if place.part is not None else " (every host holds the whole split; the ranks share it out)")
    data = Data(train, val, test, n_channels, size, mean, std, streamed, classes, task)
    data.train_part, data.per_rank, data.train_images_by_host = place.part, place.per_rank, place.by_host
    return data


SHARDED_WHY = "ShardedByS3Key: every rank takes the largest part's steps, smaller parts wrap around"


class Placement:
    """Where the train split is: ``part`` (hosts.TrainPart when each host holds its own part, else None),
    ``per_rank`` (images each rank takes per epoch) and ``by_host`` ({host: images})."""

    def __init__(self, part, per_rank, by_host):
        self.part, self.per_rank, self.by_host = part, per_rank, by_host


def placement(listing, classes, task, sharded, dist_info):
    """The Placement of the train split (a collective with several processes), after checking that every class is
    trained: on this host's part alone when the channel is replicated, on every host's together when sharded."""
    if not sharded:
        check_every_class_is_trained(listing, classes, task)
        by_host = hosts.images_by_host(len(listing), dist_info)
        return Placement(None, math.ceil(len(listing) / dist_info.world_size), by_host)
    part = hosts.train_part(len(listing), classes, dist_info)
    lacking = [set(without_examples(listing, classes, task))]
    lacking = set.intersection(*distributed.gather_objects(lacking[0], dist_info))
    if lacking:
        what = "positive images of finding" if task == "multilabel" else "images of class"
        raise DataError(f"no host's part of the sharded train channel has {what} {sorted(lacking)[0]!r} of "
                        f"{classes.describe()}; add images of every class, or remove the ones that have none")
    return Placement(part, part.per_rank, part.by_host)


def streamed_memory(splits):
    """What streamed shards hold in memory at most (the data: line says it), or ""."""
    streams = [s for s in splits.values() if isinstance(s, ShardStreamSplit)]
    if not streams:
        return ""
    largest = max(streams, key=lambda s: s.bound_bytes())
    return (f"; shard by shard through a shuffle buffer of {largest.buffer} images per worker x "
            f"{max(1, largest.workers)} worker(s): at most {largest.bound_bytes() / 1e6:.0f} MB of pixels in memory "
            "per split read")


def pixel_shape(args, listed):
    """(channels, side) the model trains at: from the shards' headers when the train channel holds shards (an
    ``image-size`` or ``in-channels`` that differs is a ConfigError: the pixels were resized when the shards were
    written), else probed from the images (``images.probe``, ``image_size``). Every shard channel must match."""
    shaped = {name: listing.shape for name, listing in listed.items() if getattr(listing, "shape", None)}
    if "train" not in shaped:
        n_channels, size = images.probe(listed["train"].paths, args.max_image_pixels, page=args.page)
        n_channels, size = args.in_channels or n_channels, image_size(args.image_size, size)
    else:
        n_channels, size = shaped["train"]
        for flag, asked, held in (("image-size", args.image_size, size), ("in-channels", args.in_channels, n_channels)):
            if asked not in ("auto", 0, None) and asked != held:
                raise ConfigError(f"invalid hyperparameter: {flag}={asked}, but the train channel's shards hold "
                                  f"{held} ({'px' if flag == 'image-size' else 'channel(s)'}): they were resized when "
                                  f"written; leave {flag} out, or write the shards again (prepare_data --shards "
                                  f"--image-size N)")
    for name, (held_channels, held_size) in shaped.items():
        if (held_channels, held_size) != (n_channels, size):
            raise ConfigError(f"the {name} channel's shards hold {held_channels} channel(s) at {held_size} px, but this "
                              f"run trains at {n_channels} at {size} px; write every channel's shards in one "
                              "prepare_data run")
    return n_channels, size


def image_size(requested, most_common):
    """The side the model trains at: as asked, or (auto/0) the images' most common size, at most AUTO_MAX_SIZE
    (larger images are resized down: set image-size to train bigger)."""
    if requested not in ("auto", 0):
        return requested
    if most_common > AUTO_MAX_SIZE:
        logger.info("image-size auto: the images are %d px, the model trains at %d px (set image-size to change it)",
                    most_common, AUTO_MAX_SIZE)
    return min(most_common, AUTO_MAX_SIZE)


def hold_out_val(listing, fraction, seed, task):
    """Split the train listing into (train, val): stratified, seeded, by patient when it names patients, and with
    the copies of a file (the same bytes) on one side."""
    targets = listing.targets
    if task == "multilabel":
        targets = [tuple(k for k, v in enumerate(t) if v) for t in targets]
    groups, copies = channels.groups_keeping_copies_together(listing)
    kept, held = splits.split_indices(targets, fraction, seed, groups=groups)
    how = "stratified, no patient on both sides" if listing.groups is not None else "stratified"
    if copies:
        logger.warning("%d image file(s) in train hold the same bytes as another: each copy stays on its "
                       "original's side of the held-out val (an image may be in one split only)", copies)
        how += ", copies of an image on one side"
    logger.info("no val channel: held out %d of %d training images (val-fraction=%s, %s)", len(held), len(listing),
                fraction, how)
    train = listing.subset(kept)
    train.skipped = listing.skipped  # the train channel's images that could not be listed stay train's
    train.lost = getattr(listing, "lost", 0)
    return train, listing.subset(held)


def without_examples(listing, classes, task, both_sides=False):
    """Names of the classes with no image in ``listing``; multi-label: the findings with no positive image (and,
    with ``both_sides``, those with no negative one)."""
    if task == "multilabel":
        positives = [sum(t[k] for t in listing.targets) for k in range(len(classes))]
        return [classes[k] for k, n in enumerate(positives) if n == 0 or (both_sides and n == len(listing))]
    seen = set(listing.targets)
    return [classes[c] for c in range(len(classes)) if c not in seen]


def warn_of_a_val_split_that_cannot_judge(listing, classes, task):
    """A val split without images of some class (or, multi-label, without positives or negatives of a finding)
    cannot measure it: the val AUC leaves it out (or is undefined, and the epoch is kept on val loss alone), and
    the temperature and operating threshold are fitted without it. Said at start-up, not only at the end."""
    lacking = without_examples(listing, classes, task, both_sides=True)
    if lacking:
        multilabel = task == "multilabel"
        undefined = len(lacking) == len(classes) if multilabel else len(classes) - len(lacking) < 2
        logger.warning("the val split (%d images) lacks %s %s: %s; give val images of every class (or raise "
                       "val-fraction)", len(listing),
                       "positive or negative images of the finding(s)" if multilabel else "images of the class(es)",
                       lacking, "the val AUC is undefined, so the kept epoch is chosen on val loss alone and no "
                       "operating threshold can be fitted" if undefined else
                       "the val AUC and the calibration leave them out")


def warn_of_a_test_split_that_cannot_judge(listing, classes, task):
    """A test split without images of some class (or, multi-label, without positives or negatives of a finding):
    its AUC leaves them out, or is undefined (null in metrics.json, whose ``undefined`` says why). Said at start-up,
    once, before the hours of training."""
    lacking = without_examples(listing, classes, task, both_sides=True) if listing is not None else []
    if lacking:
        multilabel = task == "multilabel"
        undefined = len(lacking) == len(classes) if multilabel else len(classes) - len(lacking) < 2
        logger.warning("the test split (%d images) lacks %s %s: %s; give test images of every class to measure "
                       "them", len(listing),
                       "positive or negative images of the finding(s)" if multilabel else "images of the class(es)",
                       lacking, "the test AUC is undefined (null in metrics.json, whose 'undefined' says why)"
                       if undefined else "the test AUC leaves them out (metrics.json's 'undefined' names them)")


def check_every_class_is_trained(listing, classes, task):
    """A class (or finding) without training images cannot be learnt: DataError naming it and the label dict."""
    missing = without_examples(listing, classes, task)
    what = "positive images of finding" if task == "multilabel" else "images of class"
    if missing:
        raise DataError(f"train has no {what} {missing[0]!r} of {classes.describe()}; add images of every class, or "
                        "remove the ones that have none from that label dict")


def decode_split(name, listing, n_channels, size, args, device, streamed, task):
    """A StreamSplit (decoded by workers every epoch) or a CachedSplit (decoded now, bad images counted); either
    says its multi-page and non-finite images once (loaders.PixelNotes)."""
    if listing is None:
        return None
    targets = listing.targets if task != "multilabel" else [list(map(float, t)) for t in listing.targets]
    ds = dataset(listing.paths, targets, n_channels, size, args.max_image_pixels, names=listing.names,
                 page=args.page)
    notes = PixelNotes(name, args.page)
    if streamed:
        workers = args.num_workers if args.num_workers >= 0 else min(8, os.cpu_count() or 1)
        if isinstance(ds, ShardDataset):  # shard by shard through a shuffle buffer: SHUFFLE_BYTES over the workers
            buffer = min(SHUFFLE_MAX, len(ds), max(64, SHUFFLE_BYTES // max(1, workers) // (n_channels * size ** 2)))
            split = ShardStreamSplit(ds, workers, device.type == "cuda", listing.groups, notes, buffer=buffer)
        else:
            split = StreamSplit(ds, workers, pin_memory=device.type == "cuda", groups=listing.groups, notes=notes)
        split.skipped.update(listing.skipped)
        return split
    pixels, labs, bad = decode_all(ds, workers=max(2, os.cpu_count() or 1), notes=notes)
    notes.say()
    lost = getattr(listing, "lost", 0)  # a shard channel's images in no readable shard
    check_bad_fraction(len(bad) + lost, len(listing) + lost, args.max_bad_fraction, name)
    if len(labs) == 0:
        raise DataError(f"none of the {len(listing)} images in {name} could be read; check the files")
    kept = [i for i, p in enumerate(listing.paths) if p not in bad]
    split = CachedSplit(pixels, labs, [listing.names[i] for i in kept],
                        [listing.groups[i] for i in kept] if listing.groups is not None else None)
    split.bad = len(bad)
    split.skipped = {**listing.skipped, **{n: bad[p] for p, n in zip(listing.paths, listing.names) if p in bad}}
    return split


def normalisation(args, train, n_channels, streamed):
    """Per-channel (mean, std): ImageNet's for pretrained weights, else the training images' own."""
    if args.pretrained:
        mean = IMAGENET_MEAN if n_channels == 3 else [float(np.mean(IMAGENET_MEAN))]
        std = IMAGENET_STD if n_channels == 3 else [float(np.mean(IMAGENET_STD))]
        return mean, std
    if streamed:
        sample = [train.dataset[i][0] for i in range(0, len(train), max(1, len(train) // 1024))]
        return channel_stats(torch.stack(sample))
    return channel_stats(train.images.cpu())
