"""K-fold ensembles through real jobs (tests/unit/code/test_ensemble.py is the rule): a 3-member ensemble through the
toolkit leaves its members in the model dir and the endpoint's handlers answer exactly the test probabilities
evaluation reported; a stop between members resumes without training the finished one again, to the same members;
ensemble=off (and auto on a tiny set) is the one model of before."""
import json
import os

import numpy as np
import pytest
import torch

import engine
import inference
import train
from conftest import FAST_HPS, make_dataset, run_local_train

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

ENSEMBLE = ["ensemble=on", "folds=3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ens") / "data", counts={"train": 20, "val": 6, "test": 8})


@pytest.fixture(scope="module")
def job(data, tmp_path_factory):
    work = tmp_path_factory.mktemp("ens-job")
    result = run_local_train(data, work, [*FAST_HPS, *ENSEMBLE])
    assert result.returncode == 0, result.stdout[-3000:]
    return work, result.stdout


def test_an_ensemble_job_saves_its_members_and_says_what_it_did(job):
    work, log = job
    config = json.loads((work / "model" / "model_config.json").read_text())
    metrics = json.loads((work / "output" / "data" / "metrics.json").read_text())
    assert config["ensemble"]["files"] == ["model.pth", "members/model-1.pth", "members/model-2.pth"]
    assert all((work / "model" / f).is_file() for f in config["ensemble"]["files"])
    block = metrics["ensemble"]
    assert block["members"] == 3 and block["pool_images"] == 52 and block["rule"].startswith("ensemble=on")
    assert sum(m["fold_images"] for m in block["per_member"]) == 52
    assert all(m["train_images"] + m["fold_images"] == 52 for m in block["per_member"])
    assert metrics["val"]["n"] == 52 and len(metrics["val_predictions"]["images"]) == 52  # every image judged once
    assert "ci95" in block["oof"] and block["oof"]["auc"] == metrics["val"]["auc"]
    assert config["temperature"] == metrics["decisions"]["temperature"] and config["threshold"] is not None
    assert config["threshold_rule"] == "Youden's J on the out-of-fold predictions"
    assert "ensemble=on: 3 folds of 52 images" in log and "ensemble: 3 members" in log
    assert "best epoch of each member" in log and "test_auc=" in log


def test_the_endpoint_serves_the_probabilities_evaluation_reported(job, data):
    work, _ = job
    model = inference.model_fn(str(work / "model"))
    assert len(model.members) == 3
    reported = json.loads((work / "output" / "data" / "metrics.json").read_text())["test_predictions"]
    for name, expected in zip(reported["images"], reported["probabilities"]):
        with open(os.path.join(data, "test", name), "rb") as fh:
            answer = inference.predict_fn(inference.input_fn(fh.read(), "image/png"), model)["predictions"][0]
        np.testing.assert_allclose(list(answer["probabilities"].values()), expected, atol=1e-5)


def in_process(data, work, *hps):
    argv = ["--train", os.path.join(data, "train"), "--val", os.path.join(data, "val"), "--test",
            os.path.join(data, "test"), "--model-dir", str(work / "model"), "--output-data-dir", str(work / "out"),
            "--output-dir", str(work / "out"), "--checkpoint-dir", str(work / "ck")]
    for pair in hps:
        key, value = pair.split("=", 1)
        argv += [f"--{key}", value]
    return argv


class Epochs(engine.Callback):
    """Which member (its checkpoint folder) trained which epochs; stops after ``stop_after`` (member, epoch)."""

    def __init__(self, stop_after=None):
        self.trained, self.stop_after = [], stop_after

    def on_train_epoch_start(self, trainer, epoch):
        self.trained.append((os.path.basename(trainer.args.checkpoint_dir), epoch))

    def on_evaluate(self, trainer, epoch, val):
        if (os.path.basename(trainer.args.checkpoint_dir), epoch) == self.stop_after:
            trainer.stop.request("a test")


