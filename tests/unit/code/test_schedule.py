"""The training length (code/schedule.py): the default length follows a step budget, and warm-up, early stopping
and the EMA follow the run's clock; numbers the user sets are honoured; a time limit cuts the epochs."""
import pytest

import hyperparameters
import schedule
from train_args import args_with

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6


@pytest.mark.parametrize("n, batch, epochs, steps_per_epoch", [
    (60, 16, 300, 3),          # tiny: capped at 300 epochs (900 steps)
    (300, 16, 84, 18),         # a 300-image set
    (550, 32, 89, 17),         # the breast ultrasound set of the issue: 160 steps before
    (4708, 128, 42, 36),       # PneumoniaMNIST's train split: about today's 40 epochs
    (100_000, 128, 5, 781),    # large: 5 epochs, not 40, on a CPU
])
def test_the_default_length_is_a_step_budget(n, batch, epochs, steps_per_epoch):
    plan = schedule.make_plan(args_with(), n)
    assert (plan.batch_size, plan.epochs, plan.steps_per_epoch) == (batch, epochs, steps_per_epoch)
    assert plan.total_steps == epochs * steps_per_epoch >= min(1500, 300 * steps_per_epoch)
    assert plan.lr == pytest.approx(2e-3 * (batch / 128) ** 0.5)
    assert plan.warmup_steps == max(10, round(0.03 * plan.total_steps))
    assert plan.ema == pytest.approx(min(0.9999, max(0.9, 1 - 10 / plan.total_steps)))
    assert plan.patience == max(3, round(epochs / 4))


def test_auto_lr_follows_the_global_batch_of_all_processes():
    one = schedule.make_plan(args_with(batch_size=16), 4000, world_size=1)
    two = schedule.make_plan(args_with(batch_size=8), 2000, world_size=2)
    assert one.lr == two.lr == pytest.approx(2e-3 * (16 / 128) ** 0.5)


def test_numbers_the_user_sets_are_honoured():
    plan = schedule.make_plan(args_with(epochs=7, batch_size=64, lr=0.01, warmup_epochs=1.0, ema=0.0, patience=0),
                              1000)
    assert (plan.epochs, plan.batch_size, plan.lr, plan.warmup_steps, plan.ema, plan.patience) == (
        7, 64, 0.01, 15, 0.0, 0)
    assert plan.auto == []


def test_a_time_limit_cuts_the_epochs_after_the_first():
    plan = schedule.make_plan(args_with(), 100_000)
    assert schedule.cut_to_time(plan, seconds_per_epoch=60, max_minutes=0) is plan
    cut = schedule.cut_to_time(plan, seconds_per_epoch=60, max_minutes=3.5)
    assert cut.epochs == 3 and cut.total_steps == 3 * plan.steps_per_epoch
    assert schedule.cut_to_time(plan, 60, 600) is plan


def test_a_run_cut_short_rederives_what_follows_its_length():
    """max-train-minutes: the auto warm-up, EMA and patience follow the new length (3% warm-up, an EMA over the
    last tenth, a quarter of the epochs), as make_plan would have set them for it; values the user set stay."""
    plan = schedule.make_plan(args_with(), 4708)  # 42 epochs x 36 steps
    cut = schedule.cut_to_time(plan, seconds_per_epoch=60, max_minutes=8, args=args_with())
    assert (cut.epochs, cut.total_steps) == (8, 288)
    planned_so = schedule.make_plan(args_with(epochs=8), 4708)
    assert (cut.warmup_steps, cut.ema, cut.patience) == (planned_so.warmup_steps, planned_so.ema, planned_so.patience)
    assert (cut.warmup_steps, round(cut.ema, 5), cut.patience) == (10, 0.96528, 3)
    assert (plan.warmup_steps, plan.patience) == (45, 10)
    fixed = schedule.cut_to_time(schedule.make_plan(args_with(patience=7, ema=0.9), 4708), 60, 8,
                                 args=args_with(patience=7, ema=0.9))
    assert (fixed.patience, fixed.ema) == (7, 0.9)


def test_auto_is_a_hyperparameter_value():
    args = hyperparameters.parse_args(["--epochs", "auto", "--batch-size", "32", "--lr", "AUTO"], environ={})
    assert (args.epochs, args.batch_size, args.lr) == ("auto", 32, "auto")
    with pytest.raises(Exception, match="expected a whole number"):
        hyperparameters.parse_args(["--epochs", "many"], environ={})
