"""What SDK v2 really sends for a JobSpec's other settings (warm pool, distribution, security), built by
medimg.sdk_v2 and captured by the emulator on 127.0.0.1; and a job that fails for real, reported by its
FailureReason. (SDK v3's requests: test_job.py and test_sdk_v3_jobs.py.)"""
import json
import os
import re

import pytest

from medimg import monitor, sdk_v2
from medimg.job import JobSpec
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

            session = sdk_v2.make_session(boto3.Session(region_name="us-east-1"), default_bucket=BUCKET)
            session.default_bucket()  # creates it in moto
            yield emu, session, tmp
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def submit(sdk, name, hyperparameters=None, inputs=None, **overrides):
    emu, session, _ = sdk
    spec = JobSpec(role=ROLE, hyperparameters=hyperparameters or {"epochs": 1}, output_path=f"s3://{BUCKET}/p/jobs",
                   code_location=f"s3://{BUCKET}/p/code", base_job_name="req", source_dir=CODE,
                   channels=inputs or {"train": f"s3://{BUCKET}/p/data/train/"}, **overrides)
    _, started = sdk_v2.start_job(spec, session, job_name=name)
    assert started == name
    request = next(r for r in emu.training_requests if r["TrainingJobName"] == name)
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == spec.metric_definitions
    return request


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
    from medimg import s3_data

    emu, session, tmp = sdk
    data = make_dataset(tmp / "data", counts={"train": 4, "val": 2})
    s3 = emu.client("s3")
    inputs, _ = s3_data.upload_channels(s3, data, f"s3://{BUCKET}/p/data", "small", log=lambda m: None)
    emu.run_jobs = True
    try:
        submit(sdk, "req-fails", hyperparameters={"epochs": 1, "lr": 0}, inputs=inputs, mode="on-demand")
        out = []
        with pytest.raises(monitor.JobFailed) as err:
            monitor.follow_training_job(session.sagemaker_client, emu.client("logs"), "req-fails", poll=1,
                                     out=out.append)
    finally:
        emu.run_jobs = False
    assert str(err.value) == ("req-fails failed: AlgorithmError: invalid hyperparameter: argument --lr: "
                              "must be > 0, got '0'")
    assert any("Reporting training FAILURE" in line for line in out)  # the job's log was shown
    desc = session.sagemaker_client.describe_training_job(TrainingJobName="req-fails")
    assert desc["TrainingJobStatus"] == "Failed" and "ModelArtifacts" in desc


def test_job_names_are_unique(sdk):
    """sdk_v2.start_job names a job <base>-<timestamp to the ms>; a second job of the same name is refused, as
    SageMaker refuses it (ResourceInUse)."""
    from botocore.exceptions import ClientError

    emu, session, _ = sdk
    spec = JobSpec(role=ROLE, hyperparameters={"epochs": 1}, output_path=f"s3://{BUCKET}/p/jobs",
                   code_location=f"s3://{BUCKET}/p/code", base_job_name="req", source_dir=CODE, mode="on-demand",
                   channels={"train": f"s3://{BUCKET}/p/data/train/"})
    _, name = sdk_v2.start_job(spec, session)
    assert re.fullmatch(r"req-\d{4}(-\d\d){5}-\d{3}", name)
    with pytest.raises(ClientError, match="ResourceInUse"):
        sdk_v2.start_job(spec, session, job_name=name)
    assert [r["TrainingJobName"] for r in emu.training_requests].count(name) == 1


def test_sdk_v2_deploy_serves_the_trained_model_and_delete_cleans_up(sdk, tmp_path):
    """sdk_v2.deploy: the job's model.tar.gz repacked with code/inference.py on the 2.6.0 inference image, raw
    image bytes in, inference.py's JSON out (the emulator serves the model for real); sdk_v2.delete removes it."""
    from medimg import artifacts, s3_data

    emu, session, tmp = sdk
    data = make_dataset(tmp / "deploy-data", counts={"train": 6, "val": 2, "test": 2})
    inputs, _ = s3_data.upload_channels(emu.client("s3"), data, f"s3://{BUCKET}/p/data", "deploy", log=lambda m: 0)
    spec = JobSpec(role=ROLE, hyperparameters={"epochs": 1, "batch-size": 8}, output_path=f"s3://{BUCKET}/p/jobs",
                   code_location=f"s3://{BUCKET}/p/code", base_job_name="req", source_dir=CODE, mode="on-demand",
                   channels=inputs, tags={"project": "req"})
    emu.run_jobs = True
    try:
        estimator, name = sdk_v2.start_job(spec, session, job_name="req-deploy")
        emu.wait_for_jobs()
    finally:
        emu.run_jobs = False
    assert emu.jobs[name].returncode == 0, emu.jobs[name].log[-3000:]
    predictor = sdk_v2.deploy(spec, estimator.model_data, session, endpoint_name="req-endpoint",
                              repack_location=f"s3://{BUCKET}/p/models", poll=1)
    container = session.sagemaker_client.describe_model(ModelName="req-endpoint")["PrimaryContainer"]
    assert container["Image"].endswith("/pytorch-inference:2.6.0-cpu-py312")
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["ModelDataUrl"].startswith(f"s3://{BUCKET}/p/models/")  # the SDK's repacked copy
    image = os.path.join(data, "test", "pneumonia", "0.png")
    with open(image, "rb") as fh:
        got = sdk_v2.invoke(predictor, fh.read())["predictions"][0]
    assert emu.invocations[-1]["content_type"] == "application/x-image"
    local = artifacts.download_job_artifacts(emu.client("s3"), estimator.model_data, str(tmp_path / "artifacts"))
    with artifacts.LocalModel(local["model"]) as model:
        want = model.invoke(open(image, "rb").read(), "image/png")["predictions"][0]
    assert got["label"] == want["label"]
    assert abs(got["probabilities"]["pneumonia"] - want["probabilities"]["pneumonia"]) < 1e-6
    assert sdk_v2.delete(session, "req-endpoint", out=lambda line: None) == {
        "endpoint": True, "endpoint_config": True, "model": True}
    assert "req-endpoint" not in [e["EndpointName"] for e in session.sagemaker_client.list_endpoints()["Endpoints"]]
    assert "req-endpoint" not in [m["ModelName"] for m in session.sagemaker_client.list_models()["Models"]]
