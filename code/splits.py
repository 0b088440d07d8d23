"""Held-out splits: stratified by class, seeded, and grouped by patient when the data names patients, so that no
patient has images on both sides (a split that puts one patient's images in train and in val or test inflates
every metric).

One rule for train.py (holding out val when there is no val channel) and for the client (prepare_data holding out
a test split): this module imports only the standard library and nothing else of ``code/``, so that the client
package (``medimg``) loads this very file (tests/test_architecture.py checks it).

``targets[i]`` is what sample i holds: a class index (single-label) or a tuple of finding indices (multi-label;
an empty tuple is a sample with no finding).
"""
import random
from collections import Counter, defaultdict


def _classes_of(target):
    if isinstance(target, (tuple, list)):
        return tuple(target) if target else ("none",)
    return (target,)


def split_indices(targets, fraction, seed, groups=None):
    """Indices ``(kept, held_out)`` with about ``fraction`` of the samples held out, reproducibly for a seed.

    Without ``groups`` and with one class per sample: each class is held out in proportion (at least one image of
    every class with two or more, never all of one). With ``groups`` (patient ids) or several findings per sample:
    whole groups are assigned, largest first, each to the side that brings the held-out class counts closest to
    ``fraction`` of every class's total (the greedy rule of scikit-learn's StratifiedGroupKFold, for two sides of
    unequal size) - stratified as far as the groups allow. Raises ValueError for a fraction outside (0, 1).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    multi = any(isinstance(t, (tuple, list)) for t in targets)
    if groups is None and not multi:
        return _stratified(targets, fraction, seed)
    groups = list(range(len(targets))) if groups is None else list(groups)
    return _grouped(targets, groups, fraction, seed)


def _stratified(labels, fraction, seed):
    rng = random.Random(seed)
    by_class = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    kept, held = [], []
    for label in sorted(by_class, key=str):
        idx = by_class[label]
        rng.shuffle(idx)
        k = min(max(int(round(fraction * len(idx))), 1 if len(idx) > 1 else 0), len(idx) - 1)
        held += idx[:k]
        kept += idx[k:]
    return sorted(kept), sorted(held)


def _grouped(targets, groups, fraction, seed):
    members = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    counts = {g: Counter(c for i in idx for c in _classes_of(targets[i])) for g, idx in members.items()}
    totals = Counter()
    for c in counts.values():
        totals.update(c)
    order = sorted(members, key=str)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: equal sizes stay in the seeded order
    want = {c: fraction * n for c, n in totals.items()}
    held_counts, held_n, target_n = Counter(), 0, fraction * len(targets)
    held = []
    for group in order:
        before = _distance(held_counts, want) + abs(held_n - target_n) / max(target_n, 1)
        after_counts = held_counts + counts[group]
        after = _distance(after_counts, want) + abs(held_n + len(members[group]) - target_n) / max(target_n, 1)
        if after < before:
            held_counts, held_n = after_counts, held_n + len(members[group])
            held += members[group]
    held_set = set(held)
    return [i for i in range(len(targets)) if i not in held_set], sorted(held)


def _distance(counts, want):
    """How far held-out class counts are from their targets, relative to each target (rare classes count)."""
    return sum(abs(counts.get(c, 0) - w) / max(w, 1.0) for c, w in want.items())


def kfold_indices(targets, k, seed, groups=None):
    """``k`` folds (lists of sample indices, each sorted) that together hold every sample once, reproducibly for a
    seed: each fold is the validation of one member of a K-fold ensemble and the training data of the others.

    Without ``groups`` and with one class per sample: every class dealt in turn over the folds from a seeded
    shuffle (each fold gets floor or ceil of 1/k of each class; the fold that starts each class rotates, so the
    fold sizes differ by at most one). With ``groups`` (patient ids) or several findings per sample: whole groups,
    largest first, each to the fold that brings the folds' class counts (finding counts) closest to 1/k of each
    total (scikit-learn's StratifiedGroupKFold greedy rule), so that no patient is in two folds. Raises ValueError
    for k < 2 or more folds than samples (or groups)."""
    multi = any(isinstance(t, (tuple, list)) for t in targets)
    n_units = len(set(groups)) if groups is not None else len(targets)
    if k < 2 or k > n_units:
        raise ValueError(f"cannot make {k} folds of {n_units} {'groups' if groups is not None else 'samples'}; "
                         "folds must be between 2 and their number")
    if groups is None and not multi:
        return _stratified_folds(targets, k, seed)
    return _grouped_folds(targets, list(range(len(targets))) if groups is None else list(groups), k, seed)


def _stratified_folds(labels, k, seed):
    rng = random.Random(seed)
    by_class = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    folds, start = [[] for _ in range(k)], 0
    for label in sorted(by_class, key=str):
        idx = by_class[label]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[(start + j) % k].append(i)
        start = (start + len(idx)) % k  # the next class starts where this one stopped: sizes stay within one
    return [sorted(f) for f in folds]


def _grouped_folds(targets, groups, k, seed):
    members = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    counts = {g: Counter(c for i in idx for c in _classes_of(targets[i])) for g, idx in members.items()}
    totals = Counter()
    for c in counts.values():
        totals.update(c)
    order = sorted(members, key=str)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: equal sizes stay in the seeded order
    want = {c: n / k for c, n in totals.items()}
    target_n = len(targets) / k
    fold_counts, fold_n, folds = [Counter() for _ in range(k)], [0] * k, [[] for _ in range(k)]

    def cost(f, group):
        after = _distance(fold_counts[f] + counts[group], want) + abs(fold_n[f] + len(members[group]) - target_n) / \
            max(target_n, 1)
        before = _distance(fold_counts[f], want) + abs(fold_n[f] - target_n) / max(target_n, 1)
        return after - before, fold_n[f], f

    for group in order:
        f = min(range(k), key=lambda f: cost(f, group))
        fold_counts[f] += counts[group]
        fold_n[f] += len(members[group])
        folds[f] += members[group]
    return [sorted(f) for f in folds]
