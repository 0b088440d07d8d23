"""The training engine: a state object, a fit loop that reads like its docstring, and callbacks that benchmarks
and tests use to observe (or stop) the loop instead of patching it.

The shape follows HF transformers' ``TrainerState``/``TrainerCallback`` and Lightning's fit loop: ``TrainState``
holds what a resumed run needs besides tensors (epoch, step, history, plan); ``Trainer.fit`` is a short skeleton
of named steps. Its collaborators each have a module: one training epoch (epoch_loop.py), the checkpoint's content
(checkpoint_connector.py, files in checkpoints.py), the best epoch and patience (early_stopping.py), stop requests,
the time limit and non-finite checks (safeguards.py), predictions on a split (evaluation.SplitPredictor). The
learning rate is a pure function of the optimiser step (``schedule.lr_at``), so a resumed run (even with a new
``lr``) never reaches into a scheduler.
"""
import copy
import dataclasses
import logging
import time

import numpy as np
import torch

import checkpoints
import distributed
import epoch_log
import evaluation
import hyperparameters
import initialisation
import metrics
import safeguards
import schedule
from checkpoint_connector import CheckpointConnector
from early_stopping import EarlyStopping
from ema import ModelEma
from epoch_loop import EpochLoop
from errors import Stopped
from loaders import check_bad_fraction

logger = logging.getLogger("train")


# ==================================================================================================
# State, callbacks, results
# ==================================================================================================
@dataclasses.dataclass
class TrainState:
    """What a run has done, saved in every checkpoint (``to_dict``/``from_dict``): ``epoch`` completed epochs,
    ``global_step`` optimiser steps, the per-epoch history (what metrics.json and the learning curves show) and the
    run's plan; the best epoch and patience are early_stopping.EarlyStopping's."""

    epoch: int = 0
    global_step: int = 0
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
    ``plan``, ``device``, ``amp_dtype``, ``model`` and ``stop`` (``trainer.stop.request("why")`` ends the run as a
    SIGTERM would)."""

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
    keeps only the plain epoch lines, which people and the metric definitions read (epoch_log.py); tqdm ships in
    the PyTorch training images."""

    def __init__(self, stream):
        self.stream, self.bar = stream, None

    @staticmethod
    def wanted(stream, is_main):
        isatty = getattr(stream, "isatty", None)
        return bool(is_main and isatty is not None and isatty())

    def on_train_epoch_start(self, trainer, epoch):
        from tqdm import tqdm

        self.bar = tqdm(total=trainer.plan.steps_per_epoch, initial=trainer.epoch_loop.resume_step,
                        desc=f"epoch {epoch}", unit="step", file=self.stream, leave=False, dynamic_ncols=True)

    def on_step_end(self, trainer, epoch, step):
        self.bar.update(step - self.bar.n)

    def on_train_epoch_end(self, trainer, epoch, stats):
        self.bar.close()
        self.bar = None


@dataclasses.dataclass
class FitResult:
    """What ``Trainer.fit`` leaves for evaluation: the run's state (history, steps, epochs), its final plan, and the
    kept epoch with its weights (CPU tensors; the model dir holds them too, rank 0)."""

    state: TrainState
    plan: schedule.Plan
    best_epoch: int
    best_weights: dict


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


