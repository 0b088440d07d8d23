"""torchrun, as the toolkit's torch_distributed runner starts it: 2 processes on one host, 2 hosts of one
process each (127.0.0.1 and 127.0.0.2), and a rank that dies or hangs.

On CPU the backend is gloo, as NCCL is on GPUs; the code path (process group, DistributedDataParallel,
DistributedSampler.set_epoch, gathered evaluation, rank-0-only saving) is the same. The per-process batch size
is halved so that the global batch (16) equals the single-process run's: the same samples form each global
batch, and the remaining differences (BatchNorm statistics over 8 instead of 16 images, per-rank augmentation
and dropout draws) are what the tolerances allow for.
"""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from medimg import processes
from conftest import CODE, SCRIPTS, make_dataset, read_failure, run_local_train

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

EPOCHS = 3
# lr fixed (auto would give both the same lr, from the global batch, but a lower one that learns less in 3 epochs)
SINGLE = [f"epochs={EPOCHS}", "batch-size=16", "patience=0", "lr=0.002"]
PER_RANK = [f"epochs={EPOCHS}", "batch-size=8", "patience=0", "lr=0.002"]  # x 2 processes = the same global batch


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("dist") / "data")  # 80 train, 24 val, 24 test images


def run_ok(data, work, hps, extra=()):
    result = run_local_train(data, work, hps, extra=extra, timeout=400)
    assert result.returncode == 0, result.stdout[-4000:]
    return result


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    work = tmp_path_factory.mktemp("single")
    return work, run_ok(data, work, SINGLE)


@pytest.fixture(scope="module")
def two_procs(data, tmp_path_factory):
    work = tmp_path_factory.mktemp("nproc2")
    return work, run_ok(data, work, PER_RANK, extra=["--nproc", "2"])


@pytest.fixture(scope="module")
def two_hosts(data, tmp_path_factory):
    work = tmp_path_factory.mktemp("nodes2")
    return work, run_ok(data, work, PER_RANK, extra=["--nodes", "2"])


def metrics(work):
    with open(os.path.join(work, "output", "data", "metrics.json")) as fh:
        return json.load(fh)


def model_files(model_dir):
    return sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []


# ---------------------------------------------------------------- launch and artefacts
def test_two_processes_on_one_host_run_under_torchrun(two_procs):
    work, result = two_procs
    out = result.stdout
    assert "torchrun --nnodes 1 --nproc_per_node 2 train.py" in out  # the toolkit's own command line
    assert "distributed: backend=gloo rank=0/2" in out and "distributed: backend=gloo rank=1/2" in out
    assert "world_size=2" in out
    assert out.count("epoch=1 train_loss=") == 1  # only rank 0 logs the epoch lines
    assert "model.pth" in model_files(work / "model")
    assert sorted(os.listdir(work / "checkpoints")) == ["checkpoint-0002-000000.pt", "checkpoint-0003-000000.pt"]


def test_two_hosts_run_torchrun_with_node_ranks(two_hosts):
    work, result = two_hosts
    out = result.stdout
    for rank in (0, 1):
        assert (f"torchrun --nnodes 2 --nproc_per_node 1 --master_addr 127.0.0.1 --master_port 7777 "
                f"--node_rank {rank} train.py") in out
    assert out.count("epoch=1 train_loss=") == 1
    # one model: host 1 (rank 0) writes it; host 2 writes no model, metrics or checkpoint of its own
    assert "model.pth" in model_files(work / "model")
    second = work / "nodes" / "127.0.0.2"
    assert model_files(second / "model") == []
    assert not os.path.exists(second / "output" / "data" / "metrics.json")
    assert os.path.exists(second / "output" / "success")  # each host's toolkit reports success
    assert len(glob.glob(str(work / "checkpoints" / "checkpoint-*.pt"))) == 2


# ---------------------------------------------------------------- same metrics as one process
def test_distributed_metrics_cover_the_whole_split_and_match_one_process(single, two_procs, two_hosts):
    one = metrics(single[0])
    for work, _ in (two_procs, two_hosts):
        m = metrics(work)
        # gathered over ranks: the whole val and test sets, not rank 0's half
        assert m["val"]["n"] == one["val"]["n"] == 24 and m["test"]["n"] == 24
        assert sum(map(sum, m["test"]["confusion_matrix"])) == 24
        for h, h1 in zip(m["history"], one["history"]):
            assert h["epoch"] == h1["epoch"]
            assert h["val_loss"] == pytest.approx(h1["val_loss"], abs=0.02), (h, h1)
            assert h["val_auc"] == pytest.approx(h1["val_auc"], abs=0.06), (h, h1)
        assert m["history"][-1]["val_auc"] > 0.9  # and it did learn


