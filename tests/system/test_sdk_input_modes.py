"""Input modes and S3 distribution as both SDKs really send them: medimg.sdk_v2 in this process and medimg.sdk_v3 in
a .venv-sdk3 process (tests/support/sdk3_probe.py start) start training and tuning jobs against the emulator (moto on
127.0.0.1, running nothing), which records the raw CreateTrainingJob and CreateHyperParameterTuningJob requests.

The rule (medimg.job.JobSpec.channel_inputs): every data channel in the job's input mode (File or FastFile), the
train channel ShardedByS3Key when the job has several instances and the data are shards, val and test (and every
other channel) FullyReplicated; AlgorithmSpecification.TrainingInputMode is the job's input mode."""
import json
import os
import subprocess

import pytest

from medimg import sdk_v2
from medimg.job import JobSpec, TuningSpec
from conftest import CODE, ROOT
from sagemaker_emulator import SageMakerEmulator

pytestmark = pytest.mark.slow  # the emulator and an SDK v3 process

SDK3_PYTHON = os.path.join(ROOT, ".venv-sdk3", "bin", "python")
ROLE = "arn:aws:iam::123456789012:role/R"
BUCKET = "modes-bucket"
DATA = f"s3://{BUCKET}/p/data/d-0123456789ab"
CHANNELS = {"train": f"{DATA}/train/", "val": f"{DATA}/val/", "test": f"{DATA}/test/"}
ALIASES = {"training": f"{DATA}/train/", "validation": f"{DATA}/val/"}
# case: (JobSpec changes, {channel: (InputMode, S3DataDistributionType)}, TrainingInputMode)
CASES = {
    "default": (dict(), {c: ("File", "FullyReplicated") for c in CHANNELS}, "File"),
    "sharded": (dict(instance_count=2, data_format="shards", input_mode="FastFile"),
                {"train": ("FastFile", "ShardedByS3Key"), "val": ("FastFile", "FullyReplicated"),
                 "test": ("FastFile", "FullyReplicated")}, "FastFile"),
    "aliases": (dict(instance_count=3, data_format="shards", channels=ALIASES),
                {"training": ("File", "ShardedByS3Key"), "validation": ("File", "FullyReplicated")}, "File"),
    "images": (dict(instance_count=2, input_mode="FastFile"),  # class folders: every instance needs every file
               {c: ("FastFile", "FullyReplicated") for c in CHANNELS}, "FastFile"),
    "replicated": (dict(instance_count=2, data_format="shards", train_distribution="FullyReplicated"),
                   {c: ("File", "FullyReplicated") for c in CHANNELS}, "File"),
    "one_host": (dict(data_format="shards", input_mode="FastFile"),  # one instance gets everything anyway
                 {c: ("FastFile", "FullyReplicated") for c in CHANNELS}, "FastFile"),
}
TUNED = "sharded"


def spec_kwargs(case, sdk):
    changes = CASES[case][0]
    return dict(role=ROLE, hyperparameters={"epochs": 1}, output_path=f"s3://{BUCKET}/p/jobs",
                code_location=f"s3://{BUCKET}/p/code", base_job_name=f"{sdk}-{case.replace('_', '-')}",
                source_dir=CODE, mode="on-demand", **dict({"channels": CHANNELS}, **changes))


