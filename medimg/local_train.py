#!/usr/bin/env python
"""Run code/train.py locally exactly as the SageMaker PyTorch container runs it: no AWS, no Docker.

    python scripts/local_train.py --data data/pneumonia --out work --hp epochs=3 lr=0.01
    python scripts/local_train.py --data data/pneumonia --out work --nproc 2      # torchrun, 2 CPU processes
    python scripts/local_train.py --data data/pneumonia --out work --nodes 2      # 2 "hosts" on 127.0.0.x
    .venv-sdk3/bin/python scripts/local_train.py --launcher v3 --data data/pneumonia --out work

WORK becomes the container's /opt/ml and every top-level folder of DATA becomes a channel under its own name
(DATA/train, DATA/validation, DATA/extra ...: train.py then accepts or refuses each, as in a job). Two launchers,
as the two SageMaker Python SDK majors start the job:

``--launcher v2`` (default; SDK v2's Estimator): the config files are written as the SDK writes them (every
hyperparameter value JSON-encoded), code/ is staged into WORK/code, and the real sagemaker-training toolkit runs it
through ``sagemaker_pytorch_container.training:main`` with SAGEMAKER_BASE_DIR=WORK, so train.py sees the
container's argv (sorted ``--key value``, ``True``/``False``), environment and failure handling.
SM_CHECKPOINT_DIR=WORK/checkpoints stands in for /opt/ml/checkpoints.

``--launcher v3`` (SDK v3's ModelTrainer; run with an interpreter that has SDK v3, e.g. .venv-sdk3/bin/python):
no toolkit runs. The installed SDK builds the job itself, in ModelTrainer's local-container mode (no AWS, no
Docker; ``ModelTrainer._create_training_job_args``): the hyperparameters as it sends them (``true``/``false``,
strings bare, in the order given), the container entrypoint, and its drivers folder (``sm_train.sh`` from the
SDK's template, ``sourcecode.json``, ``distributed.json``, ``basic_script_driver.py`` / ``torchrun_driver.py``
with ``Torchrun(process_count_per_node=--nproc)``). That folder becomes the ``sm_drivers`` channel, code/ the
``code`` channel, the data folders the data channels; the platform's three config files are written; and the
container's entrypoint (``bash -c "... sm_drivers/sm_train.sh"``) runs. The drivers hard-code /opt/ml (no
SAGEMAKER_BASE_DIR), so the staged copy is redirected: every ``/opt/ml`` in the files of WORK/input/data/sm_drivers
(sm_train.sh, scripts/environment.py, common/utils.py) and in the entrypoint is replaced by WORK
(``redirect_drivers``); with --nodes, ``SM_MASTER_ADDR = "algo-1"`` in environment.py becomes the first host's
127.0.0.x address, as the hosts are loopback addresses here. v3 sets no SM_CHECKPOINT_DIR and train.py uses
/opt/ml/checkpoints when that folder exists, which SageMaker creates for a job with a checkpoint location; here
the run gets ``checkpoint-dir=WORK/checkpoints`` as its last hyperparameter instead (unless --hp gives one), a
hyperparameter train.py reads under any launcher. The exit code is the script's own (v3 keeps it).

``--input-mode File|FastFile`` and ``--train-distribution FullyReplicated|ShardedByS3Key`` are recorded in each
host's inputdataconfig.json as the platform writes them (train.py reads them through SM_INPUT_DATA_CONFIG); with
``--nodes N`` and ShardedByS3Key each host's train channel is its part of the files, sorted by key and dealt round
robin (medimg.opt_ml.host_part), staged as links under WORK/sharded/<host>/. FastFile's files are the same local
files here.

A distributed job (--nproc or --nodes above 1) holds torchrun's fixed port for its life (``master_port``): a
second one on the same machine waits for it instead of joining its rendezvous.

The exit code is the job's. WORK/checkpoints survives re-runs, so a second run resumes, as a spot job does.
SIGTERM/SIGINT to this script are passed on to train.py (and torchrun and its workers), which finish the step,
checkpoint and exit. The real container does not do that: the toolkit does not pass SageMaker's SIGTERM on to the
script (aws/sagemaker-training-toolkit issues #125, #173), so there the end-of-epoch checkpoints and the best model
written whenever validation improves are what a stop or a spot reclaim leaves (README, "Reliability").

This module is the command line; the parts live in medimg.opt_ml (a host's /opt/ml: config files, channels,
output folders), medimg.launch_v2 (the toolkit), medimg.launch_v3 (SDK v3's drivers) and medimg.processes (one
process per host, the process tree, signals).
"""
import argparse
import contextlib
import fcntl
import json
import os
import sys
import tempfile

from medimg import launch_v2, launch_v3, opt_ml, processes

