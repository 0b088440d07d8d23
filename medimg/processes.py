"""The processes of a local run: their environment (``process_env``), one launcher process per host with its
output teed to WORK/logs and stdout (``run_hosts``), the process tree under them (``descendants``,
``command_line``: Linux /proc) and SIGTERM/SIGINT passed on to the script's processes (``forward_signals``). Which
of the descendants are the script's is the launcher's to say (medimg.launch_v2, medimg.launch_v3).
"""
import os
import signal
import subprocess
import sys
import threading


def process_env(python, processes):
    """This environment for the job's processes: ``python``'s folder first on PATH (the launchers run a bare
    ``python3``/``pip3``/``torchrun``; a venv is rarely activated), unbuffered output, pip offline, and for several
    processes gloo on loopback with this machine's cores split between them."""
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", "PIP_NO_INDEX": "1",  # keep any requirements step offline
                "PATH": os.pathsep.join([os.path.dirname(python), os.environ.get("PATH", os.defpath)])})
    if processes > 1:
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo on loopback, like the hosts
        # every process of every emulated host shares this machine: split its cores between them (torchrun does
        # this only for several processes per node), so 1 host x 2 processes and 2 hosts x 1 compute alike
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    return env


def descendants(pid):
    """All descendant pids of ``pid`` (Linux /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def command_line(pid):
    """The process's command line as one string ('' when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def forward_signals(targets):
    """On SIGTERM/SIGINT, send SIGTERM to the pids ``targets()`` lists (the script's processes); the launcher, PID 1
    in the container, outlives the signal and reports how the script ended."""

    def handler(signum, frame):
        for pid in targets():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def tee(stream, log_path, prefix):
    with open(log_path, "a", encoding="utf-8") as log:
        for line in iter(stream.readline, ""):
            log.write(line)
            log.flush()
            sys.stdout.write(prefix + line)
            sys.stdout.flush()


def run_hosts(commands, work, nodes):
    """Start one process per host (``[(host, argv, env, cwd)]``), tee each to WORK/logs and stdout; returns the
    Popen objects and their tee threads."""
    procs, threads = [], []
    for i, (host, argv, env, cwd) in enumerate(commands):
        log_path = os.path.join(work, "logs", "train.log" if i == 0 else f"train-{host}.log")
        open(log_path, "w").close()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        procs.append(proc)
        t = threading.Thread(target=tee, args=(proc.stdout, log_path, f"[{host}] " if nodes > 1 else ""))
        t.start()
        threads.append(t)
    return procs, threads
