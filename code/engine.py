"""The training engine: a state object, a fit loop that reads like its docstring, named resume steps, and
callbacks that benchmarks and tests use to observe (or stop) the loop instead of patching it.

The shape follows HF transformers' ``TrainerState``/``TrainerCallback`` and Lightning's checkpoint connector:
``TrainState`` holds everything a resumed run needs besides tensors (epoch, step, best score, history);
``Trainer.resume`` restores in named steps; the learning rate is a pure function of the optimiser step
(``lr_at``), so a resumed run (even with a new ``lr``) never reaches into a scheduler's internals.
"""
import copy
import dataclasses
import logging
import math
import signal
import time

import numpy as np
import torch

import augment
import checkpoints
import distributed
import epoch_log
import initialisation
import metrics
import prediction
import schedule
import utils
from ema import ModelEma
from errors import ConfigError, DataError, NonFiniteError, Stopped
from loaders import check_bad_fraction

logger = logging.getLogger("train")

CHECKPOINT_FORMAT = 2  # bumped when the checkpoint's content changes shape


# ==================================================================================================
# State, callbacks, stop requests
# ==================================================================================================
@dataclasses.dataclass
class TrainState:
    """What a run has done, saved in every checkpoint (``to_dict``/``from_dict``): ``epoch`` completed epochs,
    ``global_step`` optimiser steps, the best validation score and its epoch, epochs without improvement,
    the per-epoch history (what metrics.json and the learning curves show) and the run's plan."""

    epoch: int = 0
    global_step: int = 0
    best_score: list = dataclasses.field(default_factory=lambda: [-math.inf, -math.inf])  # [val AUC, -val loss]
    best_epoch: int = 0
    bad_epochs: int = 0
    best_val: dict = None
    history: list = dataclasses.field(default_factory=list)
    plan: dict = None  # schedule.Plan.to_dict(): the run's length, batch size, lr, warm-up, EMA, patience
    train_images: int = 0  # what the run trains on (0 in checkpoints written before it was recorded)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Callback:
    """Hooks on the training loop; every method is optional. ``trainer`` gives ``state``, ``args``, ``data``,
    ``device``, ``amp_dtype`` and ``stop`` (``trainer.stop.request("why")`` ends the run as a SIGTERM would)."""

    def on_data_loaded(self, data, seconds):
        """Before the trainer exists: the splits train.py read, and how long reading and decoding took."""

    def on_fit_start(self, trainer):
        pass

    def on_train_epoch_start(self, trainer, epoch):
        pass

    def on_step_end(self, trainer, epoch, step):
        """After optimiser step ``step`` (1-based, within the epoch)."""

    def on_train_epoch_end(self, trainer, epoch, stats):
        """``stats``: EpochStats of the epoch (also when a stop cut it short)."""

    def on_evaluate(self, trainer, epoch, val):
        """``val``: the validation metrics of the epoch."""

    def on_fit_end(self, trainer):
        pass


class ProgressBar(Callback):
    """A tqdm bar over each epoch's optimiser steps, on ``stream`` (stderr), for a person watching a local run.

    ``wanted`` says when: on the main process, when the stream is a terminal. A job's log is not a terminal, so it
    keeps the plain epoch lines (STYLE.md: "a progress bar (tqdm) when stderr is a terminal; plain lines in a job
    log"); tqdm ships in the PyTorch training images."""

    def __init__(self, stream):
        self.stream, self.bar = stream, None

    @staticmethod
    def wanted(stream, is_main):
        isatty = getattr(stream, "isatty", None)
        return bool(is_main and isatty is not None and isatty())

    def on_train_epoch_start(self, trainer, epoch):
        from tqdm import tqdm

        self.bar = tqdm(total=trainer.plan.steps_per_epoch, initial=trainer.resume_step, desc=f"epoch {epoch}",
                        unit="step", file=self.stream, leave=False, dynamic_ncols=True)

    def on_step_end(self, trainer, epoch, step):
        self.bar.update(step - self.bar.n)

    def on_train_epoch_end(self, trainer, epoch, stats):
        self.bar.close()
        self.bar = None


