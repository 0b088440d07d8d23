"""What ends a run early besides patience (code/safeguards.py): a stop request, the time limit, a broken model, and
the one line each leaves. No training: milliseconds."""
import argparse
import logging
import math

import pytest
import torch

import distributed
import hyperparameters
import safeguards
import schedule
from ema import ModelEma
from errors import NonFiniteError

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6


def args_with(*flags):
    return hyperparameters.parse_args(["--model-dir", "/opt/ml/model", *flags], environ={})


# ---------------------------------------------------------------- a broken model
def test_a_finite_epoch_is_not_broken():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))  # an integer buffer too
    assert safeguards.non_finite_training(3, 0.25, model, ModelEma(model, 0.9)) is None


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_a_loss_that_is_not_finite(loss):
    assert safeguards.non_finite_training(2, loss, torch.nn.Linear(2, 2)) == (
        f"the training loss became {loss} in epoch 2")


@pytest.mark.parametrize("broken", ["model", "ema"])
def test_weights_that_are_not_finite_although_the_loss_was(broken):
    model = torch.nn.Linear(2, 2)
    ema = ModelEma(model, 0.9)
    with torch.no_grad():
        (model.weight if broken == "model" else ema.state["bias"])[0] = math.inf
    assert safeguards.non_finite_training(4, 0.123456, model, ema) == (
        "the model's weights became NaN or infinite in epoch 4 (its training loss was 0.1235)")


@pytest.mark.parametrize("flags, epoch, best_epoch, expected", [
    (("--checkpoint-dir", "/ck", "--class-weighting", "balanced"), 3, 2,
     "x; lower lr (now 0.002) or turn amp off, or use class-weighting=none; the best model so far (epoch 2) is in "
     "/opt/ml/model; the checkpoint of epoch 2 was kept: run again with the same checkpoint dir and a lower lr to "
     "resume from it"),
    (("--checkpoint-dir", ""), 3, 2, "x; lower lr (now 0.002) or turn amp off; the best model so far (epoch 2) is in "
                                     "/opt/ml/model"),
    (("--checkpoint-dir", "/ck"), 1, None, "x; lower lr (now 0.002) or turn amp off; no model was saved"),
])
def test_a_broken_model_says_what_to_change_and_what_was_kept(flags, epoch, best_epoch, expected):
    error = safeguards.non_finite_error("x", epoch=epoch, args=args_with(*flags), lr=0.002, best_epoch=best_epoch)
    assert isinstance(error, NonFiniteError) and str(error) == expected


# ---------------------------------------------------------------- stop requests
def test_a_stop_request_is_seen_after_the_current_step_and_says_where_it_stopped():
    stop, one = safeguards.StopRequest(install_handler=False), distributed.DistInfo()
    assert not stop.agreed(1, one, torch.device("cpu"))
    stop.request("SIGTERM")
    assert stop.agreed(1, one, torch.device("cpu"))  # one process: at once, not every 10 steps
    stats = argparse.Namespace(steps=3, steps_in_epoch=5)
    assert stop.inside_epoch(2, stats, "/ck/checkpoint-0001-000003.pt", best_epoch=1, model_dir="/m") == (
        "training stopped by SIGTERM during epoch 2 after 3 of 5 steps; checkpoint /ck/checkpoint-0001-000003.pt; the "
        "best model so far (epoch 1) is in /m; run again with the same checkpoint dir to resume")
    assert stop.inside_epoch(1, stats, None, best_epoch=None, model_dir="/m") == (
        "training stopped by SIGTERM during epoch 1 after 3 of 5 steps; checkpoint (no checkpoint dir); no epoch had "
        "finished, so no model was saved; run again with the same checkpoint dir to resume")
    assert stop.after_epoch(4) == "training stopped by SIGTERM after epoch 4; run again with the same checkpoint dir " \
                                  "to resume"


# ---------------------------------------------------------------- the time limit
def test_the_time_limit_cuts_the_epochs_and_what_follows_their_number(caplog):
    args = args_with("--max-train-minutes", "3.5")
    plan = schedule.make_plan(args, 100_000)
    with caplog.at_level(logging.INFO, logger="train"):
        cut = safeguards.fit_in_time(plan, 60, args, distributed.DistInfo(), torch.device("cpu"))
    assert cut.epochs == 3 and cut.patience == 3 and cut.warmup_steps == schedule.make_plan(
        args_with("--epochs", "3"), 100_000).warmup_steps
    assert f"max-train-minutes=3.5: an epoch took 60.0 s, so 3 epochs instead of {plan.epochs}" in caplog.text
    assert cut.describe() in caplog.text


@pytest.mark.parametrize("flags, seconds", [((), 600.0), (("--max-train-minutes", "600"), 60.0)])
def test_a_run_that_fits_keeps_its_plan(flags, seconds):
    args = args_with(*flags)
    plan = schedule.make_plan(args, 100_000)
    assert safeguards.fit_in_time(plan, seconds, args, distributed.DistInfo(), torch.device("cpu")) is plan
