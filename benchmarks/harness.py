"""How make bench measures: every measurement is a child process (``Child``) with its output streamed to a log file
with arrival times, the load average before and after it and its CPU seconds recorded, and its result line parsed.
What a child gets besides this process's environment (code/ on PYTHONPATH, thread settings) is passed in
(``child_environment``), never kept in module globals. ``Bench`` is what every section gets: the command line, the
mode's settings, the logs folder and that environment. Also: the machine (CPU, ISA, memory, load average), the
checkout a run measured (``code_version``), and the command lines of train.py and of benchmarks/probe.py.
"""
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CODE = os.path.join(ROOT, "code")


def log(message):
    print(message, flush=True)


# ==================================================================================================
# The machine
# ==================================================================================================
def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def torch_version():
    """The installed torch's version, without importing it here (measurements run in child processes)."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def machine_info():
    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        model = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
        family = re.search(r"^cpu family\s*:\s*(\d+)$", text, re.MULTILINE)
        cpu_model = re.search(r"^model\s*:\s*(\d+)$", text, re.MULTILINE)
        flags = set((re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE) or [None, ""])[1].split())
        info["cpu"] = model.group(1).strip() if model else platform.processor()
        if family and cpu_model:
            info["cpu"] += f" (family {family.group(1)} model {cpu_model.group(1)})"
        info["isa"] = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                                                       "amx_int8", "amx_tile", "fma"))
    except OSError:
        info["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as fh:
            info["mem_gb"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def code_version(folder):
    """The git commit of the checkout that holds ``folder`` and whether ``folder`` differs from it."""
    def git(*cmd):
        try:
            return subprocess.run(["git", "-C", folder, *cmd], capture_output=True, text=True, timeout=30,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--", ".")
    return {"dir": os.path.abspath(folder), "commit": commit,
            "uncommitted_changes": None if changed is None else bool(changed)}


# ==================================================================================================
# Child processes
# ==================================================================================================
def child_environment(code, threads=0):
    """What every measurement process adds to this one's environment: ``code`` (a code/ folder) on PYTHONPATH, as in
    the container (probe.py, ceiling.py and plain_loop.py import its modules), and with ``threads`` its OMP/MKL
    thread count (0: torch's default, one per core)."""
    env = {"PYTHONPATH": code}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


class Child:
    """A measurement process: stdout streamed to a log file with arrival times, result line parsed. ``env`` is added
    to this process's environment (``child_environment``)."""

    def __init__(self, cmd, log_path, env, cwd=ROOT):
        self.cmd, self.log_path = [str(c) for c in cmd], log_path
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **env)
        self.cwd = cwd
        self.lines = []  # (seconds since launch, text)

    def run(self, prefix, timeout=3600, on_line=None):
        """Run to the end (or until ``on_line`` returns True, then SIGTERM). Returns the dict on the line that
        starts with ``prefix`` (None when ``prefix`` is None)."""
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self.load_before = loadavg()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        with open(self.log_path, "w") as log:
            log.write("$ " + " ".join(self.cmd) + "\n")
            proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    cwd=self.cwd, env=self.env, bufsize=1)
            stopped = False
            try:
                for line in proc.stdout:
                    t = time.perf_counter() - t0
                    self.lines.append((t, line.rstrip("\n")))
                    log.write(line)
                    log.flush()  # follow a long run with tail -f
                    if on_line is not None and not stopped and on_line(t, line):
                        proc.terminate()
                        stopped = True
                    if t > timeout and not stopped:
                        proc.kill()
                        stopped = True
            except BaseException:  # interrupted (Ctrl-C, SIGTERM): leave nothing running
                proc.kill()
                proc.wait()
                raise
            proc.wait()
        self.wall_s = time.perf_counter() - t0
        self.load_after = loadavg()
        # CPU seconds of the process (and any it waited for): less sensitive to a busy machine than wall time
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_s = (done.ru_utime - usage.ru_utime) + (done.ru_stime - usage.ru_stime)
        self.returncode, self.stopped = proc.returncode, stopped
        if prefix is None:
            return None
        for _, line in reversed(self.lines):
            if line.startswith(prefix):
                result = json.loads(line[len(prefix):])
                result["load_before"] = self.load_before
                return result
        raise RuntimeError(f"{' '.join(self.cmd[:3])}... exited {proc.returncode} without a result line; "
                           f"log {self.log_path}:\n{self.tail(30)}")

    def tail(self, lines=20):
        """The last ``lines`` lines of the output, for an error message."""
        return "\n".join(text for _, text in self.lines[-lines:])


@dataclass
class Bench:
    """One make bench run as every section sees it: the parsed command line (``args``), the mode's settings
    (``mode``, run.MODES), the logs folder and what every measurement process adds to the environment (``env``)."""
    args: object
    mode: dict
    logs: str
    env: dict

    def child(self, cmd, log_name):
        """A measurement process logging to ``<logs>/<log_name>.log``."""
        return Child(cmd, os.path.join(self.logs, log_name + ".log"), self.env)

    def train_py(self, work, channels, extra=()):
        """The command line of the train.py under test (``--code``) writing below ``work``: ``channels`` (``--train
        DIR --val DIR ...``), its output folders, no checkpoints, then ``extra``."""
        return [sys.executable, os.path.join(self.args.code, "train.py"), *train_arguments(work, channels, extra)]


# ==================================================================================================
# Command lines
# ==================================================================================================
def fresh_folder(path):
    """``path`` with whatever an earlier run left there removed."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    return path


def train_arguments(work, channels, extra=()):
    """train.py's arguments for a run in ``work``: ``channels``, model/data/output folders below ``work``, no
    checkpoints (``--checkpoint-dir ''``), then ``extra``."""
    return [*channels, "--model-dir", os.path.join(work, "model"), "--output-data-dir", os.path.join(work, "data"),
            "--output-dir", os.path.join(work, "output"), "--checkpoint-dir", "", *extra]


def probe_cmd(data, out, extra=(), profile_epoch=0):
    """benchmarks/probe.py around train.py on the class folders ``data``/{train,val}, writing below ``out``/work."""
    cmd = [sys.executable, os.path.join(HERE, "probe.py")]
    if profile_epoch:
        cmd += ["--profile-epoch", str(profile_epoch)]
    channels = ["--train", os.path.join(data, "train"), "--val", os.path.join(data, "val")]
    return cmd + ["--", *train_arguments(os.path.join(out, "work"), channels, extra)]


def steady(result):
    """Images/s over the epochs after the first (warm-up): total images / total time, from train.py's own figure."""
    rows = [r for r in result["epochs"] if r["epoch"] > 1] or result["epochs"]
    images = sum(r["images"] for r in rows)
    seconds = sum(r["images"] / r["images_per_sec"] for r in rows)
    cpu = sum(r["cpu_s"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    return {"images_per_sec": images / seconds, "epoch_ips": [round(r["images_per_sec"], 1) for r in rows],
            "cpu_util": cpu / wall if wall else None, "images_per_cpu_s": images / cpu if cpu else None}
