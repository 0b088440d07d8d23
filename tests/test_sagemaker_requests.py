"""What the SageMaker SDK really sends for the notebook's other settings (warm pool, distribution, security),
captured by the emulator on 127.0.0.1; and a job that fails for real, reported by its FailureReason."""
import json
import os

import pytest

from medimg import job_config
from medimg import jobs
from conftest import CODE, make_dataset
from sagemaker_emulator import SageMakerEmulator

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

ROLE = "arn:aws:iam::123456789012:role/R"
BUCKET = "requests-bucket"


@pytest.fixture(scope="module")
def sdk(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("requests")
    with SageMakerEmulator(tmp / "emulator", run_jobs=False) as emu:
        saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL",)}
        os.environ["AWS_ENDPOINT_URL"] = emu.url  # for the SDK's clients in this process
        try:
            import boto3
            import sagemaker

            session = sagemaker.Session(
                boto_session=boto3.Session(region_name="us-east-1"), default_bucket=BUCKET,
                sagemaker_config={"SchemaVersion": "1.0",
                                  "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}})
            session.default_bucket()  # creates it in moto
            yield emu, session, tmp
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def submit(sdk, name, hyperparameters=None, inputs=None, **overrides):
    from sagemaker.pytorch import PyTorch

    emu, session, _ = sdk
    kwargs = job_config.estimator_kwargs(
        role=ROLE, hyperparameters=hyperparameters or {"epochs": 1}, output_path=f"s3://{BUCKET}/p/jobs",
        code_location=f"s3://{BUCKET}/p/code", base_job_name="req", source_dir=CODE, **overrides)
    PyTorch(sagemaker_session=session, **kwargs).fit(inputs or {"train": f"s3://{BUCKET}/p/data/train/"},
                                                     job_name=name, wait=False)
    return next(r for r in emu.training_requests if r["TrainingJobName"] == name)


def test_warm_pool_request(sdk):
    request = submit(sdk, "req-warm", mode="warm", keep_alive_seconds=1200)
    assert request["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 1200
    assert not request.get("EnableManagedSpotTraining") and "CheckpointConfig" not in request
    assert "MaxWaitTimeInSeconds" not in request["StoppingCondition"]


@pytest.mark.parametrize("instance_type,count", [("ml.g5.xlarge", 2), ("ml.g5.12xlarge", 1)])
def test_distribution_request(sdk, instance_type, count):
    request = submit(sdk, f"req-dist-{count}", mode="on-demand", instance_type=instance_type, instance_count=count)
    assert request["ResourceConfig"]["InstanceType"] == instance_type
    assert request["ResourceConfig"]["InstanceCount"] == count
    assert json.loads(request["HyperParameters"]["sagemaker_torch_distributed_enabled"]) is True
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("/pytorch-training:2.8.0-gpu-py312")


def test_single_gpu_request_has_no_distribution(sdk):
    request = submit(sdk, "req-single", mode="on-demand")
    assert "sagemaker_torch_distributed_enabled" not in request["HyperParameters"]


def test_security_request(sdk):
    request = submit(sdk, "req-secure", mode="spot", volume_kms_key="arn:aws:kms:us-east-1:123456789012:key/vol",
                     output_kms_key="arn:aws:kms:us-east-1:123456789012:key/out", subnets=["subnet-0abc"],
                     security_group_ids=["sg-0abc"], enable_network_isolation=True,
                     encrypt_inter_container_traffic=True, checkpoint_s3_uri=f"s3://{BUCKET}/p/checkpoints/x")
    assert request["VpcConfig"] == {"Subnets": ["subnet-0abc"], "SecurityGroupIds": ["sg-0abc"]}
    assert request["EnableNetworkIsolation"] is True and request["EnableInterContainerTrafficEncryption"] is True
    assert request["OutputDataConfig"]["KmsKeyId"].endswith("key/out")
    assert request["ResourceConfig"]["VolumeKmsKeyId"].endswith("key/vol")
    assert request["EnableManagedSpotTraining"] is True
    assert request["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/p/checkpoints/x"


def test_failed_job_reports_the_scripts_failure_line(sdk):
    """A real run through the toolkit: train.py refuses lr=0; the job's FailureReason is its one line."""
    from medimg import channels

    emu, session, tmp = sdk
    data = make_dataset(tmp / "data", counts={"train": 4, "val": 2})
    s3 = emu.client("s3")
    inputs, _ = channels.upload_channels(s3, data, f"s3://{BUCKET}/p/data", "small", log=lambda m: None)
    emu.run_jobs = True
    try:
        submit(sdk, "req-fails", hyperparameters={"epochs": 1, "lr": 0}, inputs=inputs, mode="on-demand")
        out = []
        with pytest.raises(jobs.JobFailed) as err:
            jobs.follow_training_job(session.sagemaker_client, emu.client("logs"), "req-fails", poll=1,
                                     out=out.append)
    finally:
        emu.run_jobs = False
    assert str(err.value) == ("req-fails failed: AlgorithmError: invalid hyperparameter: argument --lr: "
                              "must be > 0, got '0'")
    assert any("Reporting training FAILURE" in line for line in out)  # the job's log was shown
    desc = session.sagemaker_client.describe_training_job(TrainingJobName="req-fails")
    assert desc["TrainingJobStatus"] == "Failed" and "ModelArtifacts" in desc
