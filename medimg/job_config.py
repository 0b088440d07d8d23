"""Client-side settings shared by the notebook and the tests: the CloudWatch metric definitions (from
code/epoch_log.py, the home of the lines train.py logs) and the keyword arguments of the SageMaker ``PyTorch`` estimator and ``HyperparameterTuner`` that
train.ipynb builds from its parameters (spot or warm pool, distribution, security settings), so that the
notebook stays readable and every rule here is unit-tested.
"""
import json

from medimg.container import epoch_log

METRIC_DEFINITIONS = epoch_log.metric_definitions()  # regexes over the lines train.py logs (code/epoch_log.py)

# ==================================================================================================
# Instances
# ==================================================================================================
# GPUs per instance of the types one would train this package on. Multi-GPU types get torch_distributed
# (one process per GPU); a type not listed here is treated as unknown: set ``distributed`` yourself.
GPUS_PER_INSTANCE = {
    # G5: NVIDIA A10G, 24 GB each
    "ml.g5.xlarge": 1, "ml.g5.2xlarge": 1, "ml.g5.4xlarge": 1, "ml.g5.8xlarge": 1, "ml.g5.16xlarge": 1,
    "ml.g5.12xlarge": 4, "ml.g5.24xlarge": 4, "ml.g5.48xlarge": 8,
    # G6: NVIDIA L4, 24 GB each
    "ml.g6.xlarge": 1, "ml.g6.2xlarge": 1, "ml.g6.4xlarge": 1, "ml.g6.8xlarge": 1, "ml.g6.16xlarge": 1,
    "ml.g6.12xlarge": 4, "ml.g6.24xlarge": 4, "ml.g6.48xlarge": 8,
    # G4dn: NVIDIA T4, 16 GB each
    "ml.g4dn.xlarge": 1, "ml.g4dn.2xlarge": 1, "ml.g4dn.4xlarge": 1, "ml.g4dn.8xlarge": 1,
    "ml.g4dn.16xlarge": 1, "ml.g4dn.12xlarge": 4,
    # P3: NVIDIA V100
    "ml.p3.2xlarge": 1, "ml.p3.8xlarge": 4, "ml.p3.16xlarge": 8, "ml.p3dn.24xlarge": 8,
    # P4d/P4de: NVIDIA A100; P5: NVIDIA H100
    "ml.p4d.24xlarge": 8, "ml.p4de.24xlarge": 8, "ml.p5.48xlarge": 8,
}
CPU_FAMILIES = ("ml.m4.", "ml.m5.", "ml.m5d.", "ml.m6i.", "ml.m7i.", "ml.c4.", "ml.c5.", "ml.c5n.", "ml.c6i.",
                "ml.c7i.", "ml.r5.", "ml.t3.")
MODES = ("spot", "warm", "on-demand")
MAX_KEEP_ALIVE_SECONDS = 3600  # SageMaker's limit for warm pools
TORCH_DISTRIBUTED = {"torch_distributed": {"enabled": True}}


def gpus_per_instance(instance_type):
    """GPUs of an instance type: a number from the table, 0 for CPU families, None when unknown."""
    if instance_type in GPUS_PER_INSTANCE:
        return GPUS_PER_INSTANCE[instance_type]
    if instance_type.startswith(CPU_FAMILIES):
        return 0
    return None


def distribution_for(instance_type, instance_count, distributed="auto"):
    """``{"torch_distributed": {"enabled": True}}`` or None.

    ``distributed="auto"``: on when the job has more than one GPU in all (several instances, or one
    instance with several GPUs); True/False force it. torch_distributed starts train.py under torchrun,
    one process per GPU on every instance; it needs GPU instances.
    """
    if distributed not in ("auto", True, False):
        raise ValueError(f"distributed must be 'auto', True or False, got {distributed!r}")
    gpus = gpus_per_instance(instance_type)
    if distributed == "auto":
        if gpus is None and instance_count == 1:
            return None  # unknown type, one instance: one process, as SageMaker would run it
        enabled = instance_count > 1 or (gpus or 0) > 1
    else:
        enabled = distributed
    if not enabled:
        if instance_count > 1:
            raise ValueError(f"instance_count={instance_count} without distribution would run {instance_count} "
                             "independent copies of the same training; set distributed='auto' or True, or "
                             "use instance_count=1")
        return None
    if gpus == 0:
        raise ValueError(f"{instance_type} has no GPU: SageMaker's torch_distributed runs on GPU instances only; "
                         "use a GPU type (ml.g5.xlarge, ml.g5.12xlarge, ...) or instance_count=1")
    return json.loads(json.dumps(TORCH_DISTRIBUTED))  # a fresh copy each time


