"""engine.Trainer.fit's skeleton with its policies, in milliseconds: a tiny model trains for real, and its
validation figures are scripted (the predictor is the trainer's seam), so that which epoch is kept, when patience
ends the run, what a stop or a broken model leaves, and what a resumed run goes on from are known exactly."""
import logging
import os

import numpy as np
import pytest
import torch

import engine
from conftest import RecordingWriter, tiny_trainer
from errors import NonFiniteError, Stopped

# code/'s own checks (make test-torch26 runs them on torch 2.6), each in milliseconds on one thread
pytestmark = [pytest.mark.torch26, pytest.mark.usefixtures("one_torch_thread")]

LABELS = np.array([0, 1, 0, 1, 0, 1])


class ScriptedVal:
    """Validation predictions of a given margin per epoch: every margin > 0 separates the classes (val AUC 1), a
    larger one with a lower val loss; NaN makes them NaN."""

    def __init__(self, margins):
        self.margins, self.calls = list(margins), 0

    def __call__(self, model, split, name):
        margin = self.margins[self.calls]
        self.calls += 1
        sign = np.where(LABELS == 1, 1.0, -1.0)[:, None] * np.array([[-1.0, 1.0]])
        return LABELS, (margin * sign).astype(np.float32), np.arange(len(LABELS))


def only_epoch_1_saved(writer, epochs_run):
    """Every model the writer saved is epoch 1's (saved when it was validated, again when the run ends early)."""
    assert writer.saved
    for weights in writer.saved:
        for name, value in writer.saved[0].items():
            assert torch.equal(weights[name], value)
    assert not torch.equal(writer.saved[0]["0.weight"], epochs_run.model.state_dict()["0.weight"])


def fit(tmp_path, margins, *flags, **kwargs):
    flags = flags or ("--ema", "0", "--epochs", "10", "--batch-size", "8", "--patience", "2")
    trainer = tiny_trainer(tmp_path, *flags, predict=ScriptedVal(margins), **kwargs)
    return trainer, trainer.fit


def test_patience_ends_the_run_and_the_best_epoch_is_kept(tmp_path, caplog):
    trainer, run = fit(tmp_path, [1.0, 2.0, 1.5, 2.0])  # AUC 1 throughout: the lower loss decides, ties are not better
    snapshots = []

    class Snapshot(engine.Callback):
        def on_evaluate(self, trainer, epoch, val):
            snapshots.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer.callbacks.append(Snapshot())
    with caplog.at_level(logging.INFO, logger="train"):
        result = run()
    assert [h["epoch"] for h in result.state.history] == [1, 2, 3, 4] and result.state.epoch == 4
    assert "early stopping: no val improvement for 2 epochs (patience=2); best epoch 2" in caplog.text
    assert result.best_epoch == 2 and result.plan is trainer.plan
    for name, value in snapshots[1].items():  # the weights validated in epoch 2, not the last ones
        assert torch.equal(result.best_weights[name], value)
    assert len(trainer.writer.saved) == 2  # saved as each better epoch came (epochs 1 and 2), not only at the end
    for name, value in trainer.writer.saved[-1].items():
        assert torch.equal(result.best_weights[name], value)
    assert sorted(os.listdir(tmp_path / "ck")) == ["checkpoint-0003-000000.pt", "checkpoint-0004-000000.pt"]


def test_a_resumed_run_goes_on_with_its_best_epoch_and_patience(tmp_path):
    run_flags = ("--ema", "0", "--epochs", "3", "--batch-size", "8", "--patience", "2")
    first = tiny_trainer(tmp_path, *run_flags, predict=ScriptedVal([1.0, 2.0, 1.5])).fit()
    assert first.best_epoch == 2
    longer = tiny_trainer(tmp_path, "--ema", "0", "--epochs", "6", "--batch-size", "8", "--patience", "2",
                          predict=ScriptedVal([1.8]))
    longer.resume(str(tmp_path / "ck"))
    result = longer.fit()  # epoch 4 is no better than epoch 2: the second epoch without improvement ends the run
    assert (result.best_epoch, result.state.epoch, longer.predict.calls) == (2, 4, 1)
    for name, value in first.best_weights.items():
        assert torch.equal(result.best_weights[name], value)


def test_a_fresh_instance_with_nothing_left_to_train_still_leaves_the_kept_model(tmp_path):
    """A spot job restarted after its last checkpoint: /opt/ml/model is empty, the checkpoint holds the best."""
    tiny_trainer(tmp_path, "--ema", "0", "--epochs", "2", "--batch-size", "8", "--patience", "0",
                 predict=ScriptedVal([2.0, 1.0])).fit()
    restarted = tiny_trainer(tmp_path, "--ema", "0", "--epochs", "2", "--batch-size", "8", "--patience", "0",
                             writer=RecordingWriter(), predict=ScriptedVal([]))
    restarted.resume(str(tmp_path / "ck"))
    result = restarted.fit()
    assert result.best_epoch == 1 and result.state.epoch == 2
    assert len(restarted.writer.saved) == 1
    for name, value in result.best_weights.items():
        assert torch.equal(restarted.writer.saved[0][name], value)


def test_predictions_that_are_not_finite_keep_the_best_model_and_say_what_to_do(tmp_path):
    trainer, run = fit(tmp_path, [1.0, float("nan")])
    with pytest.raises(NonFiniteError) as err:
        run()
    assert str(err.value) == (
        f"the model's predictions on val became NaN or infinite after epoch 2; lower lr (now {trainer.plan.lr:g}) or "
        f"turn amp off; the best model so far (epoch 1) is in {tmp_path / 'model'}; the checkpoint of epoch 1 was "
        "kept: run again with the same checkpoint dir and a lower lr to resume from it")
    assert sorted(os.listdir(tmp_path / "ck")) == ["checkpoint-0001-000000.pt"]
    only_epoch_1_saved(trainer.writer, trainer)


class StopAt(engine.Callback):
    def __init__(self, epoch, step):
        self.at = (epoch, step)

    def on_step_end(self, trainer, epoch, step):
        if (epoch, step) == self.at:
            trainer.stop.request("a test")


def test_a_stop_inside_an_epoch_checkpoints_that_step(tmp_path):
    trainer, run = fit(tmp_path, [1.0, 2.0])
    trainer.callbacks.append(StopAt(2, 1))  # 16 images, batch 8: 2 steps an epoch
    with pytest.raises(Stopped) as err:
        run()
    path = tmp_path / "ck" / "checkpoint-0001-000001.pt"
    assert str(err.value) == (f"training stopped by a test during epoch 2 after 1 of 2 steps; checkpoint {path}; the "
                              f"best model so far (epoch 1) is in {tmp_path / 'model'}; run again with the same "
                              "checkpoint dir to resume")
    ckpt = torch.load(path, weights_only=True)
    assert (ckpt["epoch"], ckpt["step"], ckpt["partial"]["seen"]) == (1, 1, 8)
    only_epoch_1_saved(trainer.writer, trainer)


def test_a_stop_at_the_end_of_an_epoch_leaves_after_its_checkpoint(tmp_path):
    trainer, run = fit(tmp_path, [1.0, 2.0])
    trainer.callbacks.append(StopAt(1, 2))  # the last step of epoch 1: the epoch completes
    with pytest.raises(Stopped) as err:
        run()
    assert str(err.value) == ("training stopped by a test after epoch 1; run again with the same checkpoint dir to "
                              "resume")
    assert sorted(os.listdir(tmp_path / "ck")) == ["checkpoint-0001-000000.pt"]
    assert trainer.early_stopping.best_epoch == 1 and trainer.writer.saved
