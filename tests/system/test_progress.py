"""train.py's progress bar: tqdm on a terminal (a person running it locally), plain epoch lines in a job log."""
import fcntl
import os
import pty
import struct
import termios
import subprocess
import sys

import pytest

from conftest import CODE, make_dataset

pytestmark = pytest.mark.slow  # real train.py processes


def train_cmd(data, work):
    return [sys.executable, os.path.join(CODE, "train.py"), "--epochs", "2", "--batch-size", "8",
            "--train", os.path.join(data, "train"), "--val", os.path.join(data, "val"),
            "--model-dir", str(work / "model"), "--output-data-dir", str(work / "out"),
            "--output-dir", str(work / "output"), "--checkpoint-dir", ""]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("progress") / "data", counts={"train": 16, "val": 4})


def read_all(fd):
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_a_bar_per_epoch(data, tmp_path):
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns, as a terminal
    proc = subprocess.Popen(train_cmd(data, tmp_path), stdout=subprocess.PIPE, stderr=secondary, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    os.close(secondary)
    terminal = read_all(primary)
    stdout, _ = proc.communicate(timeout=300)
    os.close(primary)
    assert proc.returncode == 0, stdout[-3000:] + terminal[-3000:]
    # one bar per epoch over its 4 steps (tqdm redraws at most every 0.1 s and clears the bar when the epoch ends)
    assert "epoch 1:" in terminal and "epoch 2:" in terminal and "/4 [" in terminal and "step/s" in terminal
    assert "epoch 1:" not in stdout  # the log keeps its plain lines; the bar never enters it
    assert sum("INFO epoch=" in line for line in stdout.splitlines()) == 2


def test_a_log_that_is_not_a_terminal_gets_no_bar(data, tmp_path):
    proc = subprocess.run(train_cmd(data, tmp_path), capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "epoch 1:" not in proc.stderr + proc.stdout and "step/s" not in proc.stderr + proc.stdout
