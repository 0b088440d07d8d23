#!/usr/bin/env python
"""Run code/train.py locally exactly as the SageMaker PyTorch container runs it: no AWS, no Docker.

    python scripts/local_train.py --data data/pneumonia --out work --hp epochs=3 lr=0.01
    python scripts/local_train.py --data data/pneumonia --out work --nproc 2      # torchrun, 2 CPU processes
    python scripts/local_train.py --data data/pneumonia --out work --nodes 2      # 2 "hosts" on 127.0.0.x

WORK becomes the container's /opt/ml (SAGEMAKER_BASE_DIR): the config files are written as the SDK writes
them (every hyperparameter value JSON-encoded), every top-level folder of DATA becomes a channel under its own
name (DATA/train, DATA/validation, DATA/extra ...: train.py then accepts or refuses each, as in a job), code/ is
staged into WORK/code, and the real sagemaker-training toolkit runs it through
``sagemaker_pytorch_container.training:main``, so train.py sees the container's argv, environment and failure
handling. The exit code is the job's. WORK/checkpoints survives re-runs, so a second run resumes, as a spot
job does. SIGTERM/SIGINT to this script are passed on to train.py (and torchrun and its workers), which finish the
step, checkpoint and exit. The real container does not do that: the toolkit does not pass SageMaker's SIGTERM on
to the script (aws/sagemaker-training-toolkit issues #125, #173), so there the end-of-epoch checkpoints and the
best model written whenever validation improves are what a stop or a spot reclaim leaves (README, "Reliability").
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

from medimg.container import CODE_DIR, layout
TRAINING_MODULE = "sagemaker_pytorch_container.training:main"
MASTER_PORT = 7777  # fixed by the toolkit's torch_distributed runner


def parse_hp(pairs):
    """``key=value`` pairs -> dict; values are parsed as JSON when they are JSON (3, 0.1, true), else strings."""
    hps = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"local_train: --hp takes key=value pairs, got {pair!r}")
        try:
            hps[key] = json.loads(value)
        except json.JSONDecodeError:
            hps[key] = value
    return hps


def encode_hyperparameters(hps):
    """As the SageMaker Python SDK writes hyperparameters.json: every value a JSON-encoded string."""
    return {str(k): json.dumps(v) for k, v in hps.items()}


def host_names(nodes):
    """Loopback addresses stand in for algo-1..N, so every host name resolves without DNS."""
    return ["algo-1"] if nodes == 1 else [f"127.0.0.{i + 1}" for i in range(nodes)]


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)


def data_channels(data):
    """Every visible top-level folder of ``data``: each becomes a channel under its own name, as fit() would (and a
    file named like a split, e.g. a zip uploaded as ``train``, so that train.py can say what is wrong with it)."""
    if not os.path.isdir(data):
        return []
    return sorted(e for e in os.listdir(data) if not e.startswith(".") and (
        os.path.isdir(os.path.join(data, e)) or layout.channel_role(e) in layout.CHANNEL_ROLES))


def stage_base_dir(base, data, channels, hps, hosts, host):
    """Lay out one host's /opt/ml: config files, channels (links to DATA/<channel>), code, output."""
    config = os.path.join(base, "input", "config")
    write_json(os.path.join(config, "hyperparameters.json"), encode_hyperparameters(hps))
    write_json(os.path.join(config, "inputdataconfig.json"), {
        ch: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for ch in channels})
    write_json(os.path.join(config, "resourceconfig.json"), {
        "current_host": host, "current_instance_type": "local", "current_group_name": "homogeneousCluster",
        "hosts": hosts, "network_interface_name": "lo",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": hosts}]})
    data_dir = os.path.join(base, "input", "data")
    shutil.rmtree(data_dir, ignore_errors=True)
    os.makedirs(data_dir)
    for ch in channels:
        os.symlink(os.path.abspath(os.path.join(data, ch)), os.path.join(data_dir, ch))
    code = os.path.join(base, "code")  # the toolkit copies code only into an empty folder: refresh it
    shutil.rmtree(code, ignore_errors=True)
    shutil.copytree(CODE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    output = os.path.join(base, "output")
    os.makedirs(os.path.join(output, "data"), exist_ok=True)
    for stale in ("success", "failure"):  # the toolkit keeps an existing failure file: clear the last run's
        if os.path.exists(os.path.join(output, stale)):
            os.unlink(os.path.join(output, stale))
    os.makedirs(os.path.join(base, "model"), exist_ok=True)
    return code


def toolkit_env(base, work, nproc_or_nodes):
    env = dict(os.environ)
    env.update({
        "SAGEMAKER_BASE_DIR": base,
        "SAGEMAKER_TRAINING_MODULE": TRAINING_MODULE,
        "SM_STUDIO_LOCAL_MODE": "true",  # else the toolkit retries DNS lookups of the hosts for 15 minutes
        "PIP_NO_INDEX": "1",  # keep the toolkit's requirements step offline
        "SM_CHECKPOINT_DIR": os.path.join(work, "checkpoints"),  # stands in for /opt/ml/checkpoints
        "TRAINING_JOB_NAME": "local-train",
        "PYTHONUNBUFFERED": "1",
        # the toolkit runs a bare `torchrun`: find the one of this interpreter (a venv is rarely activated)
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)]),
    })
    if nproc_or_nodes > 1:
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo on loopback, like the hosts
        # every process of every emulated host shares this machine: split its cores between them (torchrun does
        # this only for several processes per node), so 1 host x 2 processes and 2 hosts x 1 compute alike
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_or_nodes)))
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


