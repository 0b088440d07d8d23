"""Spot interruptions: SIGKILL, SIGTERM and a truncated checkpoint all end in the model an uninterrupted run makes.

Everything runs through scripts/local_train.py (the real toolkit). WORK/checkpoints stands in for
/opt/ml/checkpoints, which SageMaker restores from checkpoint_s3_uri before a spot job starts again; running
local_train a second time with the same WORK is that restart. The hyperparameters keep train.py's defaults
(weight EMA, bf16 autocast where the CPU has it, augmentation): resume must be exact with them, not only with a
simplified configuration. Only early stopping is turned off, so that every run trains the same epochs.
"""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoints
import engine
import model_def
import train
from conftest import SCRIPTS, make_dataset, read_failure, run_local_train

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

EPOCHS = 4
HPS = [f"epochs={EPOCHS}", "batch-size=8", "patience=0"]  # 120 training images: 15 steps an epoch
EPOCH_LINE = re.compile(r"\bepoch=(\d+) train_loss=")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("spot") / "data", counts={"train": 60, "val": 10}, size=32)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    work = tmp_path_factory.mktemp("reference")
    result = run_local_train(data, work, HPS)
    assert result.returncode == 0, result.stdout[-3000:]
    return work


# ---------------------------------------------------------------- helpers
def start(data, work):
    """local_train in its own session, so the whole job (toolkit, train.py) can be killed as a group."""
    log = open(f"{work}.log", "w")
    cmd = [sys.executable, os.path.join(SCRIPTS, "local_train.py"), "--data", str(data), "--out", str(work),
           "--hp", *HPS]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log.close()
    return proc


def checkpoint_files(work):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(work, "checkpoints", "checkpoint-*.pt")))


def wait_for_checkpoint(proc, work, timeout=240):
    """Block until the first end-of-epoch checkpoint exists (not a fixed sleep: the machine may be slow)."""
    deadline = time.monotonic() + timeout
    while not checkpoint_files(work):
        assert proc.poll() is None, f"the job ended (exit {proc.returncode}) before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.02)


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def epochs_trained(stdout):
    return [int(e) for e in EPOCH_LINE.findall(stdout)]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_final_model(work, ref):
    """model.pth (the best weights), and the last checkpoint's raw weights and EMA, equal the reference's.

    On one CPU thread the runs are bit-identical in practice; the tolerance only allows for a BLAS that
    reorders a sum."""
    tight = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(load(work / "model" / "model.pth"), load(ref / "model" / "model.pth"), **tight)
    last = f"checkpoint-{EPOCHS:04d}-000000.pt"
    got, want = load(work / "checkpoints" / last), load(ref / "checkpoints" / last)
    torch.testing.assert_close(got["model"], want["model"], **tight)
    torch.testing.assert_close(got["ema"]["state"], want["ema"]["state"], **tight)
    assert got["ema"]["updates"] == want["ema"]["updates"]
    got_hist, want_hist = got["train_state"]["history"], want["train_state"]["history"]
    assert [h["epoch"] for h in got_hist] == list(range(1, EPOCHS + 1))
    for g, w in zip(got_hist, want_hist):  # the resumed epoch's loss includes the steps before the stop
        assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-5)
        assert g["val_loss"] == pytest.approx(w["val_loss"], rel=1e-5)


# ---------------------------------------------------------------- SIGKILL: the instance is gone
def test_sigkill_resumes_at_the_next_epoch_and_matches(data, reference, tmp_path):
    work = tmp_path / "work"
    proc = start(data, work)
    try:
        wait_for_checkpoint(proc, work)
    finally:
        kill_group(proc)  # the whole job at once, no chance to clean up: a reclaimed spot instance
    done = max(int(n.split("-")[1]) for n in checkpoint_files(work))
    assert done < EPOCHS, f"the job finished before the kill landed ({checkpoint_files(work)})"
    # killed without warning, the job already holds its best model so far (what SageMaker uploads on a stop)
    assert load(work / "model" / "model.pth") and os.path.exists(work / "model" / "model_config.json")

    result = run_local_train(data, work, HPS)
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"resumed from {work}/checkpoints/checkpoint-{done:04d}-000000.pt: {done} epoch(s) done" in result.stdout
    assert epochs_trained(result.stdout) == list(range(done + 1, EPOCHS + 1))  # nothing lost but the epoch in flight
    assert not glob.glob(str(work / "checkpoints" / ".tmp-*"))  # a write cut short is cleaned up
    assert_same_final_model(work, reference)


