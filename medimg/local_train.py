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

The exit code is the job's. WORK/checkpoints survives re-runs, so a second run resumes, as a spot job does.
SIGTERM/SIGINT to this script are passed on to train.py (and torchrun and its workers), which finish the step,
checkpoint and exit. The real container does not do that: the toolkit does not pass SageMaker's SIGTERM on to the
script (aws/sagemaker-training-toolkit issues #125, #173), so there the end-of-epoch checkpoints and the best model
written whenever validation improves are what a stop or a spot reclaim leaves (README, "Reliability").
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

from medimg.container import CODE_DIR, layout

TRAINING_MODULE = "sagemaker_pytorch_container.training:main"
MASTER_PORT = 7777  # fixed by the toolkit's torch_distributed runner and by SDK v3's environment.py
LAUNCHERS = ("v2", "v3")
OPT_ML = "/opt/ml"  # where the container's files are; SDK v3's drivers name it literally
OPT_ML_PATH = re.compile(r"/opt/ml(?=[/\"'\s]|$)")  # /opt/ml itself or a path below it, not /opt/mlflow
V3_MASTER_ADDR = re.compile(r'^SM_MASTER_ADDR = "algo-1"$', re.MULTILINE)  # scripts/environment.py
V3_DRIVERS_DIR = "/sm_drivers/distributed_drivers/"  # in the command line of the driver that runs train.py
JOB_NAME = "local-train"


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


def encode_hyperparameters(hps):
    """As the SageMaker Python SDK v2 writes hyperparameters.json: every value a JSON-encoded string."""
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


# ==================================================================================================
# One host's /opt/ml (both launchers)
# ==================================================================================================
def write_config(base, hyperparameters, channels, hosts, host):
    """The platform's three files in ``<base>/input/config``: hyperparameters.json (``hyperparameters`` as given:
    the request's string map), inputdataconfig.json (``channels`` in order) and resourceconfig.json."""
    config = os.path.join(base, "input", "config")
    write_json(os.path.join(config, "hyperparameters.json"), hyperparameters)
    write_json(os.path.join(config, "inputdataconfig.json"), {
        ch: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for ch in channels})
    write_json(os.path.join(config, "resourceconfig.json"), {
        "current_host": host, "current_instance_type": "local", "current_group_name": "homogeneousCluster",
        "hosts": hosts, "network_interface_name": "lo",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": hosts}]})


def link_channel(base, name, source):
    """``<base>/input/data/<name>`` as a link to ``source`` (replacing what was there)."""
    target = os.path.join(base, "input", "data", name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(target) or os.path.isfile(target):
        os.unlink(target)
    elif os.path.isdir(target):
        shutil.rmtree(target)
    os.symlink(os.path.abspath(source), target)


def prepare_output(base):
    """``<base>/output/data`` and ``<base>/model`` exist; the last run's success/failure files are gone (the
    toolkit and the v3 drivers keep an existing failure file)."""
    output = os.path.join(base, "output")
    os.makedirs(os.path.join(output, "data"), exist_ok=True)
    for stale in ("success", "failure"):
        if os.path.exists(os.path.join(output, stale)):
            os.unlink(os.path.join(output, stale))
    os.makedirs(os.path.join(base, "model"), exist_ok=True)


def stage_base_dir(base, data, channels, hps, hosts, host):
    """v2: lay out one host's /opt/ml: config files (values JSON-encoded), channels (links to DATA/<channel>), code
    (a fresh copy of code/ in ``<base>/code``: the toolkit copies code only into an empty folder), output."""
    write_config(base, encode_hyperparameters(hps), channels, hosts, host)
    shutil.rmtree(os.path.join(base, "input", "data"), ignore_errors=True)
    os.makedirs(os.path.join(base, "input", "data"))
    for ch in channels:
        link_channel(base, ch, os.path.join(data, ch))
    code = os.path.join(base, "code")
    shutil.rmtree(code, ignore_errors=True)
    shutil.copytree(CODE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    prepare_output(base)
    return code


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


def toolkit_env(base, work, nproc_or_nodes):
    """v2: the environment of the toolkit process for the /opt/ml at ``base``."""
    env = process_env(sys.executable, nproc_or_nodes)
    env.update({
        "SAGEMAKER_BASE_DIR": base,
        "SAGEMAKER_TRAINING_MODULE": TRAINING_MODULE,
        "SM_STUDIO_LOCAL_MODE": "true",  # else the toolkit retries DNS lookups of the hosts for 15 minutes
        "SM_CHECKPOINT_DIR": os.path.join(work, "checkpoints"),  # stands in for /opt/ml/checkpoints
        "TRAINING_JOB_NAME": JOB_NAME,
    })
    return env


# ==================================================================================================
# SDK v3's drivers on a local /opt/ml (this module and tests/sagemaker_emulator.py)
# ==================================================================================================
def check_v3_base(base):
    """Raise ValueError when ``base`` cannot replace /opt/ml in the drivers: sm_train.sh uses the paths unquoted
    and environment.py inside quotes, so whitespace, quotes, $, backquotes and backslashes are refused."""
    if re.search(r"[\s'\"\\$`]", base):
        raise ValueError(f"--launcher v3 needs a work folder path without spaces, quotes, $ or backslashes (SDK "
                         f"v3's sm_train.sh uses it unquoted), got {base!r}")


def redirect_text(text, base):
    """``text`` with every /opt/ml path starting at ``base`` instead."""
    return OPT_ML_PATH.sub(lambda m: base, text)


def redirect_drivers(drivers, base, master_addr=None):
    """Rewrite the staged SDK v3 drivers folder ``drivers`` for a /opt/ml at ``base``: /opt/ml becomes ``base`` in
    every text file, stale ``__pycache__`` go, and with ``master_addr`` environment.py's fixed
    ``SM_MASTER_ADDR = "algo-1"`` becomes that address. Returns the files changed (relative paths)."""
    changed = []
    for dirpath, dirnames, filenames in os.walk(drivers):
        for d in [d for d in dirnames if d == "__pycache__"]:
            shutil.rmtree(os.path.join(dirpath, d))
            dirnames.remove(d)
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8", newline="") as fh:
                    text = fh.read()
            except UnicodeDecodeError:
                continue
            new = redirect_text(text, base)
            if master_addr and os.path.relpath(path, drivers) == os.path.join("scripts", "environment.py"):
                new, n = V3_MASTER_ADDR.subn(f'SM_MASTER_ADDR = "{master_addr}"', new)
                if n != 1:
                    raise RuntimeError(f"{path}: no `SM_MASTER_ADDR = \"algo-1\"` line to point at {master_addr}; "
                                       "this SDK's drivers changed: see medimg/local_train.py")
            if new != text:
                with open(path, "w", encoding="utf-8", newline="") as fh:
                    fh.write(new)
                changed.append(os.path.relpath(path, drivers))
    return sorted(changed)


def stage_v3_base(base, channel_sources, hyperparameters, hosts, host, code_ignore=()):
    """v3: lay out one host's /opt/ml at ``base`` for SDK v3's drivers. ``channel_sources``: ``{channel: folder or
    None}`` in the job's order (data channels, then ``code`` and ``sm_drivers``); a data channel is linked, ``code``
    (without ``code_ignore`` patterns) and ``sm_drivers`` are copied, None means already in place (downloaded).
    Then the config files (``hyperparameters``: the request's string map), output/, model/, and the drivers
    redirected to ``base`` (``redirect_drivers``; several hosts: the master is the first). Returns the path of
    sm_train.sh."""
    check_v3_base(base)
    data_dir = os.path.join(base, "input", "data")
    for name, source in channel_sources.items():
        target = os.path.join(data_dir, name)
        if source is None:
            if not os.path.isdir(target):
                raise FileNotFoundError(f"channel {name}: {target} is missing")
        elif layout.channel_role(name) == "launcher":
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(*code_ignore) if name == "code" else None)
        else:
            link_channel(base, name, source)
    write_config(base, dict(hyperparameters), list(channel_sources), hosts, host)
    prepare_output(base)
    drivers = os.path.join(data_dir, "sm_drivers")
    redirect_drivers(drivers, base, master_addr=hosts[0] if len(hosts) > 1 else None)
    return os.path.join(drivers, "sm_train.sh")


def v3_command(entrypoint, arguments, base):
    """The job's ContainerEntrypoint + ContainerArguments with /opt/ml redirected to ``base``."""
    return [redirect_text(part, base) for part in list(entrypoint) + list(arguments or [])]


def v3_env(python, processes, job_name, environment=None):
    """The environment of the v3 container command: ``process_env`` (``python``'s python3, pip3 and torchrun, which
    sm_train.sh and the drivers look up on PATH), the job's ``environment`` and TRAINING_JOB_NAME, which the
    platform sets and environment.py reads; no SM_* variable of this process leaks in."""
    env = {k: v for k, v in process_env(python, processes).items() if not k.startswith("SM_")}
    env.update(environment or {})
    env["TRAINING_JOB_NAME"] = job_name
    return env


def v3_job(hps, nproc, nodes, channels, data):
    """What SDK v3's ModelTrainer sends for this run, built by the SDK of this interpreter in its local-container
    mode (``_create_training_job_args``: no AWS, no Docker, no upload): ``(hyperparameters string map, channel
    names in order, entrypoint, arguments, drivers folder, code ignore patterns, temp dir to remove)``.
    SystemExit with one line when this interpreter has no SDK v3."""
    from medimg import sdk

    version = sdk.installed_version()
    if version is None or sdk.path_of(version) != "v3":
        raise SystemExit(f"local_train: --launcher v3 runs SDK v3's own drivers, but this interpreter "
                         f"({sys.executable}) has SageMaker Python SDK {version or 'none'}: run it with "
                         ".venv-sdk3/bin/python (make install builds it)")
    from sagemaker.core.training.configs import Compute, InputData, SourceCode
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun
    from sagemaker.train.model_trainer import Mode

    root = tempfile.mkdtemp(prefix="local-train-v3-")
    trainer = ModelTrainer(
        training_mode=Mode.LOCAL_CONTAINER, training_image="local", local_container_root=root,
        source_code=SourceCode(source_dir=CODE_DIR, entry_script="train.py"), base_job_name=JOB_NAME,
        compute=Compute(instance_type="local", instance_count=nodes), hyperparameters=dict(hps),
        distributed=Torchrun(process_count_per_node=nproc) if nproc > 1 or nodes > 1 else None)
    request = trainer._create_training_job_args(
        input_data_config=[InputData(channel_name=ch, data_source=os.path.join(data, ch)) for ch in channels])
    spec = request["algorithm_specification"]
    drivers = os.path.join(root, "sm_drivers")
    shutil.copytree(trainer._temp_code_dir.name, drivers)  # the trainer removes its own when collected
    return (dict(request["hyper_parameters"]), [c.channel_name for c in request["input_data_config"]],
            list(spec.container_entrypoint), list(spec.container_arguments), drivers,
            list(trainer.source_code.ignore_patterns or []), root)


# ==================================================================================================
# Processes and signals
# ==================================================================================================
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


def toolkit_script_processes(toolkit_pids):
    """v2: everything below the toolkit processes (train.py, torchrun and its workers)."""
    return [p for t in toolkit_pids for p in descendants(t)]


def v3_script_processes(container_pids):
    """v3: everything below the driver (basic_script_driver.py / torchrun_driver.py) of each container command:
    train.py, or torchrun and its workers. The driver and sm_train.sh outlive the signal and report how the script
    ended (its exit code, its failure file kept)."""
    drivers = [p for c in container_pids for p in descendants(c) if V3_DRIVERS_DIR in command_line(p)]
    return [p for d in drivers for p in descendants(d)]


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


# ==================================================================================================
# The two launchers
# ==================================================================================================
def launch_v2(args, work, data, channels, hps):
    """The sagemaker-training toolkit on WORK (and WORK/nodes/<host> for the other hosts)."""
    if importlib.util.find_spec("sagemaker_training") is None:
        raise SystemExit("local_train: --launcher v2 (the default) runs the sagemaker-training toolkit, which is not "
                         "installed in this interpreter; pip install sagemaker-training (make install does it in "
                         ".venv), or use --launcher v3 where SDK v3 is installed")
    hps = dict(hps, sagemaker_program="train.py", sagemaker_container_log_level=20, sagemaker_job_name=JOB_NAME,
               sagemaker_region="us-east-1")
    if args.nproc > 1 or args.nodes > 1:
        hps.update({"sagemaker_torch_distributed_enabled": True,
                    "sagemaker_mpi_num_of_processes_per_host": args.nproc})
    hosts, commands = host_names(args.nodes), []
    for i, host in enumerate(hosts):
        base = work if i == 0 else os.path.join(work, "nodes", host)
        code = stage_base_dir(base, data, channels, dict(hps), hosts, host)
        write_json(os.path.join(base, "input", "config", "hyperparameters.json"),
                   encode_hyperparameters(dict(hps, sagemaker_submit_directory=code)))
        commands.append((host, [sys.executable, "-c", "from sagemaker_training.cli.train import main; main()"],
                         toolkit_env(base, work, args.nproc * args.nodes), base))
    return commands, toolkit_script_processes


def launch_v3(args, work, data, channels, hps):
    """SDK v3's container command on WORK (and WORK/nodes/<host> for the other hosts), through its own drivers."""
    try:
        check_v3_base(work)
    except ValueError as exc:
        raise SystemExit(f"local_train: {exc}") from None
    hps = dict(hps)
    hps.setdefault("checkpoint-dir", os.path.join(work, "checkpoints"))  # v3 has no SM_CHECKPOINT_DIR
    job_hps, order, entrypoint, arguments, drivers, ignore, tmp = v3_job(hps, args.nproc, args.nodes, channels, data)
    try:
        hosts, commands = host_names(args.nodes), []
        for i, host in enumerate(hosts):
            base = work if i == 0 else os.path.join(work, "nodes", host)
            shutil.rmtree(os.path.join(base, "input", "data"), ignore_errors=True)
            sources = {ch: (drivers if ch == "sm_drivers" else CODE_DIR if ch == "code" else os.path.join(data, ch))
                       for ch in order}
            stage_v3_base(base, sources, job_hps, hosts, host, code_ignore=ignore)
            commands.append((host, v3_command(entrypoint, arguments, base),
                             v3_env(sys.executable, args.nproc * args.nodes, JOB_NAME), base))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return commands, v3_script_processes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder whose subfolders are the channels: train/ (and val/, test/)")
    p.add_argument("--out", required=True, help="work folder: becomes the container's /opt/ml")
    p.add_argument("--label-dict", help="class names (label_dict.json): sent as the label-dict hyperparameter (its "
                                        "absolute path); default: the train channel's own, else code/label_dict.json")
    p.add_argument("--hp", nargs="+", default=[], metavar="KEY=VALUE", help="hyperparameters, e.g. epochs=3 lr=0.01")
    p.add_argument("--nproc", type=int, default=1, help="processes per host, under torchrun (torch_distributed)")
    p.add_argument("--nodes", type=int, default=1, help="hosts, each a launcher process on its own 127.0.0.x")
    p.add_argument("--launcher", choices=LAUNCHERS, default="v2",
                   help="v2: the sagemaker-training toolkit (SDK v2's Estimator); v3: SDK v3 ModelTrainer's drivers "
                        "from the installed SDK (needs sagemaker>=3 in this interpreter)")
    return p.parse_args(argv)


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
    os.makedirs(os.path.join(work, "checkpoints"), exist_ok=True)
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    launch = launch_v3 if args.launcher == "v3" else launch_v2
    commands, script_processes = launch(args, work, data, channels, hps)
    procs, threads = run_hosts(commands, work, args.nodes)
    forward_signals(lambda: script_processes([p.pid for p in procs]))
    codes = [p.wait() for p in procs]
    for t in threads:
        t.join()
    code = next((c for c in codes if c), 0)
    report(work, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
