"""Where a job's model starts, from the client: the backbone's ImageNet weights staged as the job's ``weights``
channel, and an earlier job's model.tar.gz as its ``model`` channel.

A job with ``enable_network_isolation=True`` (or in a VPC without a route out) cannot download ImageNet weights
when it starts. The notebook (Studio has internet where the job has none) fetches torchvision's file here through
torchvision's own cache (``<TORCH_HOME>/hub/checkpoints``, downloaded there when missing, with torch.hub's hash
check), runs on it the checks the job will run (code/weights_channel.py, loaded by path: the SHA-256 in
torchvision's file name, ``torch.load(weights_only=True)``, keys and shapes), and uploads it once per content to
``s3://<bucket>/<prefix>/weights/<first 16 hex of its SHA-256>/<file name>``; the job then gets that object as its
``weights`` channel and never touches the network::

    path = weights.local_weights("resnet18")                           # or local_weights("resnet18", "my.pth")
    uri = weights.upload_once(s3, path, f"{S3_BASE}/weights")
    spec = JobSpec(..., channels={**inputs, "weights": uri})

``initial_model_uri`` turns an earlier training job's name into its model.tar.gz URI (``JobSpec(model_uri=...)``,
the ``model`` channel).
"""
import os
import re
import shutil

from medimg import container
from medimg.s3_data import file_sha256
from medimg.job import is_true

HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX
STAGE_CHOICES = ("auto", False)


def torchvision_weights(model):
    """(URL, file name) of torchvision's default ImageNet weights for the registered architecture ``model``."""
    model_def = container.load("model_def")
    if model not in model_def.TORCHVISION:
        raise ValueError(f"model={model} has no ImageNet weights; pretrained needs one of "
                         f"{sorted(model_def.TORCHVISION)}")
    return model_def.weights_enum(model).DEFAULT.url, model_def.weights_file_name(model)


def fetch(model, hub_dir=None):
    """torchvision's weights file for ``model``: from torch.hub's cache (``hub_dir``, default ``torch.hub.get_dir()``,
    i.e. ``$TORCH_HOME/hub``), downloaded into it when missing (torch.hub checks the download's hash). Returns its
    path."""
    import torch.hub

    url, name = torchvision_weights(model)
    folder = os.path.join(hub_dir or torch.hub.get_dir(), "checkpoints")
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        torch.hub.download_url_to_file(url, path, hash_prefix=HASH_REGEX.search(name).group(1), progress=False)
    return path


def local_weights(model, weights_file=None, hub_dir=None):
    """The weights file to stage for ``model`` (``weights_file``, else torchvision's: ``fetch``), checked as the job
    will check it (code/weights_channel.py's ``check_file``: a torchvision name's SHA-256, a state dict of tensors
    only, keys and shapes); its ConfigError, one line, when the job would refuse it."""
    path = os.path.abspath(weights_file) if weights_file else fetch(model, hub_dir)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights_file {weights_file}: no such file")
    container.load("weights_channel").check_file(path, model)
    return path


def upload_once(s3, path, s3_prefix_uri, *, kms_key=None, log=print):
    """Upload the file ``path`` to ``<s3_prefix_uri>/<first 16 hex of its SHA-256>/<its name>`` unless an object of
    its size is already there (the key names the content). Returns the object's URI: the weights channel."""
    from medimg.s3_data import split_s3_uri

    digest = file_sha256(path)
    bucket, prefix = split_s3_uri(s3_prefix_uri.rstrip("/") + "/")
    key = f"{prefix}{digest[:16]}/{os.path.basename(path)}"
    uri = f"s3://{bucket}/{key}"
    try:
        if s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == os.path.getsize(path):
            log(f"weights already in S3: {uri}")
            return uri
    except Exception as exc:  # noqa: BLE001 - not there (404), or not readable: upload
        if getattr(exc, "response", {}).get("Error", {}).get("Code") not in ("404", "NoSuchKey", "403",
                                                                              "AccessDenied"):
            raise
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
    s3.upload_file(path, bucket, key, ExtraArgs=dict(extra, Metadata={"sha256": digest}))
    log(f"uploaded {os.path.basename(path)} ({os.path.getsize(path) / 1e6:.1f} MB) to {uri}")
    return uri


def should_stage(stage_weights, hyperparameters, initial_model=None):
    """The notebook's ``stage_weights``: "auto" stages the weights when ``pretrained`` is on and the job does not start
    from an earlier model (whose backbone it already holds); False never (the job then downloads them, which needs
    internet). ValueError for another value."""
    if stage_weights not in STAGE_CHOICES:
        raise ValueError(f"stage_weights must be one of {STAGE_CHOICES}, got {stage_weights!r}")
    return stage_weights == "auto" and is_true(hyperparameters.get("pretrained", False)) and not initial_model


def initial_model_uri(sm, initial_model):
    """An earlier model as the model channel's URI: ``initial_model`` is an ``s3://.../model.tar.gz`` URI or the name
    of a completed training job (its ModelArtifacts)."""
    if initial_model.startswith("s3://"):
        return initial_model
    job = sm.describe_training_job(TrainingJobName=initial_model)
    if job["TrainingJobStatus"] != "Completed":
        raise ValueError(f"initial_model: the training job {initial_model} is {job['TrainingJobStatus']}, not "
                         "Completed; give a completed job or a model.tar.gz URI")
    return job["ModelArtifacts"]["S3ModelArtifacts"]


def add_to_local_data(data_dir, *, weights_path=None, model_tar=None):
    """A local data folder (the smoke test's) with the job's start channels as folders beside its splits:
    ``weights/<file>`` and ``model/model.tar.gz``, so that the local run starts as the job will."""
    for channel, path in (("weights", weights_path), ("model", model_tar)):
        if path:
            os.makedirs(os.path.join(data_dir, channel), exist_ok=True)
            shutil.copyfile(path, os.path.join(data_dir, channel, os.path.basename(path)))
    return data_dir
