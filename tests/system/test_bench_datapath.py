"""benchmarks/sections/datapath.py on tiny settings (--smoke): PNG folders, their shards, train.py's data-ready time
from its own log lines, the data path's rates and a streamed run's memory against its stated bound, reported."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # train.py and probe processes


@pytest.fixture(scope="module")
def datapath_smoke(tmp_path_factory):
    build = tmp_path_factory.mktemp("bench-datapath")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--smoke", "--only", "datapath", "--threads",
           "1", "--build", str(build)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(build / "results.json") as fh:
        return json.load(fh), proc.stdout, build


def test_every_data_path_is_measured_from_the_same_images(datapath_smoke):
    results, _, build = datapath_smoke
    d = results["datapath"]
    assert (d["n"], d["source_px"], d["size"]) == (40, 64, 224)
    assert set(d["ready"]) == {"folders", "shards"} and all(r["ready_s"] > 0 for r in d["ready"].values())
    assert list(d["path"]) == ["plain PNG", "plain JPEG", "train.py folders", "train.py shards",
                               "train.py shards streamed"]
    assert d["path"]["plain PNG"]["images"] == 32 and d["path"]["plain JPEG"]["images"] == 20  # train split; copies
    for kind in ("train.py folders", "train.py shards", "train.py shards streamed"):
        row = d["path"][kind]
        assert row["images"] == 32 and row["n_loaded"] == 40 and row["images_per_cpu_s"] > 0
    assert d["path"]["train.py shards streamed"]["streamed"] and not d["path"]["train.py shards"]["streamed"]
    assert d["stream"]["n"] == 300 and d["stream"]["streamed"] and d["stream"]["bound_mb"] > 0
    assert d["extrapolated"]["shards"]["100000"] == pytest.approx(d["ready"]["shards"]["ready_s"] * 2500)
    with open(os.path.join(build, "datapath-40-shards", "train", "index.json")) as fh:
        assert json.load(fh)["count"] == 32


def test_the_report_prints_the_tables_and_judges_the_targets(datapath_smoke):
    results, stdout, _ = datapath_smoke
    assert "train.py data ready" in stdout and "feeds R50" in stdout and "streamed 300 images" in stdout
    names = [t["name"] for t in results["targets"]]
    assert any(n.startswith("data ready from shards vs folders") for n in names)
    assert any(n.startswith("streamed 300 images") for n in names)


def test_data_ready_is_read_from_train_pys_own_lines():
    from benchmarks.sections import datapath

    lines = [(0, "2026-12-02 17:00:01,250 INFO device=cpu amp=None world_size=1 torch=2.6"),
             (1, "2026-12-02 17:00:02,000 INFO no val channel: ..."),
             (2, "2026-12-02 17:00:03,750 INFO data: train=80 val=24 test=none | ...")]
    assert datapath.ready_seconds(lines) == pytest.approx(2.5)
    assert datapath.ready_seconds([(0, "[127.0.0.1] " + lines[0][1]), (1, "[127.0.0.1] " + lines[2][1])]) == \
        pytest.approx(2.5)
    assert datapath.ready_seconds(lines[:1]) is None
