"""One description of a SageMaker training job (``JobSpec``), independent of the SageMaker Python SDK, that the
two builders turn into what their SDK sends: ``medimg.sdk_v2`` (the ``sagemaker.pytorch`` Estimator, SDK v2)
and ``medimg.sdk_v3`` (``ModelTrainer``, SDK v3). Every rule lives here, so both SDK paths refuse the same
settings with the same message and derive the same values:

- ``mode``: "spot" (managed spot capacity, up to ~70% cheaper; needs ``max_wait >= max_run``; resumes from the
  checkpoints SageMaker syncs between /opt/ml/checkpoints and ``checkpoint_s3_uri``), "warm" (on demand, and the
  instance waits ``keep_alive_seconds``, 1..3600, in a warm pool for the next matching job; SageMaker does not
  allow warm pools with spot) or "on-demand";
- distribution: torchrun (one process per GPU) when the job has more than one GPU in all (``distributed="auto"``),
  GPU instances only, never several instances without it; an instance type the GPU table does not know, or
  ``distributed=False`` on a multi-GPU type, is said in one line (``JobSpec.warnings``) rather than left idle;
- data access (``channel_inputs``): every channel in ``input_mode`` "File" (copied to the instance before
  train.py starts) or "FastFile" (read from S3 as train.py opens the files; "Pipe" is refused: train.py reads
  files); the train channel ``ShardedByS3Key`` (each instance gets about 1/n of its files) when the job has
  several instances and the data are shards, every other channel ``FullyReplicated``;
- security settings, sent only when set: KMS keys, a VPC (subnets and security groups together), network
  isolation (then ``pretrained`` weights come from a ``weights`` channel, or the job starts from an earlier model:
  without either train.py would download them, which an isolated job cannot), inter-container encryption;
- where the model starts: a ``weights`` channel (the backbone's ImageNet weights file, staged by
  ``medimg.weights``) and ``model_uri``, an earlier job's model.tar.gz (SDK v2's ``model_uri``: the ``model``
  channel of SageMaker's incremental training);
- the metric definitions: code/epoch_log.py's, for the test split only when a channel holds it, and the ordinal
  ones only when the ``ordinal`` hyperparameter is on;
- the tuning search space and objective (``TuningSpec``), the instances' GPU counts, and the inference image
  version a model trained on 2.7/2.8 deploys on (the PyTorch inference images stop at 2.6).

This module imports no SDK: ``import medimg.job`` works with either SDK major installed, or none.
"""
import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple

from medimg.container import epoch_log, layout

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
INPUT_MODES = ("File", "FastFile")  # SageMaker's spelling; "Pipe" (a named pipe per channel) train.py cannot read
DATA_FORMATS = ("images", "shards")  # what the channels hold: image files (class folders, labels.csv) or shards
S3_DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")
MAX_KEEP_ALIVE_SECONDS = 3600  # SageMaker's limit for warm pools
TORCH_DISTRIBUTED = {"torch_distributed": {"enabled": True}}  # SDK v2's spelling of "torchrun on"
INFERENCE_VERSIONS = ("2.6.0",)  # PyTorch inference images for Python 3.12, newest first (SAGEMAKER_CONTRACT.md)
# the inference container's settings for a model.tar.gz that carries its own code/inference.py (SDK v2's
# FrameworkModel sets these for code inside the tarball; SAGEMAKER_REGION is added per deployment)
INFERENCE_ENVIRONMENT = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                         "SAGEMAKER_CONTAINER_LOG_LEVEL": "20"}


def gpus_per_instance(instance_type):
    """GPUs of an instance type: a number from the table, 0 for CPU families, None when unknown."""
    if instance_type in GPUS_PER_INSTANCE:
        return GPUS_PER_INSTANCE[instance_type]
    if instance_type.startswith(CPU_FAMILIES):
        return 0
    return None


