"""What a checkpoint holds (code/checkpoint_connector.py): dump() -> file -> restore() puts every piece back (model,
optimiser, EMA, state, early stopping, plan, where to go on from, the generators), the content keeps the shape old
checkpoints have, and a checkpoint that does not fit the run is refused with one line and left as it was. A tiny
model in this process: milliseconds, no training run."""
import logging
import os

import pytest
import torch

import checkpoint_connector
import checkpoints
import schedule
from conftest import tiny_trainer
from errors import ConfigError

# code/'s own checks (make test-torch26 runs them on torch 2.6), each in milliseconds on one thread
pytestmark = [pytest.mark.torch26, pytest.mark.usefixtures("one_torch_thread")]

FLAGS = ("--ema", "0.9", "--epochs", "6", "--batch-size", "8", "--patience", "3")


def trained_a_little(tmp_path, *flags, steps=3, **kwargs):
    """A tiny trainer after ``steps`` optimiser steps of its own step (so optimiser and EMA have state), one
    validated epoch kept as the best and one without improvement."""
    trainer = tiny_trainer(tmp_path, *(flags or FLAGS), **kwargs)
    x, y = trainer.data.train.images[:8], trainer.data.train.labels[:8]
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    for _ in range(steps):
        trainer.epoch_loop.step(x, y, torch.Generator().manual_seed(1), mean, std)
    trainer.early_stopping.update(1, {"auc": 0.75, "loss": 0.5}, trainer.model)
    trainer.early_stopping.update(2, {"auc": 0.7, "loss": 0.4}, trainer.model)
    trainer.state.epoch = 2
    trainer.state.history += [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}]
    return trainer


def partial_epoch():
    return {"loss_sum": 1.25, "seen": 8, "generator": torch.Generator().manual_seed(5).get_state()}


def assert_same_tensors(got, want):
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_every_piece_comes_back(tmp_path):
    saved = trained_a_little(tmp_path)
    path = saved.save_checkpoint(2, step=1, partial=partial_epoch())
    assert os.path.basename(path) == "checkpoint-0002-000001.pt"
    after_dump = torch.rand(4)  # the generators as the checkpoint holds them: a resume inside an epoch goes on here

    resumed = tiny_trainer(tmp_path, *FLAGS, seed=1)  # other initial weights (and images, not in the fingerprint)
    torch.rand(7)
    assert resumed.resume(str(tmp_path / "ck"))
    assert torch.equal(torch.rand(4), after_dump)
    assert_same_tensors(resumed.model.state_dict(), saved.model.state_dict())
    assert_same_tensors(resumed.ema.state, saved.ema.state)
    assert (resumed.ema.updates, resumed.ema.decay) == (saved.ema.updates, saved.ema.decay) == (3, 0.9)
    got, want = resumed.optimizer.state_dict(), saved.optimizer.state_dict()
    assert got["param_groups"] == want["param_groups"] and set(got["state"]) == set(want["state"])
    for i, moments in want["state"].items():
        assert_same_tensors(got["state"][i], moments)
    assert resumed.state == saved.state and resumed.state.global_step == 3
    es, was = resumed.early_stopping, saved.early_stopping
    assert (es.best_score, es.best_epoch, es.bad_epochs, es.best_val, es.patience) == (
        was.best_score, was.best_epoch, was.bad_epochs, was.best_val, was.patience) == ([0.75, -0.5], 1, 1,
                                                                                         {"auc": 0.75, "loss": 0.5}, 3)
    assert_same_tensors(es.best_weights, was.best_weights)
    assert resumed.plan == saved.plan
    assert (resumed.start_epoch, resumed.epoch_loop.resume_step) == (3, 1)
    assert resumed.epoch_loop.partial["loss_sum"] == 1.25 and resumed.epoch_loop.partial["seen"] == 8
    assert torch.equal(resumed.epoch_loop.partial["generator"], partial_epoch()["generator"])


def test_the_content_has_the_shape_old_checkpoints_have(tmp_path):
    """CHECKPOINT_FORMAT 2, as written before the checkpoint moved out of engine.py: a checkpoint written then
    still resumes, because the keys and what they hold are the same."""
    trainer = trained_a_little(tmp_path)
    ckpt = trainer.checkpoint.dump(2)
    assert checkpoint_connector.CHECKPOINT_FORMAT == ckpt["format"] == 2
    assert set(ckpt) == {"format", "epoch", "step", "model", "optimizer", "scaler", "ema", "train_state",
                         "fingerprint", "rng", "partial"}
    assert set(ckpt["train_state"]) == {"epoch", "global_step", "best_score", "best_epoch", "bad_epochs", "best_val",
                                        "history", "plan", "train_images", "best_model"}
    assert ckpt["fingerprint"] == {"model": "smallcnn", "num_classes": 2, "in_channels": 1, "image_size": 8}
    assert (ckpt["epoch"], ckpt["step"], ckpt["partial"], ckpt["scaler"]) == (2, 0, None, None)
    assert ckpt["train_state"]["plan"] == trainer.plan.to_dict() and ckpt["train_state"]["train_images"] == 16