def test_a_stop_between_members_resumes_to_the_same_members_without_training_the_finished_one(data, tmp_path):
    hps = [*FAST_HPS, *ENSEMBLE]
    assert train.main(in_process(data, tmp_path / "ref", *hps)) == 0
    stopper = Epochs(stop_after=("member-0", 2))
    work = tmp_path / "run"
    assert train.main(in_process(data, work, *hps), callbacks=[stopper]) == train.SIGTERM_EXIT_CODE
    assert stopper.trained == [("member-0", 1), ("member-0", 2)]
    assert "after epoch 2" in (work / "out" / "failure").read_text()
    resumed = Epochs()
    assert train.main(in_process(data, work, *hps), callbacks=[resumed]) == 0
    assert [m for m, _ in resumed.trained] == ["member-1"] * 2 + ["member-2"] * 2  # member 0 was done
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    for name in ("model.pth", "members/model-1.pth", "members/model-2.pth"):
        torch.testing.assert_close(load(work / "model" / name), load(tmp_path / "ref" / "model" / name))
    got = json.loads((work / "out" / "metrics.json").read_text())["test_predictions"]["probabilities"]
    want = json.loads((tmp_path / "ref" / "out" / "metrics.json").read_text())["test_predictions"]["probabilities"]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_ensemble_off_and_auto_on_a_tiny_set_train_the_one_model_of_before(data, tmp_path, capsys):
    assert train.main(in_process(data, tmp_path / "off", *FAST_HPS, "ensemble=off")) == 0
    assert train.main(in_process(data, tmp_path / "auto", *FAST_HPS)) == 0
    log = capsys.readouterr().out
    assert "ensemble=off" in log and "ensemble=auto: one model, 52 images" in log
    for run in ("off", "auto"):
        model_dir = tmp_path / run / "model"
        assert not (model_dir / "members").exists()
        assert "ensemble" not in json.loads((model_dir / "model_config.json").read_text())
        metrics = json.loads((tmp_path / run / "out" / "metrics.json").read_text())
        assert metrics["ensemble"] == {"members": 1, "rule": "ensemble=off" if run == "off" else (
            "ensemble=auto: one model, 52 images with 26 in the rarest class cannot make 3 folds of 100+ images and "
            "20+ of every class")}
        assert metrics["val"]["n"] == 12  # val is the val channel, as before
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    torch.testing.assert_close(load(tmp_path / "off" / "model" / "model.pth"),
                               load(tmp_path / "auto" / "model" / "model.pth"))


def test_auto_falls_back_to_one_model_when_the_members_would_not_fit_the_time(tmp_path, capsys):
    """300 images make 3 folds of 100 (auto's counts rule), but a budget of 0.06 s cannot hold 3 members: the first
    member's first epoch is timed, and the run trains one model instead, said in the log, metrics.json and the
    checkpoint dir (so a resumed run does the same)."""
    data = make_dataset(tmp_path / "data", counts={"train": 150, "test": 6}, size=12)
    argv = ["--train", os.path.join(data, "train"), "--test", os.path.join(data, "test"), "--model-dir",
            str(tmp_path / "model"), "--output-data-dir", str(tmp_path / "out"), "--output-dir", str(tmp_path / "out"),
            "--checkpoint-dir", str(tmp_path / "ck"), "--epochs", "1", "--ema", "0", "--max-train-minutes", "0.001"]
    assert train.main(argv) == 0
    log = capsys.readouterr().out
    assert "ensemble=auto: 3 folds of 300 images" in log and "ensemble member 1 of 3" in log
    assert "but one model: 3 members would not fit the time" in log and "ensemble member 2 of 3" not in log
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["ensemble"]["members"] == 1 and "would not fit the time" in metrics["ensemble"]["rule"]
    assert metrics["val"]["n"] == 30 and not (tmp_path / "model" / "members").exists()  # the held-out val of before
    assert json.loads((tmp_path / "ck" / "ensemble.json").read_text())["members"] == 1
