"""The fine-tuning plan (schedule.fine_tuning_plan) and the optimiser's groups (initialisation.param_groups): a model
that starts from weights (pretrained=true, or a model channel) gets a shorter budget, a longer warm-up and its
loaded layers at backbone-lr-scale x the lr of the layers made anew; from scratch nothing changes. And the
channels a model starts from (weights, model) as train.py's arguments."""
import dataclasses
import json

import pytest
import torch

import engine
import hyperparameters
import initialisation
import model_def
import schedule
from errors import ConfigError

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6


def args_with(argv=(), environ=None, **overrides):
    args = hyperparameters.parse_args(list(argv), environ=environ or {})
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


# ---------------------------------------------------------------- the plan
@pytest.mark.parametrize("start", [dict(pretrained=True), dict(initial_model="/opt/ml/input/data/model")])
@pytest.mark.parametrize("n, batch, epochs, steps_per_epoch", [(300, 16, 28, 18), (1080, 64, 32, 16),
                                                                (4708, 128, 14, 36), (60, 16, 167, 3)])
def test_a_model_that_starts_from_weights_gets_the_fine_tuning_plan(start, n, batch, epochs, steps_per_epoch):
    plan = schedule.make_plan(args_with(**start), n)
    assert (plan.recipe, plan.backbone_lr_scale) == (schedule.FINE_TUNING, 0.1)
    assert (plan.batch_size, plan.epochs, plan.steps_per_epoch) == (batch, epochs, steps_per_epoch)
    assert plan.total_steps >= 500 and plan.total_steps - 500 < steps_per_epoch  # the fine-tune-steps budget
    assert plan.warmup_steps == max(10, round(0.1 * plan.total_steps))  # 10% warm-up, not 3%
    scratch = schedule.make_plan(args_with(), n)
    assert plan.lr == scratch.lr and plan.batch_size == scratch.batch_size  # the head's peak: the same rule
    assert plan.ema == pytest.approx(min(0.9999, max(0.9, 1 - 1 / (0.1 * plan.total_steps))))
    assert plan.patience == max(3, round(0.25 * plan.epochs)) and "backbone_lr_scale" in plan.auto
    assert "x0.1 for loaded ones (fine-tuning)" in plan.describe() and plan.describe().startswith("plan: ")


def test_from_scratch_the_plan_is_unchanged():
    plan = schedule.make_plan(args_with(), 300)
    assert (plan.recipe, plan.backbone_lr_scale, plan.epochs, plan.warmup_steps) == (
        schedule.FROM_SCRATCH, 1.0, 84, 45)  # 1,500 steps, 3% warm-up
    assert "loaded" not in plan.describe()
    # a checkpoint written before fine-tuning existed restores as a from-scratch plan
    old = {k: v for k, v in plan.to_dict().items() if k not in ("backbone_lr_scale", "recipe")}
    assert schedule.Plan.from_dict(old) == plan


def test_the_values_a_user_sets_are_honoured():
    args = args_with(["--pretrained", "true", "--model", "resnet18", "--fine-tune-steps", "200",
                      "--backbone-lr-scale", "0.3", "--lr", "0.01", "--epochs", "7", "--warmup-epochs", "1"])
    plan = schedule.make_plan(args, 300)
    assert (plan.backbone_lr_scale, plan.lr, plan.epochs, plan.warmup_steps) == (0.3, 0.01, 7, 18)
    assert plan.auto == ["batch_size", "ema", "patience"]
    short = schedule.make_plan(args_with(["--pretrained", "true", "--model", "resnet18", "--fine-tune-steps", "200"]),
                               300)
    assert short.epochs == 12 and short.total_steps == 216


def test_a_run_cut_to_time_keeps_the_fine_tuning_warm_up():
    args = args_with(pretrained=True)
    plan = schedule.make_plan(args, 4708)
    cut = schedule.cut_to_time(plan, seconds_per_epoch=60, max_minutes=5, args=args)
    assert (cut.epochs, cut.recipe, cut.backbone_lr_scale) == (5, schedule.FINE_TUNING, 0.1)
    assert cut.warmup_steps == round(0.1 * cut.total_steps)


# ---------------------------------------------------------------- the optimiser's groups
def built(new_layers):
    model = model_def.create_model("resnet18_small", 2, 1)
    model.new_layers = new_layers
    return model


