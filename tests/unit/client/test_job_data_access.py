"""medimg.job's data access rule (input mode, S3 distribution per channel) and its idle-hardware warnings; SDK v2's
TrainingInput objects built from it. What the SDKs send: tests/system/test_sdk_input_modes.py."""
import pytest

from medimg import sdk_v2
from medimg.job import ChannelInput, JobSpec

BASE = dict(role="arn:aws:iam::123456789012:role/R", hyperparameters={"epochs": 1}, output_path="s3://b/p/jobs",
            code_location="s3://b/p/code", base_job_name="medimg", mode="on-demand")
CHANNELS = {"train": "s3://b/d/train/", "val": "s3://b/d/val/", "test": "s3://b/d/test/"}


def spec(**overrides):
    return JobSpec(**dict(BASE, **dict({"channels": CHANNELS}, **overrides)))


def distributions(s):
    return {name: c.distribution for name, c in s.channel_inputs.items()}


def test_defaults_are_file_and_fully_replicated():
    s = spec()
    assert (s.input_mode, s.data_format, s.train_distribution) == ("File", "images", "auto")
    assert s.channel_inputs == {name: ChannelInput(uri, "File", "FullyReplicated") for name, uri in CHANNELS.items()}
    assert JobSpec(**BASE).channel_inputs is None  # channels given later


@pytest.mark.parametrize("count,data_format,train_distribution,train", [
    (1, "images", "auto", "FullyReplicated"),
    (1, "shards", "auto", "FullyReplicated"),  # one instance: nothing to share out
    (2, "images", "auto", "FullyReplicated"),  # class folders: every instance needs every file
    (2, "shards", "auto", "ShardedByS3Key"),
    (4, "shards", "auto", "ShardedByS3Key"),
    (2, "shards", "FullyReplicated", "FullyReplicated"),  # every instance downloads all shards, if you insist
    (2, "shards", "ShardedByS3Key", "ShardedByS3Key"),
])
def test_only_the_train_channel_of_a_multi_instance_shard_job_is_sharded(count, data_format, train_distribution,
                                                                          train):
    s = spec(instance_count=count, data_format=data_format, train_distribution=train_distribution,
             input_mode="FastFile")
    assert s.train_s3_distribution == train
    assert distributions(s) == {"train": train, "val": "FullyReplicated", "test": "FullyReplicated"}
    assert {c.input_mode for c in s.channel_inputs.values()} == {"FastFile"}


def test_aliases_of_train_are_the_train_channel_and_others_stay_replicated():
    s = spec(channels={"training": "s3://b/t/", "validation": "s3://b/v/", "testing": "s3://b/x/"},
             instance_count=2, data_format="shards")
    assert distributions(s) == {"training": "ShardedByS3Key", "validation": "FullyReplicated",
                                "testing": "FullyReplicated"}
    assert list(s.channel_inputs) == ["training", "validation", "testing"]  # the channels' order


@pytest.mark.parametrize("overrides,message", [
    (dict(input_mode="Pipe"), r"input_mode='Pipe' hands each channel over as a stream through a named pipe, which "
                              r"train.py cannot read .*use 'File' or 'FastFile'"),
    (dict(input_mode="fastfile"), r"input_mode must be 'File' or 'FastFile' \(SageMaker's spelling\), got 'fastfile'"),
    (dict(input_mode=None), r"input_mode must be 'File' or 'FastFile'"),
    (dict(data_format="npz"), r"data_format must be 'images' or 'shards', got 'npz'"),
    (dict(train_distribution="Sharded"), r"train_distribution must be 'auto', 'FullyReplicated' or 'ShardedByS3Key'"),
    (dict(instance_count=2, train_distribution="ShardedByS3Key"),
     r"ShardedByS3Key' gives each instance about 1/n of the train channel's files, but class folders .* --shards"),
    (dict(data_format="shards", train_distribution="ShardedByS3Key"),
     r"ShardedByS3Key' with instance_count=1: the one instance gets every file anyway"),
])
def test_refusals_say_what_to_change(overrides, message):
    with pytest.raises(ValueError, match=message):
        spec(**overrides)
    with pytest.raises(ValueError, match=message):  # replace() checks again
        spec().replace(**overrides)