# ---------------------------------------------------------------- SIGTERM: StopTrainingJob, spot reclaim notice
def test_sigterm_checkpoints_exits_and_resumes_exactly(data, reference, tmp_path):
    work = tmp_path / "work"
    proc = start(data, work)
    try:
        wait_for_checkpoint(proc, work)
        os.kill(proc.pid, signal.SIGTERM)  # to local_train, which forwards it below the toolkit as a stop would
        sent = time.monotonic()
        code = proc.wait(timeout=120)
        elapsed = time.monotonic() - sent
    finally:
        kill_group(proc)
    log = open(f"{work}.log").read()
    assert code != 0, log[-3000:]
    assert elapsed < 60, f"took {elapsed:.0f} s to stop; SageMaker allows 120 s"
    assert "received SIGTERM: finishing the current step, then checkpointing and exiting" in log
    failure = read_failure(work).splitlines()[0]
    assert failure.startswith("training stopped by SIGTERM"), failure
    assert "run again with the same checkpoint dir to resume" in failure
    assert "Failure file exists. Skipping creation" in log  # the toolkit kept train.py's line
    assert os.path.exists(work / "model" / "model.pth")  # the best model so far is already usable
    mid = re.search(r"after (\d+) of (\d+) steps; checkpoint (\S+);", failure)
    if mid:  # stopped inside an epoch: a checkpoint of exactly that step
        step, path = int(mid.group(1)), mid.group(3)
        assert os.path.exists(path) and re.search(rf"checkpoint-\d{{4}}-{step:06d}\.pt$", path), failure
        expect = f"resumed from {path}: "
    else:  # the signal came between two epochs: the end-of-epoch checkpoint is the one
        expect = "resumed from "

    result = run_local_train(data, work, HPS)
    assert result.returncode == 0, result.stdout[-3000:]
    assert expect in result.stdout
    if mid:
        assert f", {step} step(s) into epoch" in result.stdout
    assert_same_final_model(work, reference)