def test_one_host_or_two_is_the_same_computation(two_procs, two_hosts):
    """Same ranks, seeds and collectives: only the rendezvous differs, so the numbers agree."""
    a, b = metrics(two_procs[0])["history"], metrics(two_hosts[0])["history"]
    for h, g in zip(a, b):
        for key in ("train_loss", "val_loss", "val_auc"):
            assert h[key] == pytest.approx(g[key], rel=1e-5, abs=1e-6), key


def test_streamed_splits_name_every_rank_s_unreadable_images_on_rank_0(tmp_path):
    """A streamed split learns its unreadable images while each rank reads its own shard: metrics.json (written by
    rank 0) names those of every rank, each once, and its intervals and figures cover the readable rest."""
    root = make_dataset(tmp_path / "data", counts={"train": 8, "val": 3, "test": 4})
    broken = ["normal/0.png", "normal/1.png", "pneumonia/2.png", "pneumonia/3.png"]  # indices 0, 1, 6, 7: both ranks
    for name in broken:
        open(os.path.join(root, "test", *name.split("/")), "wb").close()
    open(os.path.join(root, "train", "pneumonia", "5.png"), "wb").close()
    work = tmp_path / "work"
    run_ok(root, work, ["epochs=1", "batch-size=4", "patience=0", "cache-max-gb=0", "max-bad-fraction=0.5",
                        "bootstrap=50"], extra=["--nproc", "2"])
    m = metrics(work)
    assert m["skipped"]["test"] == {"count": 4, "images": broken, "reasons": {"cannot decode": 4}}
    assert m["skipped"]["train"]["images"] == ["pneumonia/5.png"]
    assert m["test"]["n"] == 4 and len(m["test_predictions"]["images"]) == 4
    assert not set(broken) & set(m["test_predictions"]["images"])


# ---------------------------------------------------------------- a rank dies: the job fails, promptly
def worker_pid(root_pid, rank):
    """The train.py process of ``rank`` below ``root_pid``: torchrun gives only its workers RANK."""
    for pid in processes.descendants(root_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue
        if b"train.py" in cmdline and f"RANK={rank}".encode() in environ:
            return pid
    return None


def test_killing_one_rank_fails_the_whole_job_with_a_clear_line(data, tmp_path):
    work = tmp_path / "work"
    log_path = tmp_path / "job.log"
    cmd = [sys.executable, os.path.join(SCRIPTS, "local_train.py"), "--data", data, "--out", str(work),
           "--nproc", "2", "--hp", "epochs=200", "batch-size=8", "patience=0", "dist-timeout=20"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not glob.glob(str(work / "checkpoints" / "checkpoint-*.pt")):  # training has started
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within the timeout"
            time.sleep(0.05)
        victim = worker_pid(proc.pid, 1)
        assert victim, "rank 1's process not found"
        os.kill(victim, signal.SIGKILL)  # as the kernel's OOM killer would
        killed = time.monotonic()
        code = proc.wait(timeout=180)
        elapsed = time.monotonic() - killed
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out = log_path.read_text()
    assert code != 0, out[-3000:]
    assert elapsed < 90, f"the job took {elapsed:.0f} s to fail after a rank died"
    line = read_failure(work).splitlines()[0]
    assert line.startswith("a collective failed on rank 0 of 2: another training process died or stopped "
                           "answering"), line
    assert "run again with the same checkpoint dir" in line
    assert "local_train: job FAILED" in out
    assert glob.glob(str(work / "checkpoints" / "checkpoint-*.pt"))  # the last good epoch survives for a rerun


# ---------------------------------------------------------------- a rank hangs: dist-timeout bounds the wait
HANG = textwrap.dedent("""
    import os, sys, time
    import torch, torch.distributed as dist
    import distributed
    info = distributed.init_distributed(timeout_s=5)
    if info.rank == 1:
        time.sleep(120)  # alive, connected, never joins the collective: a hung rank
    start = time.monotonic()
    try:
        dist.all_reduce(torch.ones(1))
        print("NO TIMEOUT")
    except Exception as exc:
        print("FAILED AFTER %.1f" % (time.monotonic() - start))
        print("LINE " + (distributed.collective_failure(exc) or "none"))
    os._exit(0)
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_hung_rank_fails_the_collective_after_the_timeout(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(HANG)
    env = dict(os.environ, PYTHONPATH=CODE, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               GLOO_SOCKET_IFNAME="lo")
    procs = [subprocess.Popen([sys.executable, str(script)], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
             for r in (0, 1)]
    try:
        out, _ = procs[0].communicate(timeout=120)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    assert "NO TIMEOUT" not in out, out
    waited = float(out.split("FAILED AFTER ")[1].split()[0])
    assert 4 <= waited < 30, out
    assert "LINE a collective failed on rank 0 of 2: another training process died or stopped answering" in out
