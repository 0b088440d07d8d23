"""How long a run trains, and what follows from its length: the one place where ``auto`` hyperparameters become
numbers (``make_plan``), and the learning rate as a pure function of the optimiser step (``lr_at``).

The rule (README, "Training length"): a budget of optimiser steps, not of epochs, so that a 300-image set gets as
many useful updates as a 5,000-image one and a 100,000-image set does not run 40 full epochs on a CPU.

* ``batch-size auto``: the largest power of two up to 128 that gives at least 16 batches an epoch (min 16), per
  process: 300 images -> 16, 1,000 -> 32, 4,708 -> 128.
* ``lr auto``: 2e-3 at a global batch of 128, scaled by the square root of the global batch (batch size x
  processes; the square-root rule for Adam, Malladi et al., "On the SDEs and Scaling Rules for Adaptive Gradient
  Algorithms", NeurIPS 2022).
* ``epochs auto``: enough epochs for ``train-steps`` (1,500) optimiser steps, at least 5 and at most 300 epochs.
* ``warmup-epochs auto``: 3% of the run's steps (at least 10 steps); ``patience auto``: a quarter of the epochs
  (at least 3); ``ema auto``: a decay that averages over the last tenth of the run, 1 - 10 / total steps,
  within [0.9, 0.9999]. So warm-up, early stopping and the EMA follow the run's own clock.
* ``max-train-minutes`` (0: no limit): after the first epoch, the epochs are cut so that training ends in time;
  the schedule, and the warm-up, EMA and patience that are ``auto``, follow the new length (logged as a new plan).

``epochs``, ``batch-size``, ``lr`` and the rest are honoured exactly when set to a number.

**The fine-tuning plan** (``fine_tuning_plan``), when the model starts from weights (``pretrained=true``, or a
``model`` channel): the same rules on a shorter budget, ``fine-tune-steps`` (500; BiT's HyperRule, Kolesnikov et
al. 2020, fine-tunes data sets under 20k images for 500 steps), with discriminative learning rates (Howard & Ruder
2018, ULMFiT; the two-group form): the layers made anew (the classifier head) peak at ``lr``, the loaded ones at
``lr x backbone-lr-scale`` (auto: 0.1), and a longer warm-up (10% of the steps, at least 10) while the new head is
still random. ``max-train-minutes`` cuts it as the other plan. What it buys on the development data is measured in
README, "Transfer learning" (``benchmarks/run.py --only transfer``).
"""
import argparse
import dataclasses
import math

BASE_LR, BASE_BATCH = 2e-3, 128
MIN_BATCH, MAX_BATCH, MIN_BATCHES_PER_EPOCH = 16, 128, 16
MIN_EPOCHS, MAX_EPOCHS = 5, 300
WARMUP_FRACTION, MIN_WARMUP_STEPS = 0.03, 10
PATIENCE_FRACTION, MIN_PATIENCE = 0.25, 3
EMA_HORIZON_FRACTION, EMA_RANGE = 0.1, (0.9, 0.9999)
FINE_TUNING, FROM_SCRATCH = "fine-tuning", "from scratch"
FINE_TUNE_BACKBONE_LR_SCALE, FINE_TUNE_WARMUP_FRACTION = 0.1, 0.1


@dataclasses.dataclass
class Plan:
    """A run's length and what follows from it (numbers only; ``auto`` lists what was derived)."""

    batch_size: int
    steps_per_epoch: int
    epochs: int
    warmup_steps: int
    lr: float
    ema: float
    patience: int
    auto: list
    backbone_lr_scale: float = 1.0  # the loaded layers' peak lr is lr x this (fine-tuning); new layers peak at lr
    recipe: str = FROM_SCRATCH  # or FINE_TUNING (the model starts from weights)

    @property
    def total_steps(self):
        return max(1, self.epochs * self.steps_per_epoch)

    def to_dict(self):
        return dict(dataclasses.asdict(self), total_steps=self.total_steps)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe(self):
        derived = f" (auto: {', '.join(self.auto)})" if self.auto else ""
        backbone = (f" for new layers, x{self.backbone_lr_scale:g} for loaded ones ({FINE_TUNING})"
                    if self.recipe == FINE_TUNING else "")
        return (f"plan: {self.epochs} epochs x {self.steps_per_epoch} steps = {self.total_steps} steps of batch "
                f"{self.batch_size}, lr {self.lr:.3g}{backbone}, warm-up {self.warmup_steps} steps, ema {self.ema:.5g}, "
                f"patience {self.patience}{derived}")


def auto_batch_size(n_per_process):
    """The largest power of two in [16, 128] that gives at least 16 batches an epoch (16 when even that does not)."""
    size = MAX_BATCH
    while size > MIN_BATCH and n_per_process / size < MIN_BATCHES_PER_EPOCH:
        size //= 2
    return size