# ==================================================================================================
# The trainer
# ==================================================================================================
class Trainer:
    """Trains ``model`` on ``data`` for ``plan`` (schedule.make_plan's) as ``args`` say, keeping the
    best-on-validation (EMA) weights.

    ``model``: the bare module (on its device); ``wrapped``: what the step calls (the module, DDP or compiled).
    ``predict``: an evaluation.SplitPredictor. ``writer``: saves the best weights to the model dir
    (``save(state_dict)``, ``exists()``), called whenever validation improves, so that a job killed without warning
    (the toolkit does not pass SIGTERM on) still holds its best model. ``stop``: a safeguards.StopRequest.
    """

    def __init__(self, args, data, model, wrapped, *, plan, predict, device, amp_dtype, dist_info, writer, stop,
                 callbacks=()):
        self.args, self.data, self.classes, self.task = args, data, data.classes, data.task
        self.model, self.wrapped = model, wrapped
        self.device, self.amp_dtype, self.dist = device, amp_dtype, dist_info
        self.predict, self.writer, self.stop, self.callbacks = predict, writer, stop, list(callbacks)
        self.memory_format = hyperparameters.memory_format(args)
        self.plan = plan
        self.ema = ModelEma(model, plan.ema) if plan.ema > 0 else None
        self.eval_model = copy.deepcopy(model) if self.ema is not None else model
        self.optimizer = build_optimizer(args, model, plan.lr, plan.backbone_lr_scale)
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        self.criterion = build_criterion(args, data.train.labels, len(self.classes), self.task, device)
        self.state = TrainState(plan=plan.to_dict(), train_images=len(data.train))
        self.early_stopping = EarlyStopping(plan.patience)
        self.epoch_loop, self.checkpoint = EpochLoop(self), CheckpointConnector(self)
        self.start_epoch = 1  # the first epoch this process trains (after a resume: the one after the checkpoint)

    def emit(self, event, *args):
        """Call hook ``event`` of every callback with this trainer and ``args``."""
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def set_plan(self, plan):
        """The plan from here on (a resumed or a time-cut one): kept in the state (so in checkpoints), and its
        patience."""
        self.plan, self.state.plan = plan, plan.to_dict()
        self.early_stopping.patience = plan.patience

    # ---------------------------------------------------------------------------------------- checkpoints
    def resume(self, folder):
        """Restore the newest loadable checkpoint in ``folder``, if any (CheckpointConnector.restore)."""
        loaded = checkpoints.load_latest_checkpoint(folder) if folder else None
        if not loaded:
            return False
        ckpt, path = loaded
        self.checkpoint.restore(ckpt, path, folder)
        step = self.epoch_loop.resume_step
        logger.info("resumed from %s: %d epoch(s) done%s", path, ckpt["epoch"],
                    f", {step} step(s) into epoch {self.start_epoch}" if step else "")
        return True

    def save_checkpoint(self, epoch, step=0, partial=None):
        """After ``epoch`` completed epochs and ``step`` steps into the next one (rank 0 only); returns the path."""
        if not (self.dist.is_main and self.args.checkpoint_dir):
            return None
        return checkpoints.save_checkpoint(self.checkpoint.dump(epoch, step, partial), self.args.checkpoint_dir,
                                           epoch, step)

    def save_best_model(self):
        """On a stop or a failure: the best model so far, unless it predates this run and the model dir already
        holds a model (a stopped or failing run never rewrites what an earlier run saved)."""
        best = self.early_stopping
        improved_here = best.best_epoch >= self.start_epoch
        if self.dist.is_main and best.best_weights is not None and (improved_here or not self.writer.exists()):
            self.writer.save(best.best_weights)

    def _kept_epoch(self):
        """The epoch of the best model so far (None before there is one)."""
        return self.early_stopping.best_epoch if self.early_stopping.best_weights is not None else None

    # ---------------------------------------------------------------------------------------- the loop
    def fit(self):
        """Train epoch after epoch until the plan's last one, or until patience runs out: train the epoch and check
        it, validate the EMA weights, keep them when they are the best so far, checkpoint, and leave when a stop
        was asked for. Returns a FitResult; the model dir then holds the kept weights (rank 0)."""
        self.emit("on_fit_start")
        logger.info(self.plan.describe())
        epoch = self.start_epoch
        while epoch <= self.plan.epochs and not self.early_stopping.should_stop:
            stats = self._train_and_check(epoch)
            val = self.validate(epoch, stats)
            self._keep_if_best(epoch, val)
            self.state.epoch = epoch
            self.save_checkpoint(epoch)
            self._stop_early_or_when_asked(epoch)
            epoch += 1
        self.emit("on_fit_end")
        if not self.writer.exists():  # resumed on a fresh instance with nothing left to train: its kept model
            self.save_best_model()
        return FitResult(self.state, self.plan, self.early_stopping.best_epoch, self.early_stopping.best_weights)

    def _train_and_check(self, epoch):
        """Train ``epoch``; then the time limit (after the first epoch), a broken model, a stop inside the epoch and
        too many unreadable images (streamed: found while reading, every epoch) cut or end the run."""
        started = time.perf_counter()
        stats = self.epoch_loop.run(epoch)
        if epoch == 1 and stats.completed:
            self._fit_in_time(time.perf_counter() - started)
        broken = safeguards.non_finite_training(epoch, stats.train_loss, self.model, self.ema)
        if broken:
            self.fail_non_finite(epoch, broken)
        if not stats.completed:
            self._stop_inside_epoch(epoch, stats)
        if stats.bad_images:
            check_bad_fraction(stats.bad_images, stats.images_read, self.args.max_bad_fraction, "train")
        return stats

    def _fit_in_time(self, seconds):
        plan = safeguards.fit_in_time(self.plan, seconds, self.args, self.dist, self.device)
        if plan is not self.plan:
            self.set_plan(plan)
            if self.ema is not None:
                self.ema.decay = plan.ema

    def fail_non_finite(self, epoch, what):
        """Save the best model so far (never a broken one), then raise NonFiniteError saying what to change."""
        self.save_best_model()
        raise safeguards.non_finite_error(what, epoch=epoch, args=self.args, lr=self.plan.lr,
                                          best_epoch=self._kept_epoch())

    def _stop_inside_epoch(self, epoch, stats):
        """A stop request cut the epoch short: checkpoint this exact step, save the best model, end the run."""
        path = self.save_checkpoint(epoch - 1, stats.steps, stats.partial)
        self.save_best_model()
        message = self.stop.inside_epoch(epoch, stats, path, best_epoch=self._kept_epoch(),
                                         model_dir=self.args.model_dir)
        logger.warning(message)
        raise Stopped(message)

    def _stop_early_or_when_asked(self, epoch):
        """After ``epoch``'s checkpoint: log an early stop; a stop request (on any rank) saves and ends the run."""
        if self.early_stopping.should_stop:
            logger.info("early stopping: no val improvement for %d epochs (patience=%d); best epoch %d",
                        self.early_stopping.bad_epochs, self.plan.patience, self.early_stopping.best_epoch)
        if distributed.any_rank(self.stop.requested, self.dist, self.device):  # every rank leaves together
            self.save_best_model()
            raise Stopped(self.stop.after_epoch(epoch))

    def validate(self, epoch, stats):
        """The EMA (or raw) weights on the val split, uncalibrated: the epoch line, appended to the history."""
        if self.ema is not None:
            self.eval_model.load_state_dict(self.ema.state)
        labels, logits, _ = self.predict(self.eval_model, self.data.val, "val")
        prob = evaluation.probabilities(logits, self.task, 1.0)
        if not np.isfinite(prob).all():
            self.fail_non_finite(epoch, f"the model's predictions on val became NaN or infinite after epoch {epoch}")
        val = metrics.evaluate_predictions(labels, prob, task=self.task, classes=list(self.classes),
                                           ordinal=getattr(self.args, "ordinal", False),
                                           positive=getattr(self.classes, "positive", None))
        values = epoch_log.epoch_values(epoch, train_loss=stats.train_loss, val=val,
                                        lr=self.lr(self.state.global_step), images_per_sec=stats.images_per_sec)
        logger.info(epoch_log.epoch_line(values))
        self.state.history.append(values)
        self.emit("on_evaluate", epoch, val)
        return val

    def _keep_if_best(self, epoch, val):
        """A new best epoch (EarlyStopping's rule) is saved now, not only at the end: a stopped or reclaimed job
        keeps its best model."""
        if self.early_stopping.update(epoch, val, self.eval_model):
            self.save_best_model()

    def lr(self, step):
        return schedule.lr_at(step, peak=self.plan.lr, total_steps=self.plan.total_steps,
                              warmup_steps=self.plan.warmup_steps)
