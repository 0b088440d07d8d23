"""The client's long work shows its progress as a person at a terminal expects and as a log wants it: prepare_data
writing images draws a tqdm bar on a terminal and writes no bar into a pipe (medimg.progress)."""
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # real processes


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("npz") / "small.npz"
    arrays = {}
    for split, n in (("train", 30), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return str(path)


def prepare(npz, out, stderr):
    return subprocess.Popen([sys.executable, "-m", "medimg.prepare_data", "--npz", npz, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)


def test_a_terminal_sees_a_bar_per_channel(npz, tmp_path):
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = prepare(npz, tmp_path / "out", secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    stdout, _ = proc.communicate(timeout=120)
    terminal = b"".join(chunks).decode()
    assert proc.returncode == 0, stdout + terminal
    for split, n in (("train", 30), ("val", 8), ("test", 8)):
        assert f"writing {split}: 100%" in terminal and f"{n}/{n}" in terminal, terminal
    assert "image/s" in terminal
    assert "writing" not in stdout and "train: 30 images" in stdout  # the report stays plain on stdout


def test_a_log_gets_no_bar(npz, tmp_path):
    proc = prepare(npz, tmp_path / "out", subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout + stderr
    assert "writing" not in stderr and "%|" not in stderr and "\r" not in stderr  # quick work: no line at all
    assert "train: 30 images" in stdout
