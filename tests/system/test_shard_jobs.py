"""Shards and each host's own part through the real toolkit (scripts/local_train.py): a job trained from
prepare_data --shards gives the same splits and the same test AUC as from the folders with the same seed; two
emulated hosts on a ShardedByS3Key train channel with unequal parts (5 shards), or of plain class folders, succeed
and train_images_by_host sums to the whole split."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import FAST_HPS, ROOT, make_dataset, run_local_train

pytestmark = pytest.mark.slow  # real processes and trained models

SHARDED = ["--nodes", "2", "--train-distribution", "ShardedByS3Key"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("shards") / "data")  # 80 train, 24 val, 24 test images


def prepare_shards(folder, out, *extra):
    done = subprocess.run([sys.executable, "-m", "medimg.prepare_data", "--folder", str(folder), "--shards", "--out",
                           str(out), *extra], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def metrics_of(work, result):
    assert result.returncode == 0, result.stdout[-4000:]
    with open(os.path.join(work, "output", "data", "metrics.json")) as fh:
        return json.load(fh)


def test_a_job_on_shards_has_the_splits_and_auc_of_the_job_on_the_folders(data, tmp_path):
    shards = prepare_shards(data, tmp_path / "shards")
    hps = [*FAST_HPS, "seed=5"]
    runs = {}
    for name, folder in (("folders", data), ("shards", shards)):
        result = run_local_train(folder, tmp_path / name, hps)
        runs[name] = (metrics_of(tmp_path / name, result), result.stdout)
    (folders, _), (sharded, log) = runs["folders"], runs["shards"]
    assert re.search(r"data: train=80 val=24 test=24 .*from 3 shards", log)
    for split in ("val", "test"):
        assert sharded[f"{split}_predictions"]["images"] == folders[f"{split}_predictions"]["images"]
        assert len(sharded[f"{split}_predictions"]["images"]) == 24
    assert abs(sharded["test"]["auc"] - folders["test"]["auc"]) <= 0.05  # the same pixels, order and seed
    assert sharded["train_images_by_host"] == folders["train_images_by_host"] == {"algo-1": 80}


def test_two_hosts_on_five_shards_sharded_by_key_each_train_on_their_own_part(data, tmp_path):
    shards = prepare_shards(data, tmp_path / "shards", "--shard-size-mb", "0.0225")  # 80 images: 5 shards of 16
    assert len([f for f in os.listdir(shards / "train") if f.startswith("shard-")]) == 5
    result = run_local_train(shards, tmp_path / "work", FAST_HPS, extra=SHARDED, timeout=400)
    by_host = metrics_of(tmp_path / "work", result)["train_images_by_host"]
    assert by_host == {"127.0.0.1": 48, "127.0.0.2": 32}  # 3 and 2 shards: unequal parts, none dropped
    assert "every rank takes the largest part's steps" in result.stdout


def test_two_hosts_on_sharded_class_folders_split_the_images_once(data, tmp_path):
    result = run_local_train(data, tmp_path / "work", [*FAST_HPS, "epochs=1"], extra=SHARDED, timeout=400)
    by_host = metrics_of(tmp_path / "work", result)["train_images_by_host"]
    assert sum(by_host.values()) == 80 and len(by_host) == 2 and min(by_host.values()) > 0
