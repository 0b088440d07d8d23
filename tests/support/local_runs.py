"""Where things are, and scripts/local_train.py runs for the tests: the repository's folders, fast settings for runs
on tiny data sets, a runner for the real toolkit on a fake /opt/ml, and the failure line a run leaves."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CODE = os.path.join(ROOT, "code")  # on sys.path through pyproject.toml's pytest settings, as in the container
SCRIPTS = os.path.join(ROOT, "scripts")

# Fast, deterministic settings for runs on the tiny data set.
FAST_HPS = ["epochs=2", "batch-size=16", "ema=0", "patience=0"]


def run_local_train(data, work, hps=(), extra=(), timeout=300, **popen):
    """Run scripts/local_train.py (the real toolkit) and return the CompletedProcess."""
    cmd = [sys.executable, os.path.join(SCRIPTS, "local_train.py"), "--data", str(data), "--out", str(work)]
    cmd += list(extra)
    if hps:
        cmd += ["--hp", *hps]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **popen)


def read_failure(work):
    path = os.path.join(work, "output", "failure")
    with open(path, encoding="utf-8") as fh:
        return fh.read()
