"""Whether a run trains one model or a K-fold ensemble, and of how many members: the rule of ``ensemble=auto``
(README, "Model quality"), pure functions of the counts and of the measured time, so that they are tested alone.

A K-fold ensemble pools train and val (the given val channel or the held-out one; a test channel stays the test),
splits the pool into K folds (splits.kfold_indices: stratified, by patient) and trains one member per fold on the
other folds, each choosing its epoch on its own fold. Every image is then trained on (by K - 1 members) and judged
(out of fold, by the one that did not see it), and the temperature and operating threshold are fitted on all the
out-of-fold predictions instead of on a val split of 5-10% of the images.

``ensemble=auto`` trains one when it can help and the run can afford it:

* the pool holds at most ``MAX_IMAGES`` (2,000) images: above that a single model's val split is already large
  enough to choose an epoch and fit a threshold, and K members cost K times the training;
* every fold (a member's validation) holds at least ``MIN_FOLD_IMAGES`` (100) images and ``MIN_FOLD_CLASS`` (20)
  of every class (multi-label: positives of every finding), else its epoch choice is noise: K is
  ``min(folds, pool // 100, rarest class // 20)``, and under ``MIN_MEMBERS`` (3) the run trains one model;
* the members fit the time budget (``in_time``): ``max-train-minutes`` when set, else ``BUDGET_MINUTES`` (5
  minutes of training, so that a default run of up to 5,000 images at 28-64 px ends within 6 minutes on 2 CPU
  cores; on a GPU the same rule with its own measured speed). The first member's second epoch (training and
  validation; the first carries one-off warm-up costs) is timed; a member is taken to cost that times its plan's
  epochs (an upper bound: early stopping usually ends it sooner); K shrinks to what fits, and under 3 the run
  falls back to one model;
* the images are cached in memory (streamed images are not split into folds).

``ensemble=on`` trains ``folds`` members whatever the counts (every class needs at least ``folds`` images) and the
time (with ``max-train-minutes`` each member gets its share); ``off`` trains one model. Every decision is one
log line and metrics.json's ``ensemble.rule``.
"""
import dataclasses

MAX_IMAGES = 2000
MIN_FOLD_IMAGES, MIN_FOLD_CLASS = 100, 20
MIN_MEMBERS = 3
BUDGET_MINUTES = 5.0


@dataclasses.dataclass
class Decision:
    """``members``: 1 (one model) or K (a K-fold ensemble); ``why``: the rule that decided, in words; ``timed``:
    whether the time rule still has to check it after the first member's timed epoch (auto only)."""

    members: int
    why: str
    timed: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)


def decide(mode, folds, *, pool, smallest_class, streamed=False):
    """The decision before training (``mode``: auto, on or off; ``folds``: the hyperparameter; ``pool``: train + val
    images; ``smallest_class``: images of the rarest class, or positives of the rarest finding). Raises ValueError
    (with the line to show) for ``on`` when the data cannot be split so."""
    if mode == "off":
        return Decision(1, "ensemble=off")
    if mode == "on":
        if streamed:
            raise ValueError("ensemble=on needs the images cached in memory, but they are streamed from disk (above "
                             "cache-max-gb); raise cache-max-gb or set ensemble=off")
        if smallest_class < folds:
            raise ValueError(f"ensemble=on with folds={folds} needs at least {folds} images of every class, but the "
                             f"rarest has {smallest_class} in train + val; lower folds or set ensemble=off")
        return Decision(folds, f"ensemble=on: {folds} folds of {pool} images")
    if streamed:
        return Decision(1, "ensemble=auto: one model, the images are streamed from disk (above cache-max-gb)")
    if pool > MAX_IMAGES:
        return Decision(1, f"ensemble=auto: one model, train + val hold {pool} images, more than {MAX_IMAGES}")
    k = min(folds, pool // MIN_FOLD_IMAGES, smallest_class // MIN_FOLD_CLASS)
    if k < MIN_MEMBERS:
        return Decision(1, f"ensemble=auto: one model, {pool} images with {smallest_class} in the rarest class "
                           f"cannot make {MIN_MEMBERS} folds of {MIN_FOLD_IMAGES}+ images and {MIN_FOLD_CLASS}+ of "
                           "every class")
    shrunk = f" (folds={folds} shrunk: each fold needs {MIN_FOLD_IMAGES}+ images and {MIN_FOLD_CLASS}+ of every " \
             "class)" if k < folds else ""
    return Decision(k, f"ensemble=auto: {k} folds of {pool} images (at most {MAX_IMAGES}){shrunk}", timed=True)


def budget_minutes(max_train_minutes):
    """The training time the members share: max-train-minutes when set, else BUDGET_MINUTES."""
    return max_train_minutes if max_train_minutes else BUDGET_MINUTES


def in_time(decision, member_seconds, budget_seconds):
    """``decision`` after the first member's timed epoch: ``member_seconds`` is what one member is expected to
    take, ``budget_seconds`` what the members may take together. Returns the same decision when its members fit,
    fewer members (not below MIN_MEMBERS) when that fits, else one model; the ``why`` says so."""
    fits = int(budget_seconds // max(member_seconds, 1e-9))
    minutes = f"about {member_seconds / 60:.2g} min a member, {budget_seconds / 60:.2g} min budget"
    if fits >= decision.members:
        return Decision(decision.members, f"{decision.why}; {minutes}")
    if fits >= MIN_MEMBERS:
        return Decision(fits, f"{decision.why}; shrunk to {fits} members to fit the time ({minutes})")
    return Decision(1, f"{decision.why}; but one model: {MIN_MEMBERS} members would not fit the time ({minutes})")