class StopRequest:
    """SIGTERM (SageMaker's stop, a spot reclaim, max_run) or a callback asks the loop to stop after the current
    step; the loop then checkpoints that exact step and ends with a ``Stopped`` error."""

    def __init__(self, install_handler=True):
        self.requested, self.reason = False, None
        if install_handler:
            try:
                signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not in the main thread (tests calling main() from a thread)
                pass

    def request(self, reason):
        self.requested, self.reason = True, reason

    def _handle(self, signum, frame):
        self.request(signal.Signals(signum).name)
        logger.warning("received %s: finishing the current step, then checkpointing and exiting", self.reason)


@dataclasses.dataclass
class EpochStats:
    """One epoch of training, summed over ranks: the mean loss, throughput, and where it ended."""

    train_loss: float
    images_per_sec: float
    steps: int
    steps_in_epoch: int
    images_read: int = 0  # streamed data only: images read and unreadable ones (found while reading)
    bad_images: int = 0
    partial: dict = None  # this rank's running sums and augmentation RNG when a stop cut the epoch short

    @property
    def completed(self):
        return self.steps >= self.steps_in_epoch


# ==================================================================================================
# Optimisation
# ==================================================================================================
def build_optimizer(args, model, lr, backbone_lr_scale=1.0):
    """AdamW (or SGD with Nesterov momentum), no weight decay on norms and biases, loaded layers at ``lr x
    backbone_lr_scale`` (initialisation.param_groups); fused kernels on a GPU."""
    groups = initialisation.param_groups(model, args.weight_decay, backbone_lr_scale)
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, **fused)
    return torch.optim.AdamW(groups, lr=lr, **fused)


def class_weights(labels, num_classes, mode, device):
    """Inverse class frequency weights for ``class-weighting=balanced``; None for ``none``."""
    if mode == "none":
        return None
    counts = torch.bincount(torch.as_tensor(labels).cpu(), minlength=num_classes).double().clamp_min(1)
    return (counts.sum() / (num_classes * counts)).float().to(device)


class SmoothedBCEWithLogits(torch.nn.BCEWithLogitsLoss):
    """Binary cross-entropy per finding, with label smoothing towards 0.5 (y (1 - e) + e / 2)."""

    def __init__(self, smoothing=0.0, pos_weight=None):
        super().__init__(pos_weight=pos_weight)
        self.smoothing = smoothing

    def forward(self, logits, target):
        return super().forward(logits, target * (1 - self.smoothing) + self.smoothing / 2)


def build_criterion(args, labels, num_classes, task, device):
    """Cross-entropy over classes, or (multi-label) binary cross-entropy per finding; ``class-weighting=balanced``
    weighs classes by inverse frequency, or each finding's positives by negatives / positives."""
    if task == "multilabel":
        labels = torch.as_tensor(labels).double().cpu()
        positives = labels.sum(dim=0).clamp_min(1)
        pos_weight = ((len(labels) - positives) / positives).float().to(device)
        return SmoothedBCEWithLogits(args.label_smoothing, pos_weight if args.class_weighting == "balanced" else None)
    weight = class_weights(labels, num_classes, args.class_weighting, device)
    return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=args.label_smoothing)


def fingerprint(args, data, num_classes):
    """What a checkpoint must match to be resumed."""
    return {"model": args.model, "num_classes": num_classes, "in_channels": data.channels, "image_size": data.size}