# ---------------------------------------------------------------- a checkpoint cut short
def test_truncated_newest_checkpoint_falls_back_to_the_older_one(data, reference, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(reference / "checkpoints", work / "checkpoints")
    newest = work / "checkpoints" / f"checkpoint-{EPOCHS:04d}-000000.pt"
    blob = newest.read_bytes()
    newest.write_bytes(blob[: len(blob) // 3])

    result = run_local_train(data, work, HPS)
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"skipping unreadable checkpoint {newest}" in result.stdout
    older = work / "checkpoints" / f"checkpoint-{EPOCHS - 1:04d}-000000.pt"
    assert f"resumed from {older}: {EPOCHS - 1} epoch(s) done" in result.stdout
    assert epochs_trained(result.stdout) == [EPOCHS]  # not a restart from zero
    assert_same_final_model(work, reference)


# ---------------------------------------------------------------- a stop inside an epoch, made deterministic
@pytest.fixture
def restore_sigterm():
    """train.main installs its SIGTERM handler and sets Pillow's pixel limit in this process: put them back."""
    from PIL import Image

    saved = signal.getsignal(signal.SIGTERM), Image.MAX_IMAGE_PIXELS
    yield
    signal.signal(signal.SIGTERM, saved[0])
    Image.MAX_IMAGE_PIXELS = saved[1]


def test_stop_inside_an_epoch_resumes_from_that_exact_step(data, tmp_path, restore_sigterm):
    """train.main in-process, with the stop requested at step 6 of epoch 2 by a callback on the training loop
    (the signal path is tested above, where the signal lands is up to the machine)."""
    def argv(work):
        return ["--train", os.path.join(data, "train"), "--val", os.path.join(data, "val"),
                "--model-dir", str(work / "model"), "--output-data-dir", str(work / "out" / "data"),
                "--output-dir", str(work / "out"), "--checkpoint-dir", str(work / "ck"),
                "--epochs", "3", "--batch-size", "8", "--patience", "0"]

    ref = tmp_path / "ref"
    assert train.main(argv(ref)) == 0

    class StopAtStep6OfEpoch2(engine.Callback):
        def on_step_end(self, trainer, epoch, step):
            if (epoch, step) == (2, 6):  # as if SIGTERM arrived during the 6th step of epoch 2
                trainer.stop.request("SIGTERM")

    work = tmp_path / "work"
    assert train.main(argv(work), callbacks=[StopAtStep6OfEpoch2()]) == train.SIGTERM_EXIT_CODE
    assert sorted(os.listdir(work / "ck")) == ["checkpoint-0001-000000.pt", "checkpoint-0001-000006.pt"]
    assert (work / "out" / "failure").read_text().startswith(
        "training stopped by SIGTERM during epoch 2 after 6 of 15 steps")
    ck = load(work / "ck" / "checkpoint-0001-000006.pt")
    assert ck["partial"]["seen"] == 6 * 8 and ck["step"] == 6

    assert train.main(argv(work)) == 0
    tight = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(load(work / "model" / "model.pth"), load(ref / "model" / "model.pth"), **tight)
    got, want = load(work / "ck" / "checkpoint-0003-000000.pt"), load(ref / "ck" / "checkpoint-0003-000000.pt")
    torch.testing.assert_close(got["model"], want["model"], **tight)
    assert got["train_state"]["history"][1]["train_loss"] == pytest.approx(
        want["train_state"]["history"][1]["train_loss"], rel=1e-6)


def small_job(data, tmp_path):
    """train.main's arguments for a 2-step-per-epoch job under tmp_path, checkpointing to tmp_path/ck."""
    return ["--train", os.path.join(data, "train"), "--val", os.path.join(data, "val"),
            "--model-dir", str(tmp_path / "model"), "--output-data-dir", str(tmp_path / "out" / "data"),
            "--output-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ck"),
            "--batch-size", "8", "--max-steps-per-epoch", "2"]


def test_checkpoints_of_another_model_are_refused(data, tmp_path, restore_sigterm):
    """A checkpoint dir reused for a different model or image size: a clear line, not a shape error."""
    common = small_job(data, tmp_path) + ["--epochs", "1"]
    assert train.main(common) == 0
    assert train.main(common + ["--image-size", "24"]) == 2
    line = (tmp_path / "out" / "failure").read_text()
    assert line.startswith(f"the checkpoint dir {tmp_path / 'ck'} holds checkpoints of another model")
    assert "use an empty checkpoint dir" in line
    assert checkpoints.load_latest_checkpoint(str(tmp_path / "ck"))[0]["fingerprint"]["image_size"] == 32  # untouched


def test_a_checkpoint_whose_weights_no_longer_fit_is_refused_clearly(data, tmp_path, restore_sigterm, monkeypatch):
    """Same model name, other shapes (a checkpoint written by another version of model_def.py): a clear line."""
    common = small_job(data, tmp_path)
    assert train.main(common + ["--epochs", "1"]) == 0
    before = sorted(os.listdir(tmp_path / "ck"))
    monkeypatch.setitem(model_def.MODELS, "smallcnn",
                        lambda num_classes, in_channels=1, pretrained=False, **options: model_def.SmallCNN(
                            num_classes, in_channels, widths=(8, 16, 32), **options))
    assert train.main(common + ["--epochs", "2"]) == 2
    line = (tmp_path / "out" / "failure").read_text().splitlines()[0]
    assert line.startswith(f"the checkpoint {tmp_path / 'ck'}") and "does not fit this smallcnn model" in line, line
    assert sorted(os.listdir(tmp_path / "ck")) == before  # untouched
