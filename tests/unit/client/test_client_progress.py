"""medimg.progress: a tqdm bar on a terminal or in a notebook, plain lines in a log (not a TTY, not a notebook)."""
import fcntl
import io
import os
import pty
import struct
import sys
import termios
import threading
import types

import pytest

from medimg import progress as progress_module
from medimg.progress import mode, progress


def test_a_log_gets_plain_lines_with_counts_and_the_end():
    log = io.StringIO()
    assert mode(log) == "lines"
    assert list(progress(["a", "b", "c", "d"], desc="uploading d", unit="file", file=log, interval=0)) == [
        "a", "b", "c", "d"]
    lines = [line.rsplit(",", 1)[0] if not line.endswith("done") else line for line in log.getvalue().splitlines()]
    assert lines[:4] == ["uploading d: 1/4 files (25%)", "uploading d: 2/4 files (50%)",
                         "uploading d: 3/4 files (75%)", "uploading d: 4/4 files (100%)"]
    assert lines[4].startswith("uploading d: 4/4 files (100%), ") and lines[4].endswith(" s, done")
    assert "\r" not in log.getvalue() and "|" not in log.getvalue()  # no bar in a log


def test_short_work_writes_no_line_in_a_log():
    """Within ``interval`` seconds nothing is written: the caller's own line says what was done."""
    log = io.StringIO()
    for _ in progress(range(1000), desc="hashing", unit="file", file=log):
        pass
    assert log.getvalue() == ""


def test_bytes_unknown_totals_and_a_stop_are_said():
    log = io.StringIO()
    with progress(total=3 << 20, desc="model.tar.gz", unit="B", file=log, interval=0) as bar:
        bar.update(1 << 20)
        bar.update(2 << 20)
    assert log.getvalue().splitlines()[1].startswith("model.tar.gz: 3.0 MB/3.0 MB (100%), ")
    log = io.StringIO()
    with pytest.raises(RuntimeError):
        for i in progress(iter(range(10)), desc="download", unit="file", file=log, interval=0):
            if i == 2:
                raise RuntimeError("network")
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("download: 1 files, ") and lines[-1].startswith("download: 2 files, ")
    assert lines[-1].endswith(", stopped")


def test_updates_from_many_threads_are_all_counted():
    """boto3's transfer callbacks arrive from several threads."""
    bar = progress(total=8000, desc="x", unit="B", file=io.StringIO(), interval=3600)

    def work():
        for _ in range(1000):
            bar.update(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    assert bar.n == 8000


def test_a_terminal_gets_a_tqdm_bar():
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns, as a terminal
    terminal = os.fdopen(secondary, "w")
    assert mode(terminal) == "terminal"
    for _ in progress(range(5), desc="uploading d", unit="file", file=terminal):
        pass
    terminal.close()
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    shown = b"".join(chunks).decode()
    assert "uploading d: 100%" in shown and "5/5" in shown and "file/s" in shown


def test_a_notebook_gets_a_widget_bar_when_ipywidgets_is_there(monkeypatch):
    made = []

    class WidgetBar:
        def __init__(self, **kwargs):
            made.append(kwargs)
            self.n = 0

        def update(self, n):
            self.n += n

        def close(self):
            made.append("closed")

    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))
    monkeypatch.setitem(sys.modules, "tqdm.notebook", types.SimpleNamespace(tqdm=WidgetBar))
    assert mode() == "notebook"
    for _ in progress(range(3), desc="uploading d", unit="file"):
        pass
    assert made == [{"total": 3, "desc": "uploading d", "unit": "file"}, "closed"]


def test_a_notebook_without_ipywidgets_gets_the_text_bar_on_the_cells_stderr(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    assert progress_module.in_notebook() and mode() == "notebook"
    for _ in progress(range(3), desc="uploading d", unit="file"):
        pass
    err = capsys.readouterr().err
    assert "uploading d: 100%" in err and "3/3" in err  # tqdm's text bar, which a notebook redraws in place