# ==================================================================================================
# The trainer
# ==================================================================================================
class Trainer:
    """Trains ``model`` on ``data`` as ``args`` say, keeping the best-on-validation (EMA) weights.

    ``model``: the bare module (on its device); ``wrapped``: what the step calls (the module, DDP or compiled).
    ``writer``: saves the best weights to the model dir (``save(state_dict)``, ``exists()``), called whenever
    validation improves, so that a job killed without warning (the toolkit does not pass SIGTERM on) still holds
    its best model.
    """

    def __init__(self, args, data, classes, model, wrapped, *, device, amp_dtype, dist_info, writer, stop,
                 callbacks=()):
        self.args, self.data, self.classes = args, data, classes
        self.model, self.wrapped = model, wrapped
        self.device, self.amp_dtype, self.dist = device, amp_dtype, dist_info
        self.writer, self.stop, self.callbacks = writer, stop, list(callbacks)
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        n_per_rank = math.ceil(len(data.train) / dist_info.world_size)
        self.plan = schedule.make_plan(args, n_per_rank, dist_info.world_size)
        self.ema = ModelEma(model, self.plan.ema) if self.plan.ema > 0 else None
        self.eval_model = copy.deepcopy(model) if self.ema is not None else model
        self.optimizer = build_optimizer(args, model, self.plan.lr, self.plan.backbone_lr_scale)
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        self.task = data.task
        self.criterion = build_criterion(args, data.train.labels, len(classes), self.task, device)
        self.fingerprint = fingerprint(args, data, len(classes))
        self.state = TrainState(plan=self.plan.to_dict(), train_images=len(self.data.train))
        self.best_weights = None
        self.start_epoch = 1  # the first epoch this process trains (after a resume: the one after the checkpoint)
        self._resume_step, self._partial = 0, None

    def _emit(self, event, *args):
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    # ---------------------------------------------------------------------------------------- resume
    @property
    def resume_step(self):
        """The step within ``start_epoch`` a mid-epoch resume starts from (0 otherwise), until that epoch starts."""
        return self._resume_step

    def resume(self, folder):
        """Restore the newest loadable checkpoint in ``folder``, if any: model, optimiser, training state, RNG."""
        loaded = checkpoints.load_latest_checkpoint(folder) if folder else None
        if not loaded:
            return False
        ckpt, path = loaded
        self._check_compatible(ckpt, path, folder)
        self._restore_model(ckpt, path)
        self._restore_optimizer(ckpt)
        self._restore_training_state(ckpt)
        self._restore_rng(ckpt)
        logger.info("resumed from %s: %d epoch(s) done%s", path, ckpt["epoch"],
                    f", {self._resume_step} step(s) into epoch {self.start_epoch}" if self._resume_step else "")
        return True

    def _check_compatible(self, ckpt, path, folder):
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"the checkpoint {path} was written by another version of train.py (format "
                              f"{ckpt.get('format')}, this one reads {CHECKPOINT_FORMAT}); use an empty checkpoint "
                              "dir, or the code that wrote it")
        if ckpt["fingerprint"] != self.fingerprint:
            raise ConfigError(f"the checkpoint dir {folder} holds checkpoints of another model "
                              f"({ckpt['fingerprint']}, this run is {self.fingerprint}); use an empty checkpoint dir "
                              "or the same model, image size and classes")

    def _restore_model(self, ckpt, path):
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:  # same name, other shapes: a checkpoint from another version of the code
            raise ConfigError(f"the checkpoint {path} does not fit this {self.args.model} model (its weights have "
                              "other shapes: saved by another version of model_def.py?); use an empty checkpoint "
                              "dir, or the code that wrote it") from exc
        if self.ema is not None and ckpt["ema"]:
            self.ema.load_state_dict(ckpt["ema"])

    def _restore_optimizer(self, ckpt):
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])

    def _restore_training_state(self, ckpt):
        state = dict(ckpt["train_state"])
        self.best_weights = state.pop("best_model", None)
        self.state = TrainState.from_dict(state)
        if self.state.train_images and self.state.train_images != len(self.data.train):
            logger.warning("the checkpoint in %s was trained on %d training images, this run has %d: it goes on with "
                           "the checkpoint's plan and weights; for another data set use an empty checkpoint dir",
                           self.args.checkpoint_dir, self.state.train_images, len(self.data.train))
        self._restore_plan(schedule.Plan.from_dict(self.state.plan))
        self.start_epoch, self._resume_step, self._partial = ckpt["epoch"] + 1, ckpt["step"], ckpt["partial"]

    def _restore_plan(self, saved):
        """The checkpoint's plan goes on (a run cut by max-train-minutes stays cut); an lr or epochs set now, and
        different, applies from here on (a lower lr after a non-finite loss); another batch size cannot."""
        plan = self.plan
        if self.args.batch_size != "auto" and self.args.batch_size != saved.batch_size:
            raise ConfigError(f"the checkpoints in {self.args.checkpoint_dir} were trained with batch-size "
                              f"{saved.batch_size}, this run asks for {self.args.batch_size}; resume with the same "
                              "batch size, or use an empty checkpoint dir")
        for name in ("lr", "epochs"):
            if getattr(self.args, name) != "auto" and getattr(saved, name) != getattr(plan, name):
                logger.warning("%s %g replaces the checkpoint's %g from here on", name, getattr(plan, name),
                               getattr(saved, name))
                saved = dataclasses.replace(saved, **{name: getattr(plan, name)})
        self.plan = saved
        self.state.plan = saved.to_dict()

    def _restore_rng(self, ckpt):
        if self._partial is None:
            return  # an epoch boundary: each epoch seeds itself
        if self.dist.is_main:
            utils.set_rng_state(ckpt["rng"])
        else:  # other ranks: a reproducible, if not identical, continuation
            utils.seed_everything(utils.derived_seed(self.args.seed, self.start_epoch, self.dist.rank)
                                  + self._resume_step)
            self._partial = dict(self._partial,
                                 generator=torch.Generator().manual_seed(self._resume_step).get_state())

    # ---------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, epoch, step=0, partial=None):
        """After ``epoch`` completed epochs and ``step`` steps into the next one (rank 0 only); returns the path."""
        if not (self.dist.is_main and self.args.checkpoint_dir):
            return None
        state = dict(self.state.to_dict(), best_model=self.best_weights)
        ckpt = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "step": step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None, "train_state": state,
                "fingerprint": self.fingerprint, "rng": utils.rng_state(), "partial": partial}
        return checkpoints.save_checkpoint(ckpt, self.args.checkpoint_dir, epoch, step)

    def save_best_model(self):
        """On a stop or a failure: the best model so far, unless it predates this run and the model dir already
        holds a model (a stopped or failing run never rewrites what an earlier run saved)."""
        improved_here = self.state.best_epoch >= self.start_epoch
        if self.dist.is_main and self.best_weights is not None and (improved_here or not self.writer.exists()):
            self.writer.save(self.best_weights)

    # ---------------------------------------------------------------------------------------- the loop
    def fit(self):
        """Train epoch after epoch: each epoch is trained, checked (finite loss, not stopped), validated with
        the EMA weights, logged, kept when it is the best so far, and checkpointed; early stopping and stop
        requests end the loop. Returns the TrainState."""
        self._emit("on_fit_start")
        logger.info(self.plan.describe())
        epoch = self.start_epoch
        while epoch <= self.plan.epochs and not self._patience_exhausted():
            started = time.perf_counter()
            stats = self.train_one_epoch(epoch)
            if epoch == 1 and stats.completed:
                self._fit_in_time(time.perf_counter() - started)
            self._check_finite(epoch, stats)
            if not stats.completed:
                self._stop_inside_epoch(epoch, stats)
            if stats.bad_images:  # streamed: unreadable images are only found while reading, every epoch
                check_bad_fraction(stats.bad_images, stats.images_read, self.args.max_bad_fraction, "train")
            val = self.validate(epoch, stats)
            self._keep_if_best(epoch, val)
            self.state.epoch = epoch
            self.save_checkpoint(epoch)
            if self._patience_exhausted():
                logger.info("early stopping: no val improvement for %d epochs (patience=%d); best epoch %d",
                            self.state.bad_epochs, self.plan.patience, self.state.best_epoch)
            if distributed.any_rank(self.stop.requested, self.dist, self.device):  # every rank leaves together
                self.save_best_model()
                raise Stopped(f"training stopped by {self.stop.reason or 'SIGTERM'} after epoch {epoch}; run again "
                              "with the same checkpoint dir to resume")
            epoch += 1
        self._emit("on_fit_end")
        return self.state

    def _patience_exhausted(self):
        return bool(self.plan.patience and self.state.bad_epochs >= self.plan.patience)

    def _fit_in_time(self, seconds):
        """max-train-minutes: after the first epoch, cut the epochs so that training ends in time (every rank
        takes rank 0's decision, so that all stop at the same epoch)."""
        cut = schedule.cut_to_time(self.plan, seconds, self.args.max_train_minutes)
        epochs = int(distributed.all_reduce_sum([cut.epochs if self.dist.is_main else 0], self.dist,
                                                self.device)[0])
        if epochs != self.plan.epochs:
            logger.info("max-train-minutes=%g: an epoch took %.1f s, so %d epochs instead of %d",
                        self.args.max_train_minutes, seconds, epochs, self.plan.epochs)
            self.plan = schedule.with_epochs(self.plan, epochs, self.args)
            self.state.plan = self.plan.to_dict()
            if self.ema is not None:
                self.ema.decay = self.plan.ema
            logger.info(self.plan.describe())

    def _check_finite(self, epoch, stats):
        """A NaN or infinite training loss, or weights (raw or EMA) that became so although the loss was finite
        (a step that blew them up after its loss was computed), end the run: the model is broken."""
        if not math.isfinite(stats.train_loss):
            self.fail_non_finite(epoch, f"the training loss became {stats.train_loss} in epoch {epoch}")
        tensors = list(self.model.state_dict().values()) + (list(self.ema.state.values()) if self.ema else [])
        if not all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()):
            self.fail_non_finite(epoch, f"the model's weights became NaN or infinite in epoch {epoch} (its training "
                                        f"loss was {stats.train_loss:.4g})")

    def fail_non_finite(self, epoch, what):
        """Save the best model so far (never a broken one), then raise NonFiniteError saying what to change."""
        self.save_best_model()
        kept = (f"the best model so far (epoch {self.state.best_epoch}) is in {self.args.model_dir}"
                if self.best_weights is not None else "no model was saved")
        if self.args.checkpoint_dir and epoch > 1:
            kept += (f"; the checkpoint of epoch {epoch - 1} was kept: run again with the same checkpoint dir and a "
                     "lower lr to resume from it")
        weighting = ", or use class-weighting=none" if self.args.class_weighting != "none" else ""
        raise NonFiniteError(f"{what}; lower lr (now {self.plan.lr:g}) or turn amp off{weighting}; {kept}")

    def _stop_inside_epoch(self, epoch, stats):
        """A stop request cut the epoch short: checkpoint this exact step, save the best model, end the run."""
        path = self.save_checkpoint(epoch - 1, stats.steps, stats.partial)
        self.save_best_model()
        best = (f"the best model so far (epoch {self.state.best_epoch}) is in {self.args.model_dir}"
                if self.best_weights is not None else "no epoch had finished, so no model was saved")
        message = (f"training stopped by {self.stop.reason or 'SIGTERM'} during epoch {epoch} after {stats.steps} "
                   f"of {stats.steps_in_epoch} steps; checkpoint {path or '(no checkpoint dir)'}; {best}; run again "
                   "with the same checkpoint dir to resume")
        logger.warning(message)
        raise Stopped(message)

    def validate(self, epoch, stats):
        """The EMA (or raw) weights on the val split; logs the epoch line and appends it to the history."""
        if self.ema is not None:
            self.eval_model.load_state_dict(self.ema.state)
        val = self.evaluate(self.eval_model, self.data.val, "val", epoch=epoch)
        lr = self.lr(self.state.global_step)
        values = {"epoch": epoch, "train_loss": stats.train_loss, "val_loss": val["loss"], "val_auc": val["auc"],
                  "val_acc": val["accuracy"], "lr": lr, "images_per_sec": stats.images_per_sec}
        if "kappa" in val:
            values.update(val_kappa=val["kappa"], val_mae=val["mae"])
        logger.info(epoch_log.epoch_line(values))
        self.state.history.append(values)
        self._emit("on_evaluate", epoch, val)
        return val

    def _keep_if_best(self, epoch, val):
        """Keep the epoch with the best val AUC, ties (a saturated AUC of 1.0, a small val split) going to the lower
        val loss; without an AUC (val holds one class), the lower val loss."""
        score = [val["auc"] if math.isfinite(val["auc"]) else -math.inf, -val["loss"]]
        if score > list(self.state.best_score):
            self.state.best_score, self.state.best_epoch, self.state.bad_epochs = score, epoch, 0
            self.state.best_val = val
            self.best_weights = {k: v.detach().cpu().clone() for k, v in self.eval_model.state_dict().items()}
            self.save_best_model()  # now, not only at the end: a stopped or reclaimed job keeps its best model
        else:
            self.state.bad_epochs += 1

    def lr(self, step):
        return schedule.lr_at(step, peak=self.plan.lr, total_steps=self.plan.total_steps,
                              warmup_steps=self.plan.warmup_steps)

    # ---------------------------------------------------------------------------------------- one epoch
    def epoch_indices(self, epoch):
        """This rank's shuffled sample indices for ``epoch`` (DistributedSampler: a disjoint shard per rank)."""
        sampler = torch.utils.data.DistributedSampler(range(len(self.data.train)), num_replicas=self.dist.world_size,
                                                      rank=self.dist.rank, shuffle=True, seed=self.args.seed,
                                                      drop_last=False)
        sampler.set_epoch(epoch)
        return list(sampler)

    def train_one_epoch(self, epoch):
        """Train one epoch (from ``self._resume_step`` after a mid-epoch resume); returns EpochStats."""
        args, device = self.args, self.device
        self.wrapped.train()
        self._emit("on_train_epoch_start", epoch)
        indices = self.epoch_indices(epoch)
        bs = min(self.plan.batch_size, len(indices))
        steps = schedule.steps_in_epoch(len(indices), bs, args.max_steps_per_epoch)
        indices = indices[:steps * bs]
        gen, loss_sum, seen = self._epoch_rng_and_sums(epoch)
        resume_step, self._resume_step, self._partial = self._resume_step, 0, None
        mean, std = (torch.tensor(v, device=device) for v in (self.data.mean, self.data.std))  # one copy per epoch
        start_time, step, images_timed = time.perf_counter(), resume_step, 0
        read_before, bad_before = getattr(self.data.train, "read", 0), self.data.train.bad
        for x, y, _ in self.data.train.batches(indices[resume_step * bs:], bs, device, fill=True):
            loss = self._step(x, y, gen, mean, std)
            loss_sum += loss.detach().double() * len(y)
            seen += len(y)
            images_timed += len(y)
            step += 1
            self._emit("on_step_end", epoch, step)
            if self._stop_now(step):
                break
        elapsed = time.perf_counter() - start_time
        read, bad = getattr(self.data.train, "read", 0) - read_before, self.data.train.bad - bad_before
        total_loss, total_seen, total_timed, total_read, total_bad = distributed.all_reduce_sum(
            [loss_sum.item(), seen, images_timed, read, bad], self.dist, device)
        stats = EpochStats(train_loss=total_loss / max(total_seen, 1), images_per_sec=total_timed / max(elapsed, 1e-9),
                           steps=step, steps_in_epoch=steps, images_read=int(total_read), bad_images=int(total_bad),
                           partial={"loss_sum": loss_sum.item(), "seen": seen, "generator": gen.get_state()})
        self._emit("on_train_epoch_end", epoch, stats)
        return stats

    def _epoch_rng_and_sums(self, epoch):
        """The augmentation generator and running sums: fresh (seeded by epoch and rank) or a resumed epoch's."""
        gen = torch.Generator()
        if self._partial is None:
            seed = utils.derived_seed(self.args.seed, epoch, self.dist.rank)
            utils.seed_everything(seed)
            gen.manual_seed(seed + 1)
            return gen, torch.zeros((), dtype=torch.float64, device=self.device), 0
        gen.set_state(self._partial["generator"])
        return gen, torch.tensor(self._partial["loss_sum"], dtype=torch.float64, device=self.device), \
            self._partial["seen"]

    def _step(self, x, y, gen, mean, std):
        """One optimiser step on a uint8 batch: augment, normalise, forward (autocast), backward, update, EMA."""
        args = self.args
        x = x.float().div_(255)
        if args.augment:
            x = augment.augment_batch(x, gen, hflip=args.hflip, vflip=args.vflip)
        x = prediction.normalize(x, mean, std, self.memory_format)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.state.global_step) * group.get("lr_scale", 1.0)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            loss = self.criterion(self.wrapped(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.state.global_step += 1
        if self.ema is not None:
            self.ema.update(self.model)
        return loss

    def _stop_now(self, step):
        """Whether to leave the epoch: a local stop request, or (every 10 steps, in sync) any rank's."""
        if not self.dist.enabled:
            return self.stop.requested
        if step % 10:
            return False
        if distributed.any_rank(self.stop.requested, self.dist, self.device):
            self.stop.requested = True
        return self.stop.requested

    # ---------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict(self, model, split):
        """(labels, logits, indices) of a whole split: each rank predicts a shard, then all are gathered (``indices``
        index ``split.names``; a streamed split drops its unreadable images here). Non-finite logits, or the
        unreadable images of a streamed split above max-bad-fraction, end the run."""
        model.eval()
        indices = list(range(self.dist.rank, len(split), self.dist.world_size))
        all_idx, all_out = [], []
        for x, _, idx in split.batches(indices, max(self.plan.batch_size, 256), self.device):
            out = prediction.logits(model, x, mean=self.data.mean, std=self.data.std,
                                    tta=self.args.tta and self.args.hflip, memory_format=self.memory_format)
            all_idx.append(idx.numpy())
            all_out.append(out.cpu().numpy())
        idx = np.concatenate(all_idx) if all_idx else np.zeros(0, dtype=np.int64)
        out = np.concatenate(all_out) if all_out else np.zeros((0, len(self.classes)), dtype=np.float32)
        idx, out = distributed.gather_predictions(idx, out, self.dist)
        name = "val" if split is self.data.val else "test"
        if len(idx) < len(split):  # streamed: the unreadable images were found and dropped while reading
            check_bad_fraction(len(split) - len(idx), len(split), self.args.max_bad_fraction, name)
            if not len(idx):
                raise DataError(f"none of the {len(split)} images in {name} could be read; check the files")
        return split.labels.cpu().numpy()[idx], out, idx

    def evaluate(self, model, split, name, epoch=None):
        """Metrics of ``model`` on a split (fp32, as deployed, uncalibrated). Predictions that are not finite raise
        NonFiniteError (``epoch``: the epoch being validated, for the message)."""
        labels, logits, _ = self.predict(model, split)
        prob = prediction.activate(torch.from_numpy(logits), self.task == "multilabel").numpy()
        if not np.isfinite(prob).all():
            when = f"after epoch {epoch}" if epoch else "with the kept weights"
            self.fail_non_finite(epoch or self.state.epoch,
                                 f"the model's predictions on {name} became NaN or infinite {when}")
        return metrics.evaluate_predictions(labels, prob, task=self.task, classes=list(self.classes),
                                            ordinal=getattr(self.args, "ordinal", False),
                                            positive=getattr(self.classes, "positive", None))
