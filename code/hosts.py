"""What this process was given, and whether the job uses it: the hosts (``SM_HOSTS``, ``SM_CURRENT_HOST``), the GPUs
it can see, the processes torchrun started on its host (``LOCAL_WORLD_SIZE``), and each channel's S3 distribution
(``SM_INPUT_DATA_CONFIG``'s ``S3DistributionType``, which the training toolkit and SDK v3's drivers both hand over
from the platform's inputdataconfig.json).

With the train channel ``ShardedByS3Key``, SageMaker gives each host about 1/n of its objects: each host trains on
what it was given, the ranks of a host split only that (``TrainPart``), and every rank takes the same number of
steps (the largest part; the smaller ones wrap around their own images), so no host's data is dropped and no
collective waits. val and test must stay ``FullyReplicated``: every host judges the same images.
"""
import json
import logging
import math
import os

import distributed
import layout
from errors import ConfigError

logger = logging.getLogger("train")

SHARDED = "ShardedByS3Key"


def distributions(environ=None):
    """``{split role: S3DistributionType}`` of the data channels the launcher describes ({} without it)."""
    environ = os.environ if environ is None else environ
    try:
        config = json.loads(environ.get("SM_INPUT_DATA_CONFIG") or "{}")
    except ValueError:
        return {}  # hyperparameters.input_modes says what is wrong with it
    out = {}
    for name, channel in (config.items() if isinstance(config, dict) else ()):
        role = layout.channel_role(name)
        if role in layout.CHANNEL_ROLES and isinstance(channel, dict):
            out[role] = (name, channel.get("S3DistributionType") or "FullyReplicated")
    return out


def hosts(environ=None):
    """(this host, every host) as the launcher names them; one host ("local") without it."""
    environ = os.environ if environ is None else environ
    text = environ.get("SM_HOSTS") or "[]"
    try:
        names = json.loads(text)
    except ValueError:
        names = [h for h in text.split(",") if h]
    names = [str(h) for h in names] if isinstance(names, list) else []
    current = environ.get("SM_CURRENT_HOST") or (names[0] if names else "local")
    return current, names or [current]


def check_channels(args, environ=None):
    """With several hosts, a sharded val or test channel, or a sharded train channel without a val channel, is a
    ConfigError: every host would judge (and choose the epoch) on another split. Returns whether each host holds
    its own part of train (ShardedByS3Key and several hosts; one host gets every object anyway)."""
    given = distributions(environ)
    if len(hosts(environ)[1]) < 2:
        return False
    for role in ("val", "test"):
        if role in given and given[role][1] == SHARDED:
            raise ConfigError(f"the {role} channel {given[role][0]!r} is {SHARDED}: each host would judge on "
                              f"another part of it; give it S3DistributionType FullyReplicated (only the train "
                              "channel is sharded)")
    sharded = given.get("train", (None, None))[1] == SHARDED
    if sharded and not getattr(args, "val", None):
        raise ConfigError(f"the train channel is {SHARDED} and there is no val channel: each host would hold its own "
                          "val split out of its part; give a val channel (FullyReplicated)")
    return sharded


def check_hardware(args, dist_info, environ=None, gpus=None):
    """One line each for hardware the job pays for and would not use: several hosts without distribution (an error:
    each would train its own copy) and GPUs no process uses (a warning)."""
    environ = os.environ if environ is None else environ
    current, names = hosts(environ)
    if len(names) > 1 and not dist_info.enabled:
        raise ConfigError(f"this job has {len(names)} hosts {names} but train.py runs as one process on each: every "
                          "host would train its own copy of the model; enable distribution "
                          "(distribution={'torch_distributed': {'enabled': True}} in SDK v2, "
                          "distributed=Torchrun() in SDK v3) or use one instance")
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    local = int(environ.get("LOCAL_WORLD_SIZE", "1")) if dist_info.enabled else 1
    if gpus > local and getattr(args, "device", "auto") != "cpu" and dist_info.local_rank == 0:  # once per host
        logger.warning("%d GPUs are visible on %s but %d training process(es) run there: %d GPU(s) sit idle; enable "
                       "torch_distributed (SDK v2) or Torchrun() (SDK v3), which start one process per GPU",
                       gpus, current, local, gpus - local)


class TrainPart:
    """This rank's part of a train split that each host holds a part of (ShardedByS3Key): ``replicas`` and ``rank``
    within the host, ``per_rank`` (the number of images every rank takes per epoch: the largest part's) and
    ``by_host`` ({host: images})."""

    def __init__(self, replicas, rank, per_rank, by_host):
        self.replicas, self.rank, self.per_rank, self.by_host = replicas, rank, per_rank, by_host


def train_part(n_images, classes, dist_info, environ=None):
    """A TrainPart for a sharded train split of ``n_images`` on this host (a collective: every rank calls it). The
    hosts must agree on the class names (``classes``: list); a mismatch is a ConfigError naming both."""
    environ = os.environ if environ is None else environ
    current, _ = hosts(environ)
    local = int(environ.get("LOCAL_WORLD_SIZE", "1")) if dist_info.enabled else 1
    local_rank = dist_info.local_rank if dist_info.enabled else 0
    parts = distributed.gather_objects((current, local_rank, n_images, list(classes)), dist_info)
    for host, _, _, names in parts:
        if names != list(classes):
            raise ConfigError(f"the hosts disagree on the classes: {current} has {list(classes)}, {host} has {names} "
                              "(its part of the sharded train channel named them); give the label-dict "
                              "hyperparameter, or shards, whose headers carry the names to every host")
    by_host = {host: n for host, rank, n, _ in parts if rank == 0}
    per_rank = max(math.ceil(n / local) for _, _, n, _ in parts)
    return TrainPart(local, local_rank, per_rank, by_host)


def images_by_host(n_images, dist_info, environ=None):
    """``{host: images}`` a replicated train split gives each host's ranks (DistributedSampler's share of each rank,
    summed by host; a collective)."""
    current, _ = hosts(environ)
    share = len(range(dist_info.rank, n_images, dist_info.world_size)) if dist_info.enabled else n_images
    out = {}
    for host, n in distributed.gather_objects((current, share), dist_info):
        out[host] = out.get(host, 0) + n
    return out