def test_tuning_trials_read_as_the_job_does():
    s = spec(instance_count=2, data_format="shards", input_mode="FastFile", checkpoint_s3_uri="s3://b/c")
    assert s.for_tuning().channel_inputs == s.channel_inputs


# ---------------------------------------------------------------- idle hardware
@pytest.mark.parametrize("overrides,warning", [
    (dict(instance_type="ml.x9.future"), "ml.x9.future is not in medimg.job's GPU table: the job runs one process "
                                         "per instance; if it has several GPUs set distributed=True"),
    (dict(instance_type="ml.g5.12xlarge", distributed=False),
     "distributed=False on ml.g5.12xlarge: train.py runs one process on 1 of its 4 GPUs; set distributed='auto' to "
     "use all of them"),
    (dict(mode="spot"), "mode='spot' without checkpoint_s3_uri: a job that SageMaker interrupts starts again from "
                        "its first epoch; set checkpoint_s3_uri"),
])
def test_a_job_that_would_leave_hardware_idle_says_so_in_one_line(overrides, warning):
    assert spec(**overrides).warnings == [warning]


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(instance_type="ml.g5.12xlarge"),  # torchrun on its 4 GPUs
    dict(instance_type="ml.x9.future", distributed=True),  # the launcher counts the GPUs
    dict(instance_type="ml.x9.future", instance_count=2),  # torchrun: the launcher counts the GPUs
    dict(instance_type="ml.m5.xlarge"),  # no GPU to leave idle
    dict(instance_type="ml.g5.xlarge", distributed=False),  # its one GPU is used
    dict(mode="spot", checkpoint_s3_uri="s3://b/c"),
])
def test_jobs_that_use_their_hardware_have_no_warning(overrides):
    assert spec(**overrides).warnings == []


def test_several_instances_without_distribution_stay_an_error():
    with pytest.raises(ValueError, match="instance_count=2 without distribution"):
        spec(instance_type="ml.x9.future", instance_count=2, distributed=False)


# ---------------------------------------------------------------- SDK v2's objects (no AWS)
def test_sdk_v2_sends_each_channel_as_a_training_input_and_the_job_mode():
    s = spec(instance_count=2, data_format="shards", input_mode="FastFile")
    inputs = sdk_v2.training_inputs(s)
    assert isinstance(inputs, dict)  # never a lone TrainingInput, whose mode the SDK would make the job's
    assert {name: i.config for name, i in inputs.items()} == {
        name: {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": c.uri,
                                               "S3DataDistributionType": c.distribution}},
               "InputMode": "FastFile"} for name, c in s.channel_inputs.items()}
    assert sdk_v2.estimator_kwargs(s)["input_mode"] == "FastFile"
    assert sdk_v2.estimator_kwargs(spec())["input_mode"] == "File"
    with pytest.raises(ValueError, match="the job needs its channels"):
        sdk_v2.training_inputs(JobSpec(**BASE))


def test_a_pipelines_channels_keep_their_mode_and_distribution_with_the_parameters_uris():
    """The Pipeline's training step passes its parameters as the channels' URIs; the mode and distribution stay the
    spec's (before, the step sent plain URIs: File and FullyReplicated whatever the spec said)."""
    from sagemaker.workflow.parameters import ParameterString

    s = spec(instance_count=2, data_format="shards", input_mode="FastFile")
    uris = {name: ParameterString(name=f"{name}_uri", default_value=uri) for name, uri in CHANNELS.items()}
    inputs = sdk_v2.training_inputs(s, uris)
    for name, c in s.channel_inputs.items():
        source = inputs[name].config["DataSource"]["S3DataSource"]
        assert source["S3Uri"] is uris[name]
        assert (inputs[name].config["InputMode"], source["S3DataDistributionType"]) == ("FastFile", c.distribution)
    assert inputs["train"].config["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "ShardedByS3Key"
