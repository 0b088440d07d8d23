"""A fake ``/opt/ml`` for one host, as SageMaker lays it out before the container starts, for both launchers (SDK
v2's toolkit and SDK v3's drivers) and for tests/support/sagemaker_emulator.py: the platform's three config files
(``input/config``), the channels (``input/data/<channel>``, links to local folders), and the output folders
(``output/data``, ``model``), with the last run's success/failure files gone. The hosts of a multi-host run are
loopback addresses, so every host name resolves without DNS.
"""
import json
import os
import shutil

from medimg.container import layout

OPT_ML = "/opt/ml"  # what the work folder stands in for; SDK v3's drivers name it literally (medimg.launch_v3)
MASTER_PORT = 7777  # fixed by the toolkit's torch_distributed runner and by SDK v3's environment.py
JOB_NAME = "local-train"  # TRAINING_JOB_NAME of a local run


def host_names(nodes):
    """Loopback addresses stand in for algo-1..N, so every host name resolves without DNS."""
    return ["algo-1"] if nodes == 1 else [f"127.0.0.{i + 1}" for i in range(nodes)]


def host_base(work, hosts, index):
    """Where host ``index`` of ``hosts`` has its /opt/ml: WORK for the first, WORK/nodes/<host> for the others."""
    return work if index == 0 else os.path.join(work, "nodes", hosts[index])


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


def write_config(base, hyperparameters, channels, hosts, host, access=None):
    """The platform's three files in ``<base>/input/config``: hyperparameters.json (``hyperparameters`` as given:
    the request's string map), inputdataconfig.json (``channels`` in order, each with its ``access``: ``{channel:
    (TrainingInputMode, S3DistributionType)}``, File and FullyReplicated by default) and resourceconfig.json."""
    config = os.path.join(base, "input", "config")
    access = access or {}
    write_json(os.path.join(config, "hyperparameters.json"), hyperparameters)
    write_json(os.path.join(config, "inputdataconfig.json"), {
        ch: {"TrainingInputMode": access.get(ch, ("File",))[0],
             "S3DistributionType": access.get(ch, (None, "FullyReplicated"))[1], "RecordWrapperType": "None"}
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


# ==================================================================================================
# Input modes and S3 distribution
# ==================================================================================================
INPUT_MODES = ("File", "FastFile")  # FastFile's files are the same local files here
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")


def channel_access(channels, input_mode="File", train_distribution="FullyReplicated"):
    """``{channel: (TrainingInputMode, S3DistributionType)}`` of the data channels: ``input_mode`` for each, the
    train channel (or its alias) ``train_distribution``, every other FullyReplicated."""
    return {ch: (input_mode, train_distribution if layout.channel_role(ch) == "train" else "FullyReplicated")
            for ch in channels if layout.channel_role(ch) in layout.CHANNEL_ROLES}


def object_keys(folder):
    """The files under ``folder`` as S3 keys relative to it (``/``-separated), sorted as S3 lists them (by the
    UTF-8 bytes of the key)."""
    keys = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        for name in filenames:
            keys.append(os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/"))
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def host_part(folder, index, count):
    """The keys host ``index`` of ``count`` gets of a ShardedByS3Key channel, as emulated here: the objects sorted
    by key and dealt round robin (host k: the k-th, k+n-th, ... object), so each host gets ``len // n`` or one more,
    "approximately 1/n of the number of S3 objects" (CreateTrainingJob's S3DataSource; AWS does not publish its
    exact assignment, and train.py relies only on each host reading what it was given)."""
    return object_keys(folder)[index::count]


def stage_part(folder, target, index, count):
    """``target`` as a folder of links to host ``index``'s part of ``folder`` (host_part); returns ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    for key in host_part(folder, index, count):
        path = os.path.join(target, *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(folder, *key.split("/"))), path)
    return target


def channel_sources(work, data, channels, access, hosts, index):
    """``{channel: local folder}`` that host ``index`` of ``hosts`` gets: DATA/<channel>, or for a ShardedByS3Key
    channel with several hosts that host's part, staged under WORK/sharded/<host>/<channel>."""
    out = {}
    for ch in channels:
        source = os.path.join(data, ch)
        if len(hosts) > 1 and access.get(ch, ("File", "FullyReplicated"))[1] == "ShardedByS3Key" and \
                os.path.isdir(source):
            source = stage_part(source, os.path.join(work, "sharded", hosts[index], ch), index, len(hosts))
        out[ch] = source
    return out
