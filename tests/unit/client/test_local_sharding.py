"""local_train's emulation of the platform's data access (medimg.opt_ml): inputdataconfig.json with each data
channel's TrainingInputMode and S3DistributionType, and a ShardedByS3Key train channel split across the hosts as
SageMaker does (objects sorted by key, about 1/n each), staged as links."""
import json
import os

from medimg import launch_v2, opt_ml


def files(root, keys):
    for key in keys:
        path = os.path.join(root, *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(key)


def test_a_sharded_channel_is_dealt_by_sorted_key_and_every_object_goes_to_exactly_one_host(tmp_path):
    keys = ["shard-000003.tar", "index.json", "shard-000000.tar", "label_dict.json", "shard-000001.tar",
            "shard-000004.tar", "shard-000002.tar"]
    files(tmp_path / "train", keys)
    parts = [opt_ml.host_part(str(tmp_path / "train"), i, 2) for i in range(2)]
    assert parts == [["index.json", "shard-000000.tar", "shard-000002.tar", "shard-000004.tar"],
                     ["label_dict.json", "shard-000001.tar", "shard-000003.tar"]]  # 5 shards: 3 and 2
    three = [opt_ml.host_part(str(tmp_path / "train"), i, 3) for i in range(3)]
    assert sorted(k for p in three for k in p) == sorted(keys) and {len(p) for p in three} == {2, 3}


def test_each_host_gets_its_part_staged_and_the_config_says_how_each_channel_is_read(tmp_path):
    files(tmp_path / "data" / "train", ["normal/0.png", "normal/1.png", "pneumonia/0.png", "pneumonia/1.png"])
    files(tmp_path / "data" / "val", ["normal/0.png", "pneumonia/0.png"])
    channels = ["train", "val"]
    access = opt_ml.channel_access(channels, "FastFile", "ShardedByS3Key")
    assert access == {"train": ("FastFile", "ShardedByS3Key"), "val": ("FastFile", "FullyReplicated")}
    hosts = opt_ml.host_names(2)
    seen = []
    for i, host in enumerate(hosts):
        base = opt_ml.host_base(str(tmp_path / "work"), hosts, i)
        sources = opt_ml.channel_sources(str(tmp_path / "work"), str(tmp_path / "data"), channels, access, hosts, i)
        launch_v2.stage_base_dir(base, str(tmp_path / "data"), channels, {}, hosts, host, access, sources)
        train = os.path.join(base, "input", "data", "train")
        seen.append(sorted(opt_ml.object_keys(train)))
        assert opt_ml.object_keys(os.path.join(base, "input", "data", "val")) == ["normal/0.png", "pneumonia/0.png"]
        with open(os.path.join(base, "input", "config", "inputdataconfig.json")) as fh:
            assert json.load(fh) == {
                "train": {"TrainingInputMode": "FastFile", "S3DistributionType": "ShardedByS3Key",
                          "RecordWrapperType": "None"},
                "val": {"TrainingInputMode": "FastFile", "S3DistributionType": "FullyReplicated",
                        "RecordWrapperType": "None"}}
    assert seen == [["normal/0.png", "pneumonia/0.png"], ["normal/1.png", "pneumonia/1.png"]]


def test_one_host_or_a_replicated_channel_gets_the_whole_folder(tmp_path):
    files(tmp_path / "data" / "train", ["a/0.png", "b/0.png"])
    for hosts, dist in ((["algo-1"], "ShardedByS3Key"), (opt_ml.host_names(2), "FullyReplicated")):
        access = opt_ml.channel_access(["train"], "File", dist)
        sources = opt_ml.channel_sources(str(tmp_path / "w"), str(tmp_path / "data"), ["train"], access, hosts, 0)
        assert sources == {"train": str(tmp_path / "data" / "train")}


def test_a_second_local_distributed_job_waits_for_the_first_and_says_why(tmp_path, monkeypatch, capsys):
    """Both launchers fix torchrun's port, so two local distributed jobs at once would share a rendezvous and hang:
    the second waits, with one line naming the port, until the first ends; single-process jobs never wait."""
    import fcntl
    import tempfile
    import threading

    from medimg import local_train

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    with local_train.master_port(False):
        assert os.listdir(tmp_path) == []  # no lock taken
    lock = tmp_path / f"medimg-local-train-port-{opt_ml.MASTER_PORT}.lock"
    first = open(lock, "a")
    fcntl.flock(first, fcntl.LOCK_EX)  # another job holds the port
    entered = threading.Event()

    def second():
        with local_train.master_port(True):
            entered.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not entered.wait(0.5), "the second job ran while the first held the port"
    assert f"port {opt_ml.MASTER_PORT}" in capsys.readouterr().err
    first.close()  # the first job ends
    assert entered.wait(10)
    thread.join()
    with local_train.master_port(True):  # and it gave the port back
        pass
