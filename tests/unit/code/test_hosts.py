"""Each host its own part, every GPU and host used (code/hosts.py, epoch_loop's indices), from a fake launcher
environment: a sharded train channel is split only among a host's ranks, every rank takes the same steps, a
sharded val/test is refused, several hosts without distribution and idle GPUs are said in one line each."""
import json
import logging
import types

import pytest

import distributed
import epoch_loop
import hosts
from errors import ConfigError
from train_args import args_with


TWO = ("algo-1", "algo-2")


def env(distributions=None, host_list=("algo-1",), current="algo-1", local_world=1):
    config = {name: {"TrainingInputMode": "FastFile", "S3DistributionType": dist, "RecordWrapperType": "None"}
              for name, dist in (distributions or {}).items()}
    return {"SM_INPUT_DATA_CONFIG": json.dumps(config), "SM_HOSTS": json.dumps(list(host_list)),
            "SM_CURRENT_HOST": current, "LOCAL_WORLD_SIZE": str(local_world)}


@pytest.mark.parametrize("channel", ["val", "validation", "test", "testing"])
def test_a_sharded_val_or_test_channel_is_refused_naming_it(channel):
    with pytest.raises(ConfigError, match=rf"the (val|test) channel '{channel}' is ShardedByS3Key: each host would "
                                          r"judge on another part of it; give it S3DistributionType FullyReplicated"):
        hosts.check_channels(args_with(val="v"), env({"train": "ShardedByS3Key", channel: "ShardedByS3Key"},
                                                     host_list=TWO))


def test_a_sharded_train_channel_needs_a_val_channel_and_is_recognised_under_its_alias():
    with pytest.raises(ConfigError, match=r"train channel is ShardedByS3Key and there is no val channel"):
        hosts.check_channels(args_with(val=None), env({"training": "ShardedByS3Key"}, host_list=TWO))
    assert hosts.check_channels(args_with(val="v"), env({"training": "ShardedByS3Key", "val": "FullyReplicated"},
                                                        host_list=TWO))
    assert not hosts.check_channels(args_with(val=None), env({"train": "FullyReplicated"}, host_list=TWO))
    assert not hosts.check_channels(args_with(val=None), {})  # train.py by hand: nothing assumed
    # one host gets every object of a sharded channel: nothing to split, val may be held out
    assert not hosts.check_channels(args_with(val=None), env({"train": "ShardedByS3Key", "val": "ShardedByS3Key"}))


def test_several_hosts_without_distribution_is_an_error_with_what_to_enable():
    with pytest.raises(ConfigError, match=r"this job has 2 hosts \['algo-1', 'algo-2'\] but train.py runs as one "
                                          r"process on each: .*torch_distributed.*Torchrun\(\)"):
        hosts.check_hardware(args_with(), distributed.DistInfo(), env(host_list=("algo-1", "algo-2")), gpus=0)
    hosts.check_hardware(args_with(), distributed.DistInfo(0, 0, 2), env(host_list=("algo-1", "algo-2")), gpus=0)


@pytest.mark.parametrize("gpus,local_world,dist,idle", [(4, 1, distributed.DistInfo(), 3),
                                                         (4, 4, distributed.DistInfo(0, 0, 4), 0),
                                                         (8, 2, distributed.DistInfo(0, 0, 4), 6),
                                                         (1, 1, distributed.DistInfo(), 0)])
def test_gpus_no_process_uses_are_said_in_one_warning(gpus, local_world, dist, idle, caplog):
    with caplog.at_level(logging.WARNING, logger="train"):
        hosts.check_hardware(args_with(), dist, env(local_world=local_world), gpus=gpus)
    lines = [r.getMessage() for r in caplog.records]
    if idle:
        assert lines == [f"{gpus} GPUs are visible on algo-1 but {local_world} training process(es) run there: {idle} "
                         "GPU(s) sit idle; enable torch_distributed (SDK v2) or Torchrun() (SDK v3), which start one "
                         "process per GPU"]
    else:
        assert lines == []


def fake_gather(parts):
    return lambda obj, dist_info: parts


def test_the_largest_part_sets_every_ranks_count_and_hosts_are_summed(monkeypatch):
    # two hosts of two ranks: algo-1 holds 48 images, algo-2 holds 32 (5 shards dealt to 2 hosts)
    parts = [("algo-1", 0, 48, ["a", "b"]), ("algo-1", 1, 48, ["a", "b"]), ("algo-2", 0, 32, ["a", "b"]),
             ("algo-2", 1, 32, ["a", "b"])]
    monkeypatch.setattr(distributed, "gather_objects", fake_gather(parts))
    part = hosts.train_part(32, ["a", "b"], distributed.DistInfo(3, 1, 4), env(current="algo-2", local_world=2))
    assert (part.replicas, part.rank, part.per_rank, part.by_host) == (2, 1, 24, {"algo-1": 48, "algo-2": 32})


def test_hosts_that_disagree_on_the_classes_are_refused_in_one_line(monkeypatch):
    parts = [("algo-1", 0, 40, ["normal", "pneumonia"]), ("algo-2", 0, 40, ["effusion", "normal"])]
    monkeypatch.setattr(distributed, "gather_objects", fake_gather(parts))
    with pytest.raises(ConfigError, match=r"the hosts disagree on the classes: algo-1 has \['normal', 'pneumonia'\], "
                                          r"algo-2 has \['effusion', 'normal'\] .*label-dict hyperparameter, or shards"):
        hosts.train_part(40, ["normal", "pneumonia"], distributed.DistInfo(0, 0, 2), env(host_list=("algo-1",
                                                                                                  "algo-2")))


def test_a_replicated_split_is_shared_out_by_rank_and_summed_by_host(monkeypatch):
    monkeypatch.setattr(distributed, "gather_objects", fake_gather([("h1", 21), ("h1", 20), ("h2", 20), ("h2", 20)]))
    assert hosts.images_by_host(81, distributed.DistInfo(0, 0, 4), env(current="h1")) == {"h1": 41, "h2": 40}
    monkeypatch.undo()
    assert hosts.images_by_host(81, distributed.DistInfo(), {}) == {"local": 81}


@pytest.mark.parametrize("n,replicas,per_rank", [(48, 2, 24), (32, 2, 24), (5, 2, 24), (7, 1, 24)])
def test_each_rank_takes_the_largest_parts_count_from_its_own_hosts_images(n, replicas, per_rank):
    taken = set()
    for rank in range(replicas):
        trainer = types.SimpleNamespace(
            data=types.SimpleNamespace(train=range(n), train_part=hosts.TrainPart(replicas, rank, per_rank, {})),
            dist=distributed.DistInfo(rank + 2, rank, 4), args=types.SimpleNamespace(seed=0))
        got = epoch_loop.EpochLoop(trainer).indices(epoch=1)
        assert len(got) == per_rank and set(got) <= set(range(n))  # the same steps; only this host's images
        taken |= set(got)
    assert taken == set(range(n))  # the host's ranks together take every image of its part: none dropped
