"""What metrics.json says besides the figures, so that a reviewer can account for every image and every null:
the images each split could not use and why (``skipped``), the figures a split cannot define and why
(``undefined``), and what the bootstrap intervals resampled (``interval_unit``).
"""
import csv
import io
import os

import numpy as np

import distributed
import utils

SKIPPED_FILE = "skipped_images.csv"  # beside metrics.json when a split's list is long
INLINE_LIMIT = 50                     # at most this many names per split in metrics.json itself
FIRST = 10                            # the names kept in metrics.json when they move to the file
SPLITS = ("train", "val", "test")


# ==================================================================================================
# Skipped images
# ==================================================================================================
def skipped_images(data, dist_info):
    """``{split: {name: reason}}`` for the run's splits (names relative to the channel, as in the predictions).

    A cached split was decoded whole by every rank, so each rank knows all of its images; a streamed split learns
    its unreadable images while reading, each rank its own shard: those are gathered over the ranks (a collective:
    every rank calls this at the same point)."""
    out = {}
    for name in SPLITS:
        split = getattr(data, name)
        if split is None:
            continue
        found = dict(split.skipped)
        own_part = name == "train" and getattr(data, "train_part", None) is not None  # each host its own images
        if (data.streamed or own_part) and dist_info.enabled:
            for part in distributed.gather_objects(found, dist_info):
                found.update(part)
        out[name] = found
    return out


def skipped_section(skipped, output_dir):
    """metrics.json's ``skipped``: per split ``{"count", "reasons": {reason: n}, "images": [names]}``; a split with
    more than INLINE_LIMIT keeps its first FIRST names (``first_images``) and says that every name, with its
    reason, is in ``images_file`` (SKIPPED_FILE, written here beside metrics.json, one row per skipped image of
    every split). A file of an earlier run that this one does not replace is removed, so that it is never read
    as this run's."""
    section, long = {}, False
    for split, found in skipped.items():
        names = sorted(found)
        reasons = {}
        for name in names:
            reasons[found[name]] = reasons.get(found[name], 0) + 1
        entry = {"count": len(names), "reasons": reasons}
        if len(names) > INLINE_LIMIT:
            entry.update(first_images=names[:FIRST], images_file=SKIPPED_FILE)
            long = True
        else:
            entry["images"] = names
        section[split] = entry
    path = os.path.join(output_dir, SKIPPED_FILE)
    if long:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["split", "image", "reason"])
        for split, found in skipped.items():
            writer.writerows([split, name, found[name]] for name in sorted(found))
        utils.atomic_write_text(path, text.getvalue())
    elif os.path.exists(path):
        os.unlink(path)
    return section


# ==================================================================================================
# Undefined figures
# ==================================================================================================
def undefined(labels, classes, task, split, positive=1):
    """``{figure: why}`` for the figures of a split that are undefined (null in metrics.json) because the split
    lacks a class: ``auc``; binary ``sensitivity``/``specificity`` (of the class index ``positive``); more classes
    ``per_class_recall`` (per class); multi-label ``per_finding`` (per finding). Empty when all are defined."""
    labels = np.asarray(labels)
    if task == "multilabel":
        return _undefined_findings(labels > 0.5, classes, split)
    present = set(np.unique(labels).astype(int).tolist())
    absent = [classes[c] for c in range(len(classes)) if c not in present]
    out = {}
    if len(present) < 2:
        only = ", ".join(repr(classes[c]) for c in sorted(present))
        out["auc"] = f"the {split} split holds only images of {only}: an AUC needs images of two classes"
    if len(classes) == 2:
        for c, figure in ((positive, "sensitivity"), (1 - positive, "specificity")):
            if c not in present:
                out[figure] = f"the {split} split holds no images of {classes[c]!r}"
    elif absent:
        out["per_class_recall"] = {name: f"the {split} split holds no images of {name!r}" for name in absent}
    return out


def _undefined_findings(y, findings, split):
    per = {}
    for k, name in enumerate(findings):
        positives = int(y[:, k].sum())
        if positives == 0:
            per[name] = f"the {split} split has no image with {name!r}: its AUC and sensitivity need some"
        elif positives == len(y):
            per[name] = f"every image of the {split} split has {name!r}: its AUC and specificity need some without"
    out = {"per_finding": per} if per else {}
    if per and len(per) == len(findings):
        out["auc"] = f"no finding has both positive and negative images in the {split} split"
    return out


# ==================================================================================================
# Interval unit
# ==================================================================================================
def interval_unit(split):
    """What a split's bootstrap intervals resampled, in words: "57 patients (each patient's images together)" or
    "240 images"; None when the split has no intervals."""
    if "ci95" not in split:
        return None
    if split.get("ci95_unit") == "patient":
        return f"{split['n_groups']} patients (each patient's images together)"
    return f"{split['n']} images"
