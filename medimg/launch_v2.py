"""``--launcher v2``: the real sagemaker-training toolkit (what SDK v2's Estimator runs in the PyTorch container) on a
local /opt/ml. Every host's /opt/ml gets the config files as SDK v2 writes them (each hyperparameter value
JSON-encoded), the channels and a fresh copy of code/ (``stage_base_dir``); the toolkit runs with
SAGEMAKER_BASE_DIR pointing there (``toolkit_env``), SM_CHECKPOINT_DIR=WORK/checkpoints standing in for
/opt/ml/checkpoints. tests/support/sagemaker_emulator.py stages its SDK v2 jobs with the same functions.
"""
import importlib.util
import json
import os
import shutil
import sys

from medimg import opt_ml
from medimg.container import CODE_DIR
from medimg.processes import descendants, process_env

TRAINING_MODULE = "sagemaker_pytorch_container.training:main"
TOOLKIT_COMMAND = "from sagemaker_training.cli.train import main; main()"  # the container's `train` entry point


def encode_hyperparameters(hps):
    """As the SageMaker Python SDK v2 writes hyperparameters.json: every value a JSON-encoded string."""
    return {str(k): json.dumps(v) for k, v in hps.items()}


def stage_base_dir(base, data, channels, hps, hosts, host, access=None, sources=None):
    """Lay out one host's /opt/ml: config files (values JSON-encoded; ``access``: opt_ml.write_config's), channels
    (links to ``sources[channel]``, default DATA/<channel>), code (a fresh copy of code/ in ``<base>/code``: the
    toolkit copies code only into an empty folder), output."""
    opt_ml.write_config(base, encode_hyperparameters(hps), channels, hosts, host, access)
    shutil.rmtree(os.path.join(base, "input", "data"), ignore_errors=True)
    os.makedirs(os.path.join(base, "input", "data"))
    for ch in channels:
        opt_ml.link_channel(base, ch, (sources or {}).get(ch) or os.path.join(data, ch))
    code = os.path.join(base, "code")
    shutil.rmtree(code, ignore_errors=True)
    shutil.copytree(CODE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    opt_ml.prepare_output(base)
    return code


def toolkit_env(base, work, nproc_or_nodes):
    """The environment of the toolkit process for the /opt/ml at ``base``."""
    env = process_env(sys.executable, nproc_or_nodes)
    env.update({
        "SAGEMAKER_BASE_DIR": base,
        "SAGEMAKER_TRAINING_MODULE": TRAINING_MODULE,
        "SM_STUDIO_LOCAL_MODE": "true",  # else the toolkit retries DNS lookups of the hosts for 15 minutes
        "SM_CHECKPOINT_DIR": os.path.join(work, "checkpoints"),  # stands in for /opt/ml/checkpoints
        "TRAINING_JOB_NAME": opt_ml.JOB_NAME,
    })
    return env


def script_processes(toolkit_pids):
    """Everything below the toolkit processes (train.py, torchrun and its workers)."""
    return [p for t in toolkit_pids for p in descendants(t)]


def stage_job(work, data, channels, hps, nproc, nodes, access=None):
    """The toolkit on WORK (and WORK/nodes/<host> for the other hosts): every host's /opt/ml staged, and
    ``([(host, argv, env, cwd)], script_processes)``. SystemExit with one line when the toolkit is not installed."""
    if importlib.util.find_spec("sagemaker_training") is None:
        raise SystemExit("local_train: --launcher v2 (the default) runs the sagemaker-training toolkit, which is not "
                         "installed in this interpreter; pip install sagemaker-training (make install does it in "
                         ".venv), or use --launcher v3 where SDK v3 is installed")
    hps = dict(hps, sagemaker_program="train.py", sagemaker_container_log_level=20,
               sagemaker_job_name=opt_ml.JOB_NAME, sagemaker_region="us-east-1")
    if nproc > 1 or nodes > 1:
        hps.update({"sagemaker_torch_distributed_enabled": True, "sagemaker_mpi_num_of_processes_per_host": nproc})
    hosts, commands = opt_ml.host_names(nodes), []
    for i, host in enumerate(hosts):
        base = opt_ml.host_base(work, hosts, i)
        sources = opt_ml.channel_sources(work, data, channels, access or {}, hosts, i)
        code = stage_base_dir(base, data, channels, dict(hps), hosts, host, access, sources)
        opt_ml.write_json(os.path.join(base, "input", "config", "hyperparameters.json"),
                          encode_hyperparameters(dict(hps, sagemaker_submit_directory=code)))
        commands.append((host, [sys.executable, "-c", TOOLKIT_COMMAND], toolkit_env(base, work, nproc * nodes), base))
    return commands, script_processes