def steps_in_epoch(n_indices, batch_size, max_steps=0):
    """Full batches of an epoch (the last partial one is dropped; one batch if the data is smaller)."""
    steps = max(1, n_indices // batch_size)
    return min(steps, max_steps) if max_steps else steps


def starts_from_weights(args):
    """Whether the model starts from weights (ImageNet's, or an earlier model's): then the fine-tuning plan."""
    return bool(getattr(args, "pretrained", False) or getattr(args, "initial_model", None))


def make_plan(args, n_per_process, world_size=1):
    """Resolve the ``auto`` hyperparameters for ``n_per_process`` training images per process, ``world_size``
    processes (module docstring); a model that starts from weights gets ``fine_tuning_plan``."""
    if starts_from_weights(args):
        return fine_tuning_plan(args, n_per_process, world_size)
    auto = [name for name in ("batch_size", "lr", "epochs", "warmup_epochs", "ema", "patience")
            if getattr(args, name) == "auto"]
    batch = auto_batch_size(n_per_process) if args.batch_size == "auto" else args.batch_size
    batch = min(batch, max(1, n_per_process))
    steps = steps_in_epoch(n_per_process, batch, args.max_steps_per_epoch)
    lr = BASE_LR * math.sqrt(batch * world_size / BASE_BATCH) if args.lr == "auto" else args.lr
    epochs = (min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(args.train_steps / steps))) if args.epochs == "auto"
              else args.epochs)
    return Plan(batch_size=batch, steps_per_epoch=steps, epochs=epochs, lr=lr, auto=auto,
                **_follows_the_length(args, epochs, steps))


def fine_tuning_plan(args, n_per_process, world_size=1):
    """The plan of a model that starts from weights (module docstring): the from-scratch rules on the
    ``fine-tune-steps`` budget, a 10% warm-up, and the loaded layers' lr scaled by ``backbone-lr-scale``."""
    scratch = argparse.Namespace(**dict(vars(args), pretrained=False, initial_model=None,
                                        train_steps=args.fine_tune_steps))
    plan = make_plan(scratch, n_per_process, world_size)
    scale = (FINE_TUNE_BACKBONE_LR_SCALE if args.backbone_lr_scale == "auto" else args.backbone_lr_scale)
    auto = plan.auto + (["backbone_lr_scale"] if args.backbone_lr_scale == "auto" else [])
    plan = dataclasses.replace(plan, backbone_lr_scale=scale, recipe=FINE_TUNING, auto=auto)
    return dataclasses.replace(plan, **_follows_the_length(args, plan.epochs, plan.steps_per_epoch,
                                                           FINE_TUNE_WARMUP_FRACTION))


def _follows_the_length(args, epochs, steps, warmup_fraction=WARMUP_FRACTION):
    """Warm-up steps, EMA decay and patience for a run of ``epochs`` x ``steps`` (each as set, or ``auto``; an auto
    warm-up is ``warmup_fraction`` of the steps)."""
    total = max(1, epochs * steps)
    if args.warmup_epochs == "auto":
        warmup = max(MIN_WARMUP_STEPS, round(warmup_fraction * total))
    else:
        warmup = int(args.warmup_epochs * steps)
    ema = (min(EMA_RANGE[1], max(EMA_RANGE[0], 1 - 1 / (EMA_HORIZON_FRACTION * total))) if args.ema == "auto"
           else args.ema)
    patience = max(MIN_PATIENCE, round(PATIENCE_FRACTION * epochs)) if args.patience == "auto" else args.patience
    return dict(warmup_steps=min(warmup, total - 1), ema=ema, patience=patience)


def cut_to_time(plan, seconds_per_epoch, max_minutes, args=None):
    """The plan's epochs cut so that training ends within ``max_minutes`` (0: unchanged), given the measured
    seconds of an epoch; never below what has already been trained (1 epoch). With ``args``, the warm-up, EMA and
    patience that are ``auto`` follow the new length, as make_plan derives them. Returns a new Plan or the same."""
    if not max_minutes or seconds_per_epoch <= 0:
        return plan
    fits = max(1, int(max_minutes * 60 // seconds_per_epoch))
    if fits >= plan.epochs:
        return plan
    return with_epochs(plan, fits, args)


def with_epochs(plan, epochs, args=None):
    """``plan`` for ``epochs`` epochs; with ``args``, its ``auto`` warm-up, EMA and patience re-derived for that
    length (without, only the warm-up is kept inside the run)."""
    if args is not None:
        fraction = FINE_TUNE_WARMUP_FRACTION if plan.recipe == FINE_TUNING else WARMUP_FRACTION
        return dataclasses.replace(plan, epochs=epochs,
                                   **_follows_the_length(args, epochs, plan.steps_per_epoch, fraction))
    return dataclasses.replace(plan, epochs=epochs,
                               warmup_steps=min(plan.warmup_steps, epochs * plan.steps_per_epoch - 1))


def lr_at(step, *, peak, total_steps, warmup_steps):
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up to ``peak`` over ``warmup_steps``, then
    cosine decay to 1% of the peak at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))