@pytest.fixture(scope="module")
def sent(tmp_path_factory):
    """{sdk: {"jobs": {case: request}, "tuning": request}} as the emulator recorded them."""
    assert os.path.exists(SDK3_PYTHON), f"{SDK3_PYTHON} is missing: make install builds .venv-sdk3"
    tmp = tmp_path_factory.mktemp("input-modes")
    with SageMakerEmulator(tmp / "emulator", run_jobs=False) as emu:
        saved = os.environ.get("AWS_ENDPOINT_URL")
        os.environ["AWS_ENDPOINT_URL"] = emu.url  # for SDK v2's clients in this process
        try:
            import boto3

            session = sdk_v2.make_session(boto3.Session(region_name="us-east-1"), default_bucket=BUCKET)
            session.default_bucket()  # creates it in moto
            v2 = {"jobs": {case: sdk_v2.start_job(JobSpec(**spec_kwargs(case, "v2")), session)[1] for case in CASES},
                  "tuning": sdk_v2.start_tuning(JobSpec(**spec_kwargs(TUNED, "v2")), session, TuningSpec(max_jobs=2))[1]}
        finally:
            if saved is None:
                os.environ.pop("AWS_ENDPOINT_URL", None)
            else:
                os.environ["AWS_ENDPOINT_URL"] = saved
        params = {"bucket": BUCKET, "jobs": {case: spec_kwargs(case, "v3") for case in CASES},
                  "tunings": {TUNED: [spec_kwargs(TUNED, "v3"), {"max_jobs": 2}]}}
        probe = subprocess.run([SDK3_PYTHON, os.path.join(ROOT, "tests", "support", "sdk3_probe.py"), "start"], cwd=ROOT,
                               input=json.dumps(params), env=emu.env(), capture_output=True, text=True, timeout=300)
        assert probe.returncode == 0, probe.stderr[-5000:]
        v3 = json.loads(probe.stdout)
        v3 = {"jobs": v3["jobs"], "tuning": v3["tunings"][TUNED]}
        training = {r["TrainingJobName"]: r for r in emu.training_requests}
        tuning = {r["HyperParameterTuningJobName"]: r for r in emu.tuning_requests}
    return {sdk: {"jobs": {case: training[name] for case, name in names["jobs"].items()},
                  "tuning": tuning[names["tuning"]]} for sdk, names in (("v2", v2), ("v3", v3))}


def data_channels(input_data_config):
    """{channel: (InputMode, S3DataDistributionType)} of the data channels (not SDK v3's code and sm_drivers)."""
    return {c["ChannelName"]: (c.get("InputMode"), c["DataSource"]["S3DataSource"]["S3DataDistributionType"])
            for c in input_data_config if c["ChannelName"] not in ("code", "sm_drivers")}


@pytest.mark.parametrize("sdk", ["v2", "v3"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_channel_carries_its_input_mode_and_distribution(sent, sdk, case):
    request = sent[sdk]["jobs"][case]
    _, channels, job_mode = CASES[case]
    assert data_channels(request["InputDataConfig"]) == channels
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == job_mode
    uris = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert {c: uris[c] for c in channels} == JobSpec(**spec_kwargs(case, sdk)).channels
    assert request["ResourceConfig"]["InstanceCount"] == JobSpec(**spec_kwargs(case, sdk)).instance_count


def test_sdk_v3s_own_channels_stay_file_and_replicated(sent):
    """ModelTrainer's code and drivers channels are its own (InputData: File, FullyReplicated) whatever the data's
    mode: every instance needs all of them."""
    request = sent["v3"]["jobs"]["sharded"]
    own = {c["ChannelName"]: (c["InputMode"], c["DataSource"]["S3DataSource"]["S3DataDistributionType"])
           for c in request["InputDataConfig"] if c["ChannelName"] in ("code", "sm_drivers")}
    assert own == {"code": ("File", "FullyReplicated"), "sm_drivers": ("File", "FullyReplicated")}


@pytest.mark.parametrize("sdk", ["v2", "v3"])
def test_the_tuning_jobs_trials_read_as_the_job_does(sent, sdk):
    definition = sent[sdk]["tuning"]["TrainingJobDefinition"]
    assert data_channels(definition["InputDataConfig"]) == CASES[TUNED][1]
    assert definition["AlgorithmSpecification"]["TrainingInputMode"] == "FastFile"
    resources = definition.get("ResourceConfig") or definition["HyperParameterTuningResourceConfig"]  # v3, v2
    assert resources["InstanceCount"] == 2