# ==================================================================================================
# Estimator
# ==================================================================================================
def _is_true(value):
    return str(value).strip().lower() in ("true", "1", "yes", "y", "on")


def security_kwargs(*, volume_kms_key=None, output_kms_key=None, subnets=None, security_group_ids=None,
                    enable_network_isolation=False, encrypt_inter_container_traffic=False):
    """The estimator's security settings, only those that are set (so that unset ones keep SDK defaults)."""
    out = {}
    if volume_kms_key:
        out["volume_kms_key"] = volume_kms_key
    if output_kms_key:
        out["output_kms_key"] = output_kms_key
    if bool(subnets) != bool(security_group_ids):
        raise ValueError("a VPC needs both subnets and security_group_ids (set both, or neither to use "
                         "SageMaker's network)")
    if subnets:
        out["subnets"] = list(subnets)
        out["security_group_ids"] = list(security_group_ids)
    if enable_network_isolation:
        out["enable_network_isolation"] = True
    if encrypt_inter_container_traffic:
        out["encrypt_inter_container_traffic"] = True
    return out


def estimator_kwargs(*, role, hyperparameters, output_path, code_location, base_job_name, mode="spot",
                     instance_type="ml.g5.xlarge", instance_count=1, framework_version="2.8.0", py_version="py312",
                     source_dir="code", max_run=24 * 3600, max_wait=None, checkpoint_s3_uri=None,
                     keep_alive_seconds=1800, distributed="auto", volume_size=30, tags=None, **security):
    """Keyword arguments for ``sagemaker.pytorch.PyTorch`` (add ``sagemaker_session``).

    mode "spot": managed spot capacity (up to ~70% cheaper; the job may be interrupted and resumes from the
    checkpoints that SageMaker syncs between ``/opt/ml/checkpoints`` and ``checkpoint_s3_uri``).
    mode "warm": on-demand, and the instance stays up ``keep_alive_seconds`` after the job in a warm pool
    so the next matching job starts in seconds (SageMaker does not allow warm pools with spot).
    mode "on-demand": neither.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if instance_count < 1:
        raise ValueError(f"instance_count must be at least 1, got {instance_count}")
    sec = security_kwargs(**security)
    if sec.get("enable_network_isolation") and _is_true(hyperparameters.get("pretrained", False)):
        raise ValueError("pretrained=True downloads ImageNet weights when the job starts, which a network-isolated "
                         "job cannot do; set pretrained=False or enable_network_isolation=False")
    kwargs = {
        "entry_point": "train.py",
        "source_dir": source_dir,
        "role": role,
        "framework_version": framework_version,
        "py_version": py_version,
        "instance_type": instance_type,
        "instance_count": instance_count,
        "volume_size": volume_size,
        "hyperparameters": dict(hyperparameters),
        "metric_definitions": [dict(d) for d in METRIC_DEFINITIONS],
        "output_path": output_path,
        "code_location": code_location,
        "base_job_name": base_job_name,
        "max_run": int(max_run),
        "disable_profiler": True,  # the profiler and debugger hooks add nothing for this script
        "debugger_hook_config": False,
    }
    if mode == "spot":
        max_wait = int(max_wait if max_wait is not None else 2 * max_run)
        if max_wait < max_run:
            raise ValueError(f"max_wait ({max_wait} s) must be at least max_run ({max_run} s): it is the run time "
                             "plus the time SageMaker may wait for spot capacity")
        kwargs.update(use_spot_instances=True, max_wait=max_wait)
        if checkpoint_s3_uri:
            kwargs["checkpoint_s3_uri"] = checkpoint_s3_uri  # local path: /opt/ml/checkpoints (train.py's default)
    elif mode == "warm":
        if not 0 < int(keep_alive_seconds) <= MAX_KEEP_ALIVE_SECONDS:
            raise ValueError(f"keep_alive_seconds must be 1..{MAX_KEEP_ALIVE_SECONDS} (SageMaker's warm-pool limit), "
                             f"got {keep_alive_seconds}")
        kwargs["keep_alive_period_in_seconds"] = int(keep_alive_seconds)
    if mode != "spot" and checkpoint_s3_uri:
        kwargs["checkpoint_s3_uri"] = checkpoint_s3_uri
    distribution = distribution_for(instance_type, instance_count, distributed)
    if distribution:
        kwargs["distribution"] = distribution
    if tags:
        kwargs["tags"] = [{"Key": str(k), "Value": str(v)} for k, v in dict(tags).items()]
    kwargs.update(sec)
    return kwargs


def model_security_kwargs(*, output_kms_key=None, subnets=None, security_group_ids=None,
                          enable_network_isolation=False, **_training_only):
    """The same security settings for ``PyTorchModel``: the repacked model.tar.gz encrypted with
    ``output_kms_key``, the endpoint in the VPC, and network isolation. Only those that are set."""
    out = {}
    if output_kms_key:
        out["model_kms_key"] = output_kms_key
    if bool(subnets) != bool(security_group_ids):
        raise ValueError("a VPC needs both subnets and security_group_ids (set both, or neither)")
    if subnets:
        out["vpc_config"] = {"Subnets": list(subnets), "SecurityGroupIds": list(security_group_ids)}
    if enable_network_isolation:
        out["enable_network_isolation"] = True
    return out


def smoke_test_hyperparameters(hyperparameters, epochs=1):
    """The notebook's hyperparameters as ``key=value`` pairs for scripts/local_train.py, shortened to ``epochs``
    epoch(s) without compilation: a quick check that the settings and the data work together."""
    hps = dict(hyperparameters, epochs=epochs, compile=False)
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in hps.items()]


# ==================================================================================================
# Hyperparameter tuning
# ==================================================================================================
def tuning_ranges(lr=(1e-4, 1e-2), weight_decay=(1e-5, 0.1), batch_sizes=(64, 128, 256)):
    """Search space: lr and weight decay on a log scale, batch size among a few values."""
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter

    return {
        "lr": ContinuousParameter(lr[0], lr[1], scaling_type="Logarithmic"),
        "weight-decay": ContinuousParameter(weight_decay[0], weight_decay[1], scaling_type="Logarithmic"),
        "batch-size": CategoricalParameter([int(b) for b in batch_sizes]),
    }


def tuner_kwargs(*, max_jobs=6, max_parallel_jobs=2, base_tuning_job_name=None, ranges=None,
                 early_stopping="Auto"):
    """Keyword arguments for ``sagemaker.tuner.HyperparameterTuner(estimator, **kwargs)``: maximise val_auc.

    train.py logs ``val_auc`` every epoch and, last, the best epoch's ``val_auc``: SageMaker takes the
    last value a job emits as its objective, so each job is judged by the model it keeps.
    """
    if max_parallel_jobs < 1 or max_jobs < max_parallel_jobs:
        raise ValueError(f"need 1 <= max_parallel_jobs ({max_parallel_jobs}) <= max_jobs ({max_jobs})")
    kwargs = {
        "objective_metric_name": "val_auc",
        "objective_type": "Maximize",
        "hyperparameter_ranges": ranges or tuning_ranges(),
        "metric_definitions": [dict(d) for d in METRIC_DEFINITIONS],
        "max_jobs": int(max_jobs),
        "max_parallel_jobs": int(max_parallel_jobs),
        "early_stopping_type": early_stopping,
        "strategy": "Bayesian",
    }
    if base_tuning_job_name:
        kwargs["base_tuning_job_name"] = base_tuning_job_name
    return kwargs


def tuning_estimator_kwargs(kwargs):
    """The estimator settings for the tuning jobs: those of the single job without its checkpoint location,
    which every tuning job would share (and each would resume from another's checkpoints). A spot job
    that is interrupted then starts again from its first epoch."""
    return {k: v for k, v in kwargs.items() if k != "checkpoint_s3_uri"}