def distribution_for(instance_type, instance_count, distributed="auto"):
    """``{"torch_distributed": {"enabled": True}}`` (a fresh copy) or None.

    ``distributed="auto"``: on when the job has more than one GPU in all (several instances, or one
    instance with several GPUs); True/False force it. torch_distributed starts train.py under torchrun,
    one process per GPU on every instance; it needs GPU instances. Raises ValueError for an unknown
    ``distributed``, several instances without distribution, and distribution on a CPU type.
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
    return json.loads(json.dumps(TORCH_DISTRIBUTED))


def inference_version(training_version):
    """The inference image version for a model trained on ``training_version``: the newest one not newer
    (2.8.0 -> 2.6.0); the training version itself when no inference image is older."""
    def key(v):
        return tuple(int(p) for p in v.split("."))

    for version in INFERENCE_VERSIONS:
        if key(version) <= key(training_version):
            return version
    return training_version


def is_true(value):
    """A hyperparameter value as train.py reads a boolean: True, "true", "True", 1, "yes", "on" are true."""
    return str(value).strip().lower() in ("true", "1", "yes", "y", "on")


def check_vpc(subnets, security_group_ids):
    """Raise ValueError unless both or neither of subnets and security_group_ids are set."""
    if bool(subnets) != bool(security_group_ids):
        raise ValueError("a VPC needs both subnets and security_group_ids (set both, or neither to use "
                         "SageMaker's network)")


def train_defaults(python=None):
    """train.py's hyperparameters and their defaults, ``{flag: default}``, from code/hyperparameters.py itself
    (run as a script with this checkout's code/, so that the client never keeps a copy of them)."""
    import os
    import subprocess
    import sys

    from medimg.container import CODE_DIR

    done = subprocess.run([python or sys.executable, os.path.join(CODE_DIR, "hyperparameters.py")],
                          capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"cannot read train.py's hyperparameters: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def changed_hyperparameters(hyperparameters, defaults):
    """The hyperparameters that differ from train.py's ``defaults``: what a job sends, so that a default changed in
    train.py reaches every user who did not set that value. A name train.py does not take is a ValueError."""
    unknown = sorted(set(hyperparameters) - set(defaults))
    if unknown:
        raise ValueError(f"train.py has no hyperparameter {unknown[0]!r}; its hyperparameters are "
                         f"{', '.join(sorted(defaults))}")

    def same(value, default):
        return value == default or str(value).strip().lower() == str(default).strip().lower()

    return {k: v for k, v in hyperparameters.items() if not same(v, defaults[k])}


def unique_name(base, now=None):
    """``<base>-YYYY-MM-DD-HH-MM-SS-mmm`` (UTC), SDK v2's ``name_from_base`` format, at most 63 characters: for
    names chosen before a job exists (v2 job names, checkpoint folders, endpoints)."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y-%m-%d-%H-%M-%S-") + f"{now.microsecond // 1000:03d}"
    return f"{base[:63 - len(stamp) - 1]}-{stamp}"


# ==================================================================================================
# The job
# ==================================================================================================
class ChannelInput(NamedTuple):
    """How one channel reaches the instances: its S3 prefix, input mode and S3 data distribution."""
    uri: str
    input_mode: str
    distribution: str


@dataclass(frozen=True)
class JobSpec:
    """A training job of code/train.py, validated when built (ValueError with one line saying what to change).

    ``channels``: ``{name: "s3://..."}``, the data train.py reads (``train``, and ``val``/``test`` or their
    aliases) and a ``weights`` channel for ``pretrained``; None when given to the builder's start call later (the
    metric definitions then include the test split's). ``model_uri``: an earlier job's model.tar.gz to start from
    (the ``model`` channel). ``hyperparameters``: train.py's flags without dashes, values as a notebook writes them
    (3, 0.01, True, "smallcnn"). Change one with ``spec.replace(...)``.

    ``input_mode``: "File" or "FastFile", for every data channel. ``data_format``: "images" (class folders or
    labels.csv) or "shards" (``python -m medimg.prepare_data ... --shards``). ``train_distribution``: "auto"
    (``ShardedByS3Key`` when ``instance_count > 1`` and the data are shards, else ``FullyReplicated``) or either
    explicitly; val and test are always ``FullyReplicated``. ``channel_inputs`` is what the builders send."""
    role: str
    hyperparameters: dict
    output_path: str
    code_location: str
    base_job_name: str
    channels: dict = None
    input_mode: str = "File"
    data_format: str = "images"
    train_distribution: str = "auto"
    mode: str = "spot"
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = 1
    distributed: object = "auto"
    framework_version: str = "2.8.0"
    py_version: str = "py312"
    source_dir: str = "code"
    entry_point: str = "train.py"
    max_run: int = 24 * 3600
    max_wait: int = None
    checkpoint_s3_uri: str = None
    keep_alive_seconds: int = 1800
    volume_size: int = 30
    tags: dict = None
    volume_kms_key: str = None
    output_kms_key: str = None
    subnets: list = None
    security_group_ids: list = None
    enable_network_isolation: bool = False
    encrypt_inter_container_traffic: bool = False
    model_uri: str = None

    def __post_init__(self):
        def set_(name, value):  # frozen: the normalised copies are set once, here
            object.__setattr__(self, name, value)

        set_("hyperparameters", dict(self.hyperparameters))
        set_("channels", None if self.channels is None else dict(self.channels))
        set_("tags", None if not self.tags else {str(k): str(v) for k, v in dict(self.tags).items()})
        set_("subnets", list(self.subnets) if self.subnets else None)
        set_("security_group_ids", list(self.security_group_ids) if self.security_group_ids else None)
        set_("max_run", int(self.max_run))
        self._check_mode()
        if self.instance_count < 1:
            raise ValueError(f"instance_count must be at least 1, got {self.instance_count}")
        check_vpc(self.subnets, self.security_group_ids)
        self._check_channels()
        self._check_data_access()
        if self.enable_network_isolation and is_true(self.hyperparameters.get("pretrained", False)) \
                and not (self.has_weights_channel or self.model_uri):
            raise ValueError("pretrained=True without a weights channel downloads the ImageNet weights when the job "
                             "starts, which a network-isolated job cannot do; add the weights channel "
                             "(channels['weights'] = the S3 URI of the weights file: medimg.weights.stage_weights, the "
                             "notebook's stage_weights), or set pretrained=False")
        distribution_for(self.instance_type, self.instance_count, self.distributed)  # raises for bad settings

    def _check_mode(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "spot" and self.max_wait_seconds < self.max_run:
            raise ValueError(f"max_wait ({self.max_wait_seconds} s) must be at least max_run ({self.max_run} s): "
                             "it is the run time plus the time SageMaker may wait for spot capacity")
        if self.mode == "warm" and not 0 < int(self.keep_alive_seconds) <= MAX_KEEP_ALIVE_SECONDS:
            raise ValueError(f"keep_alive_seconds must be 1..{MAX_KEEP_ALIVE_SECONDS} (SageMaker's warm-pool "
                             f"limit), got {self.keep_alive_seconds}")

    def _check_channels(self):
        for name, uri in (self.channels or {}).items():
            if layout.channel_role(name) == "launcher":
                raise ValueError(f"channel {name!r} is a name SDK v3's ModelTrainer uses for itself "
                                 f"({', '.join(layout.LAUNCHER_CHANNELS)}); name the data train, val or test")
            if layout.channel_role(name) == "model":
                raise ValueError(f"channel {name!r}: give the earlier model as JobSpec(model_uri='s3://.../model.tar.gz'),"
                                 " which makes the model channel (SDK v2's model_uri)")
            if not (isinstance(uri, str) and uri.startswith("s3://")):
                raise ValueError(f"channel {name!r}: expected an s3:// URI, got {uri!r}; upload the data first "
                                 "(medimg.s3_data.upload_channels)")

    def _check_data_access(self):
        if self.input_mode == "Pipe":
            raise ValueError("input_mode='Pipe' hands each channel over as a stream through a named pipe, which "
                             "train.py cannot read (it opens the channels' files); use 'File' or 'FastFile'")
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be 'File' or 'FastFile' (SageMaker's spelling), got {self.input_mode!r}")
        if self.data_format not in DATA_FORMATS:
            raise ValueError(f"data_format must be 'images' or 'shards', got {self.data_format!r}")
        if self.train_distribution not in ("auto",) + S3_DISTRIBUTIONS:
            raise ValueError("train_distribution must be 'auto', 'FullyReplicated' or 'ShardedByS3Key', got "
                             f"{self.train_distribution!r}")
        if self.train_distribution == "ShardedByS3Key" and self.data_format != "shards":
            raise ValueError("train_distribution='ShardedByS3Key' gives each instance about 1/n of the train channel's "
                             "files, but class folders and labels.csv channels need all of theirs (label_dict.json, "
                             "labels.csv) on every instance; write shards (prepare_data --shards), data_format='shards'")
        if self.train_distribution == "ShardedByS3Key" and self.instance_count == 1:
            raise ValueError("train_distribution='ShardedByS3Key' with instance_count=1: the one instance gets every "
                             "file anyway; use 'auto' (it shards when the job has several instances)")
        if self.model_uri is not None and not (isinstance(self.model_uri, str) and self.model_uri.startswith("s3://")):
            raise ValueError(f"model_uri: expected the s3:// URI of an earlier job's model.tar.gz, got {self.model_uri!r}")

    def replace(self, **changes):
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- derived values
    @property
    def spot(self):
        return self.mode == "spot"

    @property
    def max_wait_seconds(self):
        """Spot only: ``max_wait``, by default twice ``max_run``; None in the other modes."""
        if self.mode != "spot":
            return None
        return int(self.max_wait if self.max_wait is not None else 2 * self.max_run)

    @property
    def keep_alive(self):
        """Warm mode only: the warm pool's keep-alive in seconds; None in the other modes."""
        return int(self.keep_alive_seconds) if self.mode == "warm" else None

    @property
    def distribution(self):
        """SDK v2's ``distribution`` (``{"torch_distributed": {"enabled": True}}``) or None."""
        return distribution_for(self.instance_type, self.instance_count, self.distributed)

    @property
    def torchrun(self):
        """Whether train.py runs under torchrun (SDK v3: ``Torchrun()``)."""
        return self.distribution is not None

    @property
    def processes_per_host(self):
        """Processes per instance: the GPUs of the type under torchrun (None when the type is unknown: the
        launcher then counts the GPUs it finds), 1 without torchrun."""
        return gpus_per_instance(self.instance_type) if self.torchrun else 1

    @property
    def train_s3_distribution(self):
        """The train channel's S3DataDistributionType: ``train_distribution``, or for "auto" ``ShardedByS3Key`` when
        the job has several instances and the data are shards (each instance gets its own part of the shard files),
        else ``FullyReplicated``."""
        if self.train_distribution != "auto":
            return self.train_distribution
        return "ShardedByS3Key" if self.instance_count > 1 and self.data_format == "shards" else "FullyReplicated"

    @property
    def channel_inputs(self):
        """``{name: ChannelInput(uri, input_mode, distribution)}`` for each channel, in the channels' order: what both
        builders send per channel. Every channel reads in ``input_mode``; the train channel (or its alias) is
        distributed as ``train_s3_distribution``, every other one ``FullyReplicated``. None when the channels are
        not known yet."""
        if self.channels is None:
            return None
        return {name: ChannelInput(uri, self.input_mode, self.train_s3_distribution
                                   if layout.channel_role(name) == "train" else "FullyReplicated")
                for name, uri in self.channels.items()}

    @property
    def warnings(self):
        """One line for each way the job would pay for hardware it leaves idle or work it may have to redo (the
        notebook prints them; nothing is changed for you)."""
        gpus, out = gpus_per_instance(self.instance_type), []
        if gpus is None and self.distributed == "auto" and self.instance_count == 1:
            out.append(f"{self.instance_type} is not in medimg.job's GPU table: the job runs one process per "
                       "instance; if it has several GPUs set distributed=True")
        if gpus and gpus > 1 and self.distributed is False:
            out.append(f"distributed=False on {self.instance_type}: train.py runs one process on 1 of its {gpus} GPUs; "
                       "set distributed='auto' to use all of them")
        if self.spot and not self.checkpoint_s3_uri:
            out.append("mode='spot' without checkpoint_s3_uri: a job that SageMaker interrupts starts again from its "
                       "first epoch; set checkpoint_s3_uri")
        return out

    @property
    def has_test_channel(self):
        """True when a channel holds the test split (or when the channels are not known yet)."""
        if self.channels is None:
            return True
        return any(layout.channel_role(name) == "test" for name in self.channels)

    @property
    def has_weights_channel(self):
        """True when a channel holds the backbone's weights (``weights``: train.py's pretrained=true reads it)."""
        return any(layout.channel_role(name) == "weights" for name in self.channels or {})

    @property
    def metric_definitions(self):
        """``[{"Name", "Regex"}]`` for the lines train.py logs (code/epoch_log.py), a fresh list each time."""
        return epoch_log.metric_definitions(test=self.has_test_channel,
                                            ordinal=is_true(self.hyperparameters.get("ordinal", False)))

    @property
    def tag_list(self):
        """``[{"Key", "Value"}]`` (values as strings), or None when there are no tags."""
        return [{"Key": k, "Value": v} for k, v in self.tags.items()] if self.tags else None

    @property
    def security(self):
        """The security settings that are set, under their JobSpec names (unset ones keep SDK defaults)."""
        names = ("volume_kms_key", "output_kms_key", "subnets", "security_group_ids", "enable_network_isolation",
                 "encrypt_inter_container_traffic")
        return {n: getattr(self, n) for n in names if getattr(self, n)}

    def for_tuning(self):
        """The job each tuning trial runs: this one without its checkpoint location, which every trial would
        share (and each would resume from another's checkpoints). An interrupted spot trial starts again."""
        return self.replace(checkpoint_s3_uri=None)


# ==================================================================================================
# Hyperparameter tuning
# ==================================================================================================
def tuning_ranges(lr=(1e-4, 1e-2), weight_decay=(1e-5, 0.1), batch_sizes=(64, 128, 256)):
    """The search space, SDK-free: lr and weight decay on a log scale, batch size among a few values.
    ``{name: ("continuous", low, high, scaling) | ("categorical", [values])}``; the builders make their SDK's
    parameter objects from it."""
    return {
        "lr": ("continuous", float(lr[0]), float(lr[1]), "Logarithmic"),
        "weight-decay": ("continuous", float(weight_decay[0]), float(weight_decay[1]), "Logarithmic"),
        "batch-size": ("categorical", [int(b) for b in batch_sizes]),
    }


def range_objects(ranges, continuous, categorical):
    """``tuning_ranges`` as an SDK's parameter objects, given its two classes (SDK v2's ``sagemaker.tuner`` or
    v3's ``sagemaker.core.parameter``: the same constructors)."""
    return {name: (continuous(kind[1], kind[2], scaling_type=kind[3]) if kind[0] == "continuous"
                   else categorical(list(kind[1])))
            for name, kind in ranges.items()}


@dataclass(frozen=True)
class TuningSpec:
    """A hyperparameter tuning job over a JobSpec: maximise ``val_auc``, Bayesian, early stopping "Auto".

    train.py logs ``val_auc`` every epoch and, last, the best epoch's ``val_auc``: SageMaker takes the last
    value a job emits as its objective, so each trial is judged by the model it keeps.
    """
    max_jobs: int = 6
    max_parallel_jobs: int = 2
    early_stopping: str = "Auto"
    base_tuning_job_name: str = None
    ranges: dict = field(default_factory=tuning_ranges)
    objective_metric_name: str = "val_auc"
    objective_type: str = "Maximize"
    strategy: str = "Bayesian"

    def __post_init__(self):
        if self.max_parallel_jobs < 1 or self.max_jobs < self.max_parallel_jobs:
            raise ValueError(f"need 1 <= max_parallel_jobs ({self.max_parallel_jobs}) <= max_jobs ({self.max_jobs})")
        for name, kind in self.ranges.items():
            if kind[0] not in ("continuous", "categorical"):
                raise ValueError(f"range {name!r}: expected ('continuous', low, high, scaling) or "
                                 f"('categorical', values), got {kind!r}")
