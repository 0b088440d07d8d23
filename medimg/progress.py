"""Progress of long client work (hashing and uploading a data folder, downloading a prefix or a job's artefacts,
writing many image files or shards): a tqdm bar for a person watching, plain lines in a log.

    from medimg.progress import progress

    for path in progress(paths, total=len(paths), desc="upload", unit="file"):
        ...
    with progress(total=size, desc="model.tar.gz", unit="B") as bar:   # bytes, updated from boto3's threads
        s3.download_file(bucket, key, local, Callback=bar.update)

Where the output goes decides the form (``mode``), by the rule train.py's own bar follows (code/engine.py's
``ProgressBar.wanted``: a terminal gets a bar, a log does not), with notebooks added:

- in a Jupyter kernel: a notebook widget (``tqdm.notebook``) when ipywidgets is installed, else tqdm's text bar
  on the cell's stderr (the notebook redraws it in place);
- on a terminal (``file.isatty()``): tqdm's text bar on ``file`` (default stderr);
- anything else (a job's log, a pipe, a file): plain lines on ``file``, one every ``interval`` seconds while the
  work goes on and a last one when it ends or stops; work that ends within ``interval`` writes nothing (the
  caller's own summary line says what was done).

Updates are thread-safe (boto3's transfer callbacks come from several threads).
"""
import sys
import threading
import time

MODES = ("notebook", "terminal", "lines")


def in_notebook():
    """True inside a Jupyter kernel (tqdm.autonotebook's test: the kernel's shell is loaded)."""
    return "ipykernel.zmqshell" in sys.modules


def mode(file=None):
    """"notebook", "terminal" or "lines": how progress is shown on ``file`` (default stderr)."""
    if file is None and in_notebook():
        return "notebook"
    isatty = getattr(file or sys.stderr, "isatty", None)
    return "terminal" if isatty is not None and isatty() else "lines"


def _amount(n, unit):
    """``n`` as a log line writes it: 1,234; bytes as KB, MB, GB."""
    if unit != "B":
        return f"{n:,}"
    for scale, name in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")):
        if n >= scale:
            return f"{n / scale:.1f} {name}"
    return f"{n} B"


class Progress:
    """Counts work done (``update(n)``, or iterating over the wrapped ``iterable``) and shows it as ``mode`` says.
    A context manager; ``close()`` ends the bar (or writes the last line) once."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", file=None, interval=30.0):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.file, self.interval, self.mode = file, float(interval), mode(file)
        self.n, self.lines, self.closed = 0, 0, False
        self.started = self.last = time.monotonic()
        self._lock = threading.Lock()
        self._bar = None if self.mode == "lines" else self._tqdm()

    def _tqdm(self):
        bytes_ = {"unit_scale": True, "unit_divisor": 1024} if self.unit == "B" else {}
        if self.mode == "notebook":
            try:
                import ipywidgets  # noqa: F401 - tqdm.notebook's widgets
                from tqdm.notebook import tqdm
                return tqdm(total=self.total, desc=self.desc, unit=self.unit, **bytes_)
            except ImportError:
                pass  # no widgets: the text bar, which the notebook redraws in place
        from tqdm import tqdm
        return tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.file or sys.stderr,
                    dynamic_ncols=True, **bytes_)

    def update(self, n=1):
        with self._lock:
            self.n += n
            if self._bar is not None:
                self._bar.update(n)
            elif time.monotonic() - self.last >= self.interval:
                self._line()

    def _line(self, end=None):
        unit = "" if self.unit == "B" else " " + self.unit + ("" if self.unit.endswith("s") else "s")
        done = _amount(self.n, self.unit) + (f"/{_amount(self.total, self.unit)}" if self.total else "") + unit
        if self.total:
            done += f" ({100 * self.n / self.total:.0f}%)"
        text = f"{self.desc}: {done}, {time.monotonic() - self.started:.0f} s" + (f", {end}" if end else "")
        stream = self.file or sys.stderr
        stream.write(text + "\n")
        stream.flush()
        self.lines, self.last = self.lines + 1, time.monotonic()

    def close(self, stopped=False):
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._bar is not None:
                self._bar.close()
            elif self.lines:  # the work was long enough to be reported: say that it ended
                self._line("stopped" if stopped else "done")

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        except BaseException:
            self.close(stopped=True)
            raise
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        self.close(stopped=exc_type is not None)


def progress(iterable=None, *, total=None, desc="", unit="it", file=None, interval=30.0):
    """A ``Progress`` over ``iterable`` (iterate over it) or over ``total`` units (call ``update(n)``; use it as a
    context manager). ``unit="B"`` counts bytes (KB, MB, GB). ``file``: where it is shown (default stderr, or the
    notebook); ``interval``: seconds between plain lines in a log."""
    return Progress(iterable, total=total, desc=desc, unit=unit, file=file, interval=interval)
