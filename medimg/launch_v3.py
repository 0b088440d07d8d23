"""``--launcher v3``: SDK v3's own drivers (what ModelTrainer runs in the container) on a local /opt/ml, no toolkit.

``v3_job`` has the installed SDK build the job in ModelTrainer's local-container mode (the hyperparameters as it
sends them, the container entrypoint and its drivers folder); ``stage_v3_base`` lays out a host's /opt/ml with
the drivers as the ``sm_drivers`` channel and code/ as ``code``; ``v3_command`` and ``v3_env`` are the container
command and its environment. The drivers hard-code /opt/ml (no SAGEMAKER_BASE_DIR), so the staged copy is
redirected (``redirect_drivers``): every /opt/ml path in its files and in the entrypoint starts at the work folder
instead, and with several hosts environment.py's ``SM_MASTER_ADDR = "algo-1"`` becomes the first host's address.
tests/support/sagemaker_emulator.py runs its SDK v3 jobs through the same functions.
"""
import os
import re
import shutil
import sys
import tempfile

from medimg import opt_ml
from medimg.container import CODE_DIR, layout
from medimg.processes import command_line, descendants, process_env

OPT_ML_PATH = re.compile(r"/opt/ml(?=[/\"'\s]|$)")  # /opt/ml itself or a path below it, not /opt/mlflow
V3_MASTER_ADDR = re.compile(r'^SM_MASTER_ADDR = "algo-1"$', re.MULTILINE)  # scripts/environment.py
V3_DRIVERS_DIR = "/sm_drivers/distributed_drivers/"  # in the command line of the driver that runs train.py


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
                                       "this SDK's drivers changed: see medimg/launch_v3.py")
            if new != text:
                with open(path, "w", encoding="utf-8", newline="") as fh:
                    fh.write(new)
                changed.append(os.path.relpath(path, drivers))
    return sorted(changed)


def stage_v3_base(base, channel_sources, hyperparameters, hosts, host, code_ignore=(), access=None):
    """Lay out one host's /opt/ml at ``base`` for SDK v3's drivers. ``channel_sources``: ``{channel: folder or
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
            opt_ml.link_channel(base, name, source)
    opt_ml.write_config(base, dict(hyperparameters), list(channel_sources), hosts, host, access)
    opt_ml.prepare_output(base)
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
        source_code=SourceCode(source_dir=CODE_DIR, entry_script="train.py"), base_job_name=opt_ml.JOB_NAME,
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


def script_processes(container_pids):
    """Everything below the driver (basic_script_driver.py / torchrun_driver.py) of each container command:
    train.py, or torchrun and its workers. The driver and sm_train.sh outlive the signal and report how the script
    ended (its exit code, its failure file kept)."""
    drivers = [p for c in container_pids for p in descendants(c) if V3_DRIVERS_DIR in command_line(p)]
    return [p for d in drivers for p in descendants(d)]


def stage_job(work, data, channels, hps, nproc, nodes, access=None):
    """SDK v3's container command on WORK (and WORK/nodes/<host> for the other hosts), through its own drivers:
    every host's /opt/ml staged, and ``([(host, argv, env, cwd)], script_processes)``. v3 sets no
    SM_CHECKPOINT_DIR, so the run gets ``checkpoint-dir=WORK/checkpoints`` unless ``hps`` gives one."""
    try:
        check_v3_base(work)
    except ValueError as exc:
        raise SystemExit(f"local_train: {exc}") from None
    hps = dict(hps)
    hps.setdefault("checkpoint-dir", os.path.join(work, "checkpoints"))  # v3 has no SM_CHECKPOINT_DIR
    job_hps, order, entrypoint, arguments, drivers, ignore, tmp = v3_job(hps, nproc, nodes, channels, data)
    try:
        hosts, commands = opt_ml.host_names(nodes), []
        for i, host in enumerate(hosts):
            base = opt_ml.host_base(work, hosts, i)
            shutil.rmtree(os.path.join(base, "input", "data"), ignore_errors=True)
            parts = opt_ml.channel_sources(work, data, [ch for ch in order if ch in channels], access or {}, hosts, i)
            sources = {ch: (drivers if ch == "sm_drivers" else CODE_DIR if ch == "code" else parts[ch])
                       for ch in order}
            stage_v3_base(base, sources, job_hps, hosts, host, code_ignore=ignore, access=access)
            commands.append((host, v3_command(entrypoint, arguments, base),
                             v3_env(sys.executable, nproc * nodes, opt_ml.JOB_NAME), base))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return commands, script_processes