def forward_signals(toolkit_pids):
    """SIGTERM/SIGINT go to everything below the toolkit processes (train.py, torchrun and its workers); the
    toolkit itself, PID 1 in the container, outlives the signal and reports how the script ended."""

    def handler(signum, frame):
        for toolkit in toolkit_pids:
            for pid in descendants(toolkit):
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder whose subfolders are the channels: train/ (and val/, test/)")
    p.add_argument("--out", required=True, help="work folder: becomes the container's /opt/ml")
    p.add_argument("--label-dict", help="class names (label_dict.json): sent as the label-dict hyperparameter (its "
                                        "absolute path); default: the train channel's own, else code/label_dict.json")
    p.add_argument("--hp", nargs="+", default=[], metavar="KEY=VALUE", help="hyperparameters, e.g. epochs=3 lr=0.01")
    p.add_argument("--nproc", type=int, default=1, help="processes per host, under torchrun (torch_distributed)")
    p.add_argument("--nodes", type=int, default=1, help="hosts, each a toolkit process on its own 127.0.0.x")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    data, work = os.path.abspath(args.data), os.path.abspath(args.out)
    channels = data_channels(data)
    if not channels:
        print(f"local_train: warning: {data} has no channel folders; the job will fail as SageMaker's would",
              file=sys.stderr)
    if args.nproc < 1 or args.nodes < 1:
        raise SystemExit("local_train: --nproc and --nodes must be at least 1")
    hps = parse_hp(args.hp)
    if args.label_dict:
        if "label-dict" in hps:
            raise SystemExit("local_train: give the label dict once: --label-dict or --hp label-dict=..., not both")
        hps["label-dict"] = os.path.abspath(args.label_dict)
    hps.update({"sagemaker_program": "train.py", "sagemaker_container_log_level": 20,
                "sagemaker_job_name": "local-train", "sagemaker_region": "us-east-1"})
    distributed = args.nproc > 1 or args.nodes > 1
    if distributed:
        hps.update({"sagemaker_torch_distributed_enabled": True,
                    "sagemaker_mpi_num_of_processes_per_host": args.nproc})
    hosts = host_names(args.nodes)
    os.makedirs(os.path.join(work, "checkpoints"), exist_ok=True)
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    procs, threads = [], []
    for i, host in enumerate(hosts):
        base = work if i == 0 else os.path.join(work, "nodes", host)
        code = stage_base_dir(base, data, channels, dict(hps), hosts, host)
        job_hps = dict(hps, sagemaker_submit_directory=code)
        write_json(os.path.join(base, "input", "config", "hyperparameters.json"), encode_hyperparameters(job_hps))
        log_path = os.path.join(work, "logs", "train.log" if i == 0 else f"train-{host}.log")
        open(log_path, "w").close()
        proc = subprocess.Popen([sys.executable, "-c", "from sagemaker_training.cli.train import main; main()"],
                                env=toolkit_env(base, work, args.nproc * args.nodes), cwd=base,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        procs.append(proc)
        t = threading.Thread(target=tee, args=(proc.stdout, log_path, f"[{host}] " if args.nodes > 1 else ""))
        t.start()
        threads.append(t)
    forward_signals([p.pid for p in procs])
    codes = [p.wait() for p in procs]
    for t in threads:
        t.join()
    code = next((c for c in codes if c), 0)
    print()
    print(f"local_train: job {'succeeded' if code == 0 else f'FAILED (exit {code})'}")
    failure = os.path.join(work, "output", "failure")
    if code and os.path.exists(failure):
        with open(failure, encoding="utf-8", errors="replace") as fh:
            print(f"  failure reason: {fh.readline().strip()}")
    print(f"  model:       {os.path.join(work, 'model')}")
    print(f"  metrics:     {os.path.join(work, 'output', 'data', 'metrics.json')}")
    print(f"  checkpoints: {os.path.join(work, 'checkpoints')}")
    print(f"  log:         {os.path.join(work, 'logs', 'train.log')}")
    return code


if __name__ == "__main__":
    sys.exit(main())
