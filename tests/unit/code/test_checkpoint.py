"""Checkpoint I/O: atomic, the newest two kept, broken files skipped, weights_only loads."""
import os

import pytest
import torch

import checkpoints
import utils

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6


def state(epoch):
    return {"epoch": epoch, "step": 0, "model": {"w": torch.full((3,), float(epoch))}, "rng": utils.rng_state()}


def test_round_trip_keeps_last_two(tmp_path):
    for epoch in range(1, 5):
        checkpoints.save_checkpoint(state(epoch), str(tmp_path), epoch)
    names = sorted(os.listdir(tmp_path))
    assert names == ["checkpoint-0003-000000.pt", "checkpoint-0004-000000.pt"]
    loaded, path = checkpoints.load_latest_checkpoint(str(tmp_path))
    assert loaded["epoch"] == 4 and path.endswith("checkpoint-0004-000000.pt")
    assert torch.equal(loaded["model"]["w"], torch.full((3,), 4.0))


def test_mid_epoch_checkpoint_sorts_after_its_epoch(tmp_path):
    checkpoints.save_checkpoint(state(2), str(tmp_path), 2, 0)
    checkpoints.save_checkpoint(state(2), str(tmp_path), 2, 7)
    assert os.path.basename(checkpoints.list_checkpoints(str(tmp_path))[0]) == "checkpoint-0002-000007.pt"


def test_truncated_newest_falls_back_to_the_older_one(tmp_path, caplog):
    checkpoints.save_checkpoint(state(1), str(tmp_path), 1)
    newest = checkpoints.save_checkpoint(state(2), str(tmp_path), 2)
    data = open(newest, "rb").read()
    open(newest, "wb").write(data[: len(data) // 3])
    loaded, path = checkpoints.load_latest_checkpoint(str(tmp_path))
    assert loaded["epoch"] == 1
    assert "skipping unreadable checkpoint" in caplog.text


def test_no_checkpoint_gives_none(tmp_path):
    assert checkpoints.load_latest_checkpoint(str(tmp_path)) is None
    assert checkpoints.load_latest_checkpoint("") is None


def test_rng_state_round_trips_through_weights_only(tmp_path):
    utils.seed_everything(3)
    checkpoints.save_checkpoint(state(1), str(tmp_path), 1)
    expected = torch.rand(4)
    loaded, _ = checkpoints.load_latest_checkpoint(str(tmp_path))
    torch.rand(10)  # move the generators on
    utils.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(4), expected)


def test_no_temp_files_left_behind(tmp_path):
    checkpoints.save_checkpoint(state(1), str(tmp_path), 1)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_atomic_files_are_readable_by_others(tmp_path):
    utils.atomic_write_json(str(tmp_path / "a.json"), {"x": 1})
    path = checkpoints.save_checkpoint(state(1), str(tmp_path), 1)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o644
    assert os.stat(path).st_mode & 0o777 == 0o644
