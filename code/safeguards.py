"""What ends a run before its plan does, other than patience (early_stopping.py), and the one line each leaves:

* a stop request (``StopRequest``): SIGTERM from SageMaker's StopTrainingJob, a spot reclaim or max_run, or a
  callback's ``trainer.stop.request("why")``; the loop checkpoints the step it stopped at and raises ``Stopped``;
* the time limit (``fit_in_time``, ``max-train-minutes``): the plan's epochs cut after the first one;
* a loss, weights or predictions that are no longer finite (``non_finite_training``, ``non_finite_error``): the
  model is broken, a ``NonFiniteError`` says what to change and what was kept.
"""
import logging
import math
import signal

import torch

import distributed
import schedule
from errors import NonFiniteError

logger = logging.getLogger("train")


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

    def agreed(self, step, dist, device):
        """Whether to leave the epoch after ``step``: a local request, or (every 10 steps, in sync) any rank's."""
        if not dist.enabled:
            return self.requested
        if step % 10:
            return False
        if distributed.any_rank(self.requested, dist, device):
            self.requested = True
        return self.requested

    def inside_epoch(self, epoch, stats, checkpoint, *, best_epoch, model_dir):
        """The line of a stop that cut ``epoch`` short (``best_epoch``: of the model saved, None when none was)."""
        kept = kept_model(best_epoch, model_dir, otherwise="no epoch had finished, so no model was saved")
        return (f"training stopped by {self.reason or 'SIGTERM'} during epoch {epoch} after {stats.steps} of "
                f"{stats.steps_in_epoch} steps; checkpoint {checkpoint or '(no checkpoint dir)'}; {kept}; run again "
                "with the same checkpoint dir to resume")

    def after_epoch(self, epoch):
        """The line of a stop seen at the end of ``epoch``, after its checkpoint."""
        return (f"training stopped by {self.reason or 'SIGTERM'} after epoch {epoch}; run again with the same "
                "checkpoint dir to resume")


def fit_in_time(plan, seconds, args, dist, device):
    """max-train-minutes: after the first epoch (``seconds`` long), the plan with its epochs cut so that training
    ends in time (every rank takes rank 0's decision, so that all stop at the same epoch); else ``plan`` itself."""
    cut = schedule.cut_to_time(plan, seconds, args.max_train_minutes)
    epochs = int(distributed.all_reduce_sum([cut.epochs if dist.is_main else 0], dist, device)[0])
    if epochs == plan.epochs:
        return plan
    logger.info("max-train-minutes=%g: an epoch took %.1f s, so %d epochs instead of %d", args.max_train_minutes,
                seconds, epochs, plan.epochs)
    plan = schedule.with_epochs(plan, epochs, args)
    logger.info(plan.describe())
    return plan


def non_finite_training(epoch, loss, model, ema=None):
    """What is broken after ``epoch``, or None: a NaN or infinite training loss, or weights (raw or EMA) that became
    so although the loss was finite (a step that blew them up after its loss was computed)."""
    if not math.isfinite(loss):
        return f"the training loss became {loss} in epoch {epoch}"
    tensors = list(model.state_dict().values()) + (list(ema.state.values()) if ema is not None else [])
    if not all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()):
        return f"the model's weights became NaN or infinite in epoch {epoch} (its training loss was {loss:.4g})"
    return None


def non_finite_error(what, *, epoch, args, lr, best_epoch=None):
    """The NonFiniteError of ``what`` in ``epoch``: lower the lr (now ``lr``) or turn amp off, and what was kept
    (``best_epoch``: the epoch of the best model in the model dir; None when there is none)."""
    kept = kept_model(best_epoch, args.model_dir, otherwise="no model was saved")
    if args.checkpoint_dir and epoch > 1:
        kept += (f"; the checkpoint of epoch {epoch - 1} was kept: run again with the same checkpoint dir and a "
                 "lower lr to resume from it")
    weighting = ", or use class-weighting=none" if args.class_weighting != "none" else ""
    return NonFiniteError(f"{what}; lower lr (now {lr:g}) or turn amp off{weighting}; {kept}")


def kept_model(best_epoch, model_dir, *, otherwise):
    """What a stopped or failed run says it kept: the best model so far and where (``otherwise`` without one)."""
    return otherwise if best_epoch is None else f"the best model so far (epoch {best_epoch}) is in {model_dir}"