LAUNCHERS = {"v2": launch_v2, "v3": launch_v3}  # --launcher: the module that stages the job and its commands


def parse_hp(pairs):
    """``key=value`` pairs -> dict; values are parsed as JSON when they are JSON (3, 0.1, true), else strings. A key
    given again overrides the earlier value, as a repeated command-line flag does (``--hp epochs=2 ... epochs=3``)."""
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


def hp_pairs(hps):
    """The inverse of ``parse_hp``: ``["key=value", ...]`` (strings as they are, anything else as JSON)."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in hps.items()]


def smoke_test_hyperparameters(hyperparameters, epochs=1):
    """The notebook's hyperparameters as ``--hp`` pairs for this script, shortened to ``epochs`` epoch(s) without
    compilation: a quick check that the settings and the data work together."""
    return hp_pairs(dict(hyperparameters, epochs=epochs, compile=False))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder whose subfolders are the channels: train/ (and val/, test/)")
    p.add_argument("--out", required=True, help="work folder: becomes the container's /opt/ml")
    p.add_argument("--label-dict", help="class names (label_dict.json): sent as the label-dict hyperparameter (its "
                                        "absolute path); default: the train channel's own, else code/label_dict.json")
    p.add_argument("--hp", nargs="+", default=[], metavar="KEY=VALUE", help="hyperparameters, e.g. epochs=3 lr=0.01")
    p.add_argument("--nproc", type=int, default=1, help="processes per host, under torchrun (torch_distributed)")
    p.add_argument("--nodes", type=int, default=1, help="hosts, each a launcher process on its own 127.0.0.x")
    p.add_argument("--launcher", choices=tuple(LAUNCHERS), default="v2",
                   help="v2: the sagemaker-training toolkit (SDK v2's Estimator); v3: SDK v3 ModelTrainer's drivers "
                        "from the installed SDK (needs sagemaker>=3 in this interpreter)")
    p.add_argument("--input-mode", choices=opt_ml.INPUT_MODES, default="File",
                   help="the data channels' TrainingInputMode in inputdataconfig.json (FastFile reads the same local "
                        "files here)")
    p.add_argument("--train-distribution", choices=opt_ml.DISTRIBUTIONS, default="FullyReplicated",
                   help="the train channel's S3DistributionType; ShardedByS3Key with --nodes N gives each host its "
                        "part of the train channel's files (sorted by key, dealt round robin: medimg.opt_ml.host_part)")
    return p.parse_args(argv)


@contextlib.contextmanager
def master_port(distributed):
    """Hold this machine's torchrun port for a distributed job's life. Both launchers fix it (opt_ml.MASTER_PORT),
    as every SageMaker host runs one job; two local distributed jobs at once would meet at one rendezvous and hang,
    so a second one waits here, saying so, until the first ends (the lock goes with the process, even when killed)."""
    if not distributed:
        yield
        return
    path = os.path.join(tempfile.gettempdir(), f"medimg-local-train-port-{opt_ml.MASTER_PORT}.lock")
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"local_train: waiting for another local distributed job to end: torchrun's port "
                  f"{opt_ml.MASTER_PORT} is fixed by the launchers ({path})", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def report(work, code):
    print()
    print(f"local_train: job {'succeeded' if code == 0 else f'FAILED (exit {code})'}")
    failure = os.path.join(work, "output", "failure")
    if code and os.path.exists(failure):
        with open(failure, encoding="utf-8", errors="replace") as fh:
            print(f"  failure reason: {fh.readline().strip()}")
    places = [("model", os.path.join(work, "model")),
              ("metrics", os.path.join(work, "output", "data", "metrics.json")),
              ("checkpoints", os.path.join(work, "checkpoints")),
              ("log", os.path.join(work, "logs", "train.log"))]
    for what, path in places:  # only what the job left (a failed job may leave checkpoints to resume from)
        if os.path.isfile(path) or (os.path.isdir(path) and os.listdir(path)):
            print(f"  {what + ':':12} {path}")


def main(argv=None):
    args = parse_args(argv)
    data, work = os.path.abspath(args.data), os.path.abspath(args.out)
    channels = opt_ml.data_channels(data)
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
    os.makedirs(os.path.join(work, "checkpoints"), exist_ok=True)
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    launcher = LAUNCHERS[args.launcher]
    access = opt_ml.channel_access(channels, args.input_mode, args.train_distribution)
    with master_port(args.nproc * args.nodes > 1):
        commands, script_processes = launcher.stage_job(work, data, channels, hps, args.nproc, args.nodes, access)
        procs, threads = processes.run_hosts(commands, work, args.nodes)
        processes.forward_signals(lambda: script_processes([p.pid for p in procs]))
        codes = [p.wait() for p in procs]
        for t in threads:
            t.join()
    code = next((c for c in codes if c), 0)
    report(work, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