def test_at_an_epoch_boundary_each_epoch_seeds_itself(tmp_path):
    trained_a_little(tmp_path).save_checkpoint(2)
    resumed = tiny_trainer(tmp_path, *FLAGS)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert resumed.resume(str(tmp_path / "ck"))
    assert torch.equal(torch.rand(3), expected)  # the generators were not touched
    assert (resumed.start_epoch, resumed.epoch_loop.resume_step, resumed.epoch_loop.partial) == (3, 0, None)


def test_no_checkpoint_is_a_fresh_start(tmp_path):
    trainer = tiny_trainer(tmp_path, *FLAGS)
    assert not trainer.resume(str(tmp_path / "ck")) and not trainer.resume("")
    assert (trainer.start_epoch, trainer.state.global_step, trainer.early_stopping.best_epoch) == (1, 0, 0)


def refused(tmp_path, *flags, **kwargs):
    """The ConfigError of resuming tmp_path/ck with another run; the checkpoint files are left as they were."""
    before = sorted(os.listdir(tmp_path / "ck"))
    with pytest.raises(ConfigError) as err:
        tiny_trainer(tmp_path, *(flags or FLAGS), **kwargs).resume(str(tmp_path / "ck"))
    assert sorted(os.listdir(tmp_path / "ck")) == before
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    trained_a_little(tmp_path).save_checkpoint(2)
    line = refused(tmp_path, size=12)
    assert line == (f"the checkpoint dir {tmp_path / 'ck'} holds checkpoints of another model ({{'model': 'smallcnn', "
                    "'num_classes': 2, 'in_channels': 1, 'image_size': 8}, this run is {'model': 'smallcnn', "
                    "'num_classes': 2, 'in_channels': 1, 'image_size': 12}); use an empty checkpoint dir or the same "
                    "model, image size and classes")


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    path = trained_a_little(tmp_path).save_checkpoint(2)
    ckpt = torch.load(path, weights_only=True)
    checkpoints.save_checkpoint(dict(ckpt, format=1), str(tmp_path / "ck"), 2)
    assert refused(tmp_path) == (f"the checkpoint {path} was written by another version of train.py (format 1, this "
                                 "one reads 2); use an empty checkpoint dir, or the code that wrote it")


def test_weights_of_other_shapes_are_refused(tmp_path):
    path = trained_a_little(tmp_path).save_checkpoint(2)
    line = refused(tmp_path, width=6)
    assert line.startswith(f"the checkpoint {path} does not fit this smallcnn model (its weights have other shapes")


def test_another_batch_size_is_refused(tmp_path):
    trained_a_little(tmp_path).save_checkpoint(2)
    assert refused(tmp_path, "--ema", "0.9", "--epochs", "6", "--batch-size", "4").startswith(
        f"the checkpoints in {tmp_path / 'ck'} were trained with batch-size 8, this run asks for 4; resume with the "
        "same batch size")


def test_the_saved_plan_goes_on_and_what_is_set_now_replaces_it(tmp_path, caplog):
    saved = trained_a_little(tmp_path)
    args = saved.args
    args.epochs, args.patience = "auto", "auto"  # so that cutting re-derives patience, as max-train-minutes does
    saved.set_plan(schedule.with_epochs(saved.plan, 4, args))
    saved.save_checkpoint(2)
    auto = tiny_trainer(tmp_path, "--ema", "0.9", "--batch-size", "8")  # epochs, patience, lr: auto
    auto.resume(str(tmp_path / "ck"))
    assert auto.plan == saved.plan and auto.plan.epochs == 4  # a run cut short stays cut
    assert auto.early_stopping.patience == saved.plan.patience == 3
    with caplog.at_level(logging.WARNING, logger="train"):
        lower = tiny_trainer(tmp_path, "--ema", "0.9", "--batch-size", "8", "--lr", "0.0001", "--epochs", "9")
        lower.resume(str(tmp_path / "ck"))
    assert (lower.plan.lr, lower.plan.epochs, lower.plan.batch_size) == (0.0001, 9, 8)
    assert lower.state.plan == lower.plan.to_dict()  # what the next checkpoint saves
    assert "lr 0.0001 replaces the checkpoint's" in caplog.text
    assert "epochs 9 replaces the checkpoint's 4" in caplog.text