def test_param_groups_give_new_layers_the_lr_and_loaded_ones_the_scaled_lr():
    model = built(["conv1", "fc"])
    groups = initialisation.param_groups(model, 0.05, 0.1)
    assert [(g["lr_scale"], g["weight_decay"], len(g["params"])) for g in groups] == [
        (1.0, 0.05, 2), (1.0, 0.0, 1), (0.1, 0.05, 19), (0.1, 0.0, 40)]
    new = {id(p) for name, p in model.named_parameters() if name.startswith(("conv1.", "fc."))}
    assert {id(p) for g in groups[:2] for p in g["params"]} == new
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_from_scratch_the_groups_are_the_two_of_before():
    """Decayed, then not (norms and biases): the groups of checkpoints written before fine-tuning existed."""
    model = model_def.create_model("smallcnn", 2, 1)
    groups = initialisation.param_groups(model, 0.05)
    assert [(g["lr_scale"], g["weight_decay"]) for g in groups] == [(1.0, 0.05), (1.0, 0.0)]
    assert [p for g in groups for p in g["params"] if p.ndim <= 1] == groups[1]["params"]


def test_a_model_continued_whole_trains_every_layer_at_the_scaled_lr():
    groups = initialisation.param_groups(built([]), 0.05, 0.1)
    assert {g["lr_scale"] for g in groups} == {0.1}


def test_the_trainers_step_sets_each_groups_lr_from_the_schedule_and_its_scale():
    """engine.build_optimizer makes the groups; the step's lr is lr_at(step) x lr_scale for each."""
    args = args_with(pretrained=True)
    model = built(["fc"])
    optimizer = engine.build_optimizer(args, model, 1e-3, 0.25)
    scales = sorted({g["lr_scale"] for g in optimizer.param_groups})
    assert scales == [0.25, 1.0]
    # what Trainer._step does before each step (a checkpoint's groups keep their lr_scale through load_state_dict)
    restored = engine.build_optimizer(args, model, 1e-3, 0.25)
    restored.load_state_dict(optimizer.state_dict())
    for group in restored.param_groups:
        group["lr"] = 2e-3 * group.get("lr_scale", 1.0)
    assert sorted(g["lr"] for g in restored.param_groups) == [5e-4, 5e-4, 2e-3, 2e-3]


# ---------------------------------------------------------------- the channels a model starts from
def sm_env(*names):
    env = {"SM_CHANNELS": json.dumps(list(names))}
    env.update({f"SM_CHANNEL_{n.upper()}": f"/opt/ml/input/data/{n}" for n in names})
    return env


def test_the_weights_and_model_channels_are_known_and_are_not_data():
    assert hyperparameters.channel_paths(sm_env("train", "weights", "model")) == {
        "train": "/opt/ml/input/data/train", "weights": "/opt/ml/input/data/weights",
        "model": "/opt/ml/input/data/model"}
    args = hyperparameters.parse_args(["--pretrained", "true", "--model", "resnet18"],
                                      environ=sm_env("train", "weights"))
    assert (args.weights, args.initial_model, args.val) == ("/opt/ml/input/data/weights", None, None)
    args = hyperparameters.parse_args([], environ=sm_env("train", "model"))
    assert args.initial_model == "/opt/ml/input/data/model" and schedule.starts_from_weights(args)
    assert "weights" not in hyperparameters.recorded(args) and "initial_model" not in hyperparameters.recorded(args)


@pytest.mark.parametrize("argv, names, message", [
    ([], ("train", "weights"), "the job has a weights channel but pretrained=false; set pretrained=true to start from "
                               "its file, or leave the channel out"),
    (["--pretrained", "true", "--model", "resnet18"], ("train", "weights", "model"),
     "the job has both a weights channel and a model channel; give one: the model channel's earlier model already "
     "holds its backbone"),
    (["--backbone-lr-scale", "0.5"], ("train",),
     "invalid hyperparameter: backbone-lr-scale=0.5 applies to a model that starts from weights; set pretrained=true "
     "or add a model channel, or leave it auto"),
    (["--pretrained", "true", "--model", "resnet18", "--backbone-lr-scale", "1.5"], ("train",),
     "invalid hyperparameter: argument --backbone-lr-scale: must be <= 1, got '1.5'"),
])
def test_what_cannot_be_used_together_is_one_line(argv, names, message):
    with pytest.raises(ConfigError) as err:
        hyperparameters.parse_args(argv, environ=sm_env(*names))
    assert str(err.value) == message


def test_the_plan_is_saved_whole():
    plan = schedule.make_plan(args_with(pretrained=True), 300)
    assert schedule.Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert dataclasses.replace(plan, epochs=3).recipe == schedule.FINE_TUNING


def test_a_frozen_backbone_is_a_zero_scale():
    args = args_with(["--pretrained", "true", "--model", "resnet18", "--backbone-lr-scale", "0"])
    assert schedule.make_plan(args, 300).backbone_lr_scale == 0.0
    model = built(["fc"])
    before = model.layer1[0].conv1.weight.detach().clone()
    optimizer = engine.build_optimizer(args, model, 1e-2, 0.0)
    for group in optimizer.param_groups:
        group["lr"] = 1e-2 * group["lr_scale"]
    model(torch.randn(2, 1, 16, 16)).sum().backward()
    optimizer.step()
    assert torch.equal(model.layer1[0].conv1.weight, before) and model.fc.weight.grad is not None
