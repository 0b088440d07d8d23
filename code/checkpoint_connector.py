"""What a training checkpoint holds: built from the trainer (``dump``) and put back into it (``restore``, in named
steps), in one class, as Lightning's ``checkpoint_connector.py`` keeps ``dump_checkpoint`` beside its
``restore_*`` steps. The files themselves (names, atomic writes, the newest two kept, broken ones skipped) are
checkpoints.py's.

A checkpoint (format ``CHECKPOINT_FORMAT``, loaded with ``weights_only=True``): ``format``, ``epoch`` (completed)
and ``step`` (into the next one, after a stop inside an epoch), ``model``, ``optimizer``, ``scaler``, ``ema``,
``train_state`` (engine.TrainState's fields, early_stopping.EarlyStopping's ``state_dict`` with the best weights
as ``best_model``), ``fingerprint`` (what a resumed run must match), ``rng`` (every generator) and ``partial``
(the running sums and augmentation generator of an epoch cut short).
"""
import dataclasses
import logging

import torch

import schedule
import utils
from errors import ConfigError

logger = logging.getLogger("train")

CHECKPOINT_FORMAT = 2  # bumped when the checkpoint's content changes shape


def fingerprint(args, data, num_classes):
    """What a checkpoint must match to be resumed."""
    return {"model": args.model, "num_classes": num_classes, "in_channels": data.channels, "image_size": data.size}


class CheckpointConnector:
    """Dumps and restores the checkpoint of ``trainer`` (an engine.Trainer): its model, EMA, optimiser, scaler,
    state, early stopping and plan, and where to go on from (``start_epoch``; the epoch loop's ``resume_step``
    and ``partial``)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.fingerprint = fingerprint(trainer.args, trainer.data, len(trainer.classes))

    def dump(self, epoch, step=0, partial=None):
        """The checkpoint after ``epoch`` completed epochs and ``step`` steps into the next one."""
        t = self.trainer
        return {"format": CHECKPOINT_FORMAT, "epoch": epoch, "step": step, "model": t.model.state_dict(),
                "optimizer": t.optimizer.state_dict(),
                "scaler": t.scaler.state_dict() if t.scaler is not None else None,
                "ema": t.ema.state_dict() if t.ema is not None else None,
                "train_state": dict(t.state.to_dict(), **t.early_stopping.state_dict()),
                "fingerprint": self.fingerprint, "rng": utils.rng_state(), "partial": partial}

    def restore(self, ckpt, path, folder):
        """Put checkpoint ``ckpt`` (read from ``path`` in ``folder``) back: refused when it does not fit this run."""
        self.check_compatible(ckpt, path, folder)
        self.restore_model(ckpt, path)
        self.restore_optimizer(ckpt)
        self.restore_training_state(ckpt)
        self.restore_rng(ckpt)

    def check_compatible(self, ckpt, path, folder):
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"the checkpoint {path} was written by another version of train.py (format "
                              f"{ckpt.get('format')}, this one reads {CHECKPOINT_FORMAT}); use an empty checkpoint "
                              "dir, or the code that wrote it")
        if ckpt["fingerprint"] != self.fingerprint:
            raise ConfigError(f"the checkpoint dir {folder} holds checkpoints of another model "
                              f"({ckpt['fingerprint']}, this run is {self.fingerprint}); use an empty checkpoint dir "
                              "or the same model, image size and classes")

    def restore_model(self, ckpt, path):
        t = self.trainer
        try:
            t.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:  # same name, other shapes: a checkpoint from another version of the code
            raise ConfigError(f"the checkpoint {path} does not fit this {t.args.model} model (its weights have "
                              "other shapes: saved by another version of model_def.py?); use an empty checkpoint "
                              "dir, or the code that wrote it") from exc
        if t.ema is not None and ckpt["ema"]:
            t.ema.load_state_dict(ckpt["ema"])

    def restore_optimizer(self, ckpt):
        t = self.trainer
        t.optimizer.load_state_dict(ckpt["optimizer"])
        if t.scaler is not None and ckpt["scaler"]:
            t.scaler.load_state_dict(ckpt["scaler"])

    def restore_training_state(self, ckpt):
        """The run's state and early stopping, the plan (``restore_plan``) and where to go on from."""
        t, saved = self.trainer, ckpt["train_state"]
        t.state = type(t.state).from_dict(saved)
        t.early_stopping.load_state_dict(saved)
        if t.state.train_images and t.state.train_images != len(t.data.train):
            logger.warning("the checkpoint in %s was trained on %d training images, this run has %d: it goes on with "
                           "the checkpoint's plan and weights; for another data set use an empty checkpoint dir",
                           t.args.checkpoint_dir, t.state.train_images, len(t.data.train))
        self.restore_plan(schedule.Plan.from_dict(t.state.plan))
        t.start_epoch = ckpt["epoch"] + 1
        t.epoch_loop.resume_step, t.epoch_loop.partial = ckpt["step"], ckpt["partial"]

    def restore_plan(self, saved):
        """The checkpoint's plan goes on (a run cut by max-train-minutes stays cut); an lr or epochs set now, and
        different, applies from here on (a lower lr after a non-finite loss); another batch size cannot."""
        t = self.trainer
        if t.args.batch_size != "auto" and t.args.batch_size != saved.batch_size:
            raise ConfigError(f"the checkpoints in {t.args.checkpoint_dir} were trained with batch-size "
                              f"{saved.batch_size}, this run asks for {t.args.batch_size}; resume with the same "
                              "batch size, or use an empty checkpoint dir")
        for name in ("lr", "epochs"):
            if getattr(t.args, name) != "auto" and getattr(saved, name) != getattr(t.plan, name):
                logger.warning("%s %g replaces the checkpoint's %g from here on", name, getattr(t.plan, name),
                               getattr(saved, name))
                saved = dataclasses.replace(saved, **{name: getattr(t.plan, name)})
        t.set_plan(saved)

    def restore_rng(self, ckpt):
        """Inside an epoch, every generator as it was (rank 0); at an epoch boundary each epoch seeds itself."""
        t, loop = self.trainer, self.trainer.epoch_loop
        if loop.partial is None:
            return
        if t.dist.is_main:
            utils.set_rng_state(ckpt["rng"])
        else:  # other ranks: a reproducible, if not identical, continuation
            utils.seed_everything(utils.derived_seed(t.args.seed, t.start_epoch, t.dist.rank) + loop.resume_step)
            loop.partial = dict(loop.partial, generator=torch.Generator().manual_seed(loop.resume_step).get_state())
