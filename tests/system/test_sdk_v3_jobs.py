"""SDK v3 end to end against the emulator: medimg.sdk_v3 in a .venv-sdk3 process (tests/support/sdk3_probe.py job)
builds a JobSpec's ModelTrainer job, which the emulator runs for real through the uploaded ``code`` and ``sm_drivers``
channels (SDK v3's own drivers, .venv-sdk3's python on PATH); then the job's model.tar.gz is deployed as it is
through sagemaker-core resources, answers an image, and is deleted; a tuning job is started; and a second job
whose SDK-given name collides with the first's starts under the next second's name and fails with train.py's
own line as its FailureReason; a job named by the caller keeps that name, and the name again is refused."""
import io
import json
import os
import re
import subprocess
import tarfile
import types

import pytest

from medimg import artifacts, s3_data
from medimg.job import JobSpec
from conftest import CODE, ROOT, make_dataset
from sagemaker_emulator import SageMakerEmulator

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

SDK3_PYTHON = os.path.join(ROOT, ".venv-sdk3", "bin", "python")
ROLE = "arn:aws:iam::123456789012:role/R"
BUCKET = "v3-bucket"
NAMED = "v3job-named-by-the-caller"  # a job name start_job is given
HYPERPARAMETERS = {"epochs": 2, "batch-size": 16, "ema": 0, "patience": 0, "amp": False, "tta": True,
                   "model": "smallcnn"}


def untar(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    assert os.path.exists(SDK3_PYTHON), f"{SDK3_PYTHON} is missing: make install builds .venv-sdk3"
    tmp = tmp_path_factory.mktemp("sdk3jobs")
    data = make_dataset(tmp / "data", counts={"train": 16, "val": 6, "test": 4})
    image = os.path.join(data, "test", "pneumonia", "0.png")
    with SageMakerEmulator(tmp / "emulator", python_v3=SDK3_PYTHON) as emu:
        s3 = emu.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        inputs, _ = s3_data.upload_channels(s3, data, f"s3://{BUCKET}/p/data", "d", log=lambda m: None)
        spec = dict(role=ROLE, hyperparameters=HYPERPARAMETERS, channels=inputs, source_dir=CODE, base_job_name="v3job",
                    output_path=f"s3://{BUCKET}/p/jobs", code_location=f"s3://{BUCKET}/p/code", mode="spot",
                    max_run=3600, checkpoint_s3_uri=f"s3://{BUCKET}/p/checkpoints/v3job", tags={"project": "v3"})
        params = {"spec": spec, "bucket": BUCKET, "deploy": True, "image": image, "tuning": {"max_jobs": 4},
                  "second_job": {"hyperparameters": {"epochs": 1, "lr": 0}, "checkpoint_s3_uri": None},
                  "named_job": {"job_name": NAMED, "spec": {"hyperparameters": {"epochs": 1, "lr": 0},
                                                            "checkpoint_s3_uri": None}}}
        probe = subprocess.run([SDK3_PYTHON, os.path.join(ROOT, "tests", "support", "sdk3_probe.py"), "job"],
                               cwd=ROOT, input=json.dumps(params), env=emu.env(), capture_output=True, text=True,
                               timeout=900)
        emu.wait_for_jobs()
        assert probe.returncode == 0, probe.stderr[-5000:]
        out = json.loads(probe.stdout)
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])]
        yield types.SimpleNamespace(emu=emu, out=out, s3=s3, sm=emu.client("sagemaker"), keys=keys, data=data,
                                    image=image, spec=JobSpec(**spec), tmp=tmp)


def request_of(run, name):
    return next(r for r in run.emu.training_requests if r["TrainingJobName"] == name)


def test_the_request_is_modeltrainers(run):
    name = run.out["job_name"]
    assert re.fullmatch(r"v3job-\d{14}", name)
    request = request_of(run, name)
    algorithm = request["AlgorithmSpecification"]
    assert algorithm["ContainerEntrypoint"] == ["/bin/bash"]
    assert algorithm["MetricDefinitions"] == run.spec.metric_definitions
    assert algorithm["TrainingImage"].endswith("/pytorch-training:2.8.0-gpu-py312")
    assert request["HyperParameters"] == {"epochs": "2", "batch-size": "16", "ema": "0", "patience": "0",
                                          "amp": "false", "tta": "true", "model": "smallcnn"}
    channel_uris = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert list(channel_uris) == ["train", "val", "test", "code", "sm_drivers"]
    assert channel_uris["code"] == f"s3://{BUCKET}/p/code/{name}/input/code"
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/p/checkpoints/v3job"
    assert request["Tags"] == [{"Key": "project", "Value": "v3"}]


def test_the_job_ran_for_real_through_the_v3_drivers(run):
    name = run.out["job_name"]
    assert run.out["status"] == "Completed" and not run.out["failure_reason"], run.out["failure_reason"]
    job = run.emu.jobs[name]
    assert job.returncode == 0, job.log[-3000:]
    python3 = os.path.join(os.path.dirname(SDK3_PYTHON), "python3")
    assert "Running Basic Script driver" in job.log
    assert (f"Executing command: {python3} train.py --epochs 2 --batch-size 16 --ema 0 --patience 0 --amp false "
            "--tta true --model smallcnn") in job.log
    assert "resumed from" not in job.log  # a fresh checkpoint location
    base = f"p/jobs/{name}/output/"
    assert run.out["model_data"] == f"s3://{BUCKET}/{base}model.tar.gz"
    model = untar(run.s3.get_object(Bucket=BUCKET, Key=base + "model.tar.gz")["Body"].read())
    assert {"model.pth", "model_config.json", "label_dict.json", "code/inference.py"} <= set(model)
    config = json.loads(model["model_config.json"])
    assert (config["hyperparameters"]["amp"], config["hyperparameters"]["tta"]) == (False, True)
    output = untar(run.s3.get_object(Bucket=BUCKET, Key=base + "output.tar.gz")["Body"].read())
    assert [h["epoch"] for h in json.loads(output["metrics.json"])["history"]] == [1, 2]
    assert sorted(k.rsplit("/", 1)[-1] for k in run.keys if k.startswith("p/checkpoints/v3job/")) == [
        "checkpoint-0001-000000.pt", "checkpoint-0002-000000.pt"]  # synced, as for a spot job


def test_final_metrics_are_the_numbers_train_py_logged(run):
    name = run.out["job_name"]
    final = {m["MetricName"]: m["Value"] for m in
             run.sm.describe_training_job(TrainingJobName=name)["FinalMetricDataList"]}
    assert set(final) == {d["Name"] for d in run.spec.metric_definitions}
    output = untar(run.s3.get_object(Bucket=BUCKET, Key=f"p/jobs/{name}/output/output.tar.gz")["Body"].read())
    metrics = json.loads(output["metrics.json"])
    best = metrics["history"][metrics["best_epoch"] - 1]
    assert final["epoch"] == 2
    assert (final["val_auc"], final["val_acc"]) == (round(best["val_auc"], 4), round(best["val_acc"], 4))
    assert (final["test_auc"], final["test_acc"]) == (round(metrics["test"]["auc"], 4),
                                                      round(metrics["test"]["accuracy"], 4))


def test_the_model_tarball_deploys_as_is_and_answers(run, tmp_path):
    out = run.out
    container = out["model"]["PrimaryContainer"]
    assert container["ModelDataUrl"] == out["model_data"]  # not repacked
    assert container["Image"].endswith("/pytorch-inference:2.6.0-cpu-py312")
    assert container["Environment"] == {"SAGEMAKER_PROGRAM": "inference.py",
                                        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                                        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": "us-east-1"}
    assert out["model"]["ExecutionRoleArn"] == ROLE
    variant = out["endpoint_config"]["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        out["endpoint"], "ml.m5.large", 1)
    call = run.emu.invocations[-1]
    assert (call["endpoint"], call["content_type"], call["status"]) == (out["endpoint"], "application/x-image", 200)
    tar = tmp_path / "model.tar.gz"
    tar.write_bytes(run.s3.get_object(Bucket=BUCKET, Key=f"p/jobs/{out['job_name']}/output/model.tar.gz")["Body"].read())
    with artifacts.LocalModel(artifacts.safe_extract(str(tar), str(tmp_path / "model"))) as model:
        want = model.invoke(open(run.image, "rb").read(), "image/png")["predictions"][0]
    got = out["answer"]["predictions"][0]
    assert (got["label"], got["index"]) == (want["label"], want["index"])
    for name, p in want["probabilities"].items():
        assert abs(got["probabilities"][name] - p) < 1e-6


def test_delete_removed_the_endpoint_its_config_and_model(run):
    """(moto's state outlives an emulator within one test process: look for this endpoint's names only)"""
    name = run.out["endpoint"]
    assert run.out["deleted"] == {"endpoint": True, "endpoint_config": True, "model": True}
    assert name not in [e["EndpointName"] for e in run.sm.list_endpoints()["Endpoints"]]
    assert name not in [c["EndpointConfigName"] for c in run.sm.list_endpoint_configs()["EndpointConfigs"]]
    assert name not in [m["ModelName"] for m in run.sm.list_models()["Models"]]


def test_tuning_request(run):
    assert len(run.emu.tuning_requests) == 1
    request = run.emu.tuning_requests[0]
    assert request["HyperParameterTuningJobName"] == run.out["tuning_job"]
    assert re.fullmatch(r"v3job-hpo-\d{6}-\d{4}", run.out["tuning_job"])
    config = request["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val_auc"}
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 4
    assert config["Strategy"] == "Bayesian" and config["TrainingJobEarlyStoppingType"] == "Auto"
    ranges = config["ParameterRanges"]
    assert {r["Name"]: r["ScalingType"] for r in ranges["ContinuousParameterRanges"]} == {
        "lr": "Logarithmic", "weight-decay": "Logarithmic"}
    assert ranges["CategoricalParameterRanges"] == [{"Name": "batch-size", "Values": ["64", "128", "256"]}]
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == run.spec.metric_definitions
    assert "CheckpointConfig" not in definition  # trials must not share one checkpoint folder
    assert definition["EnableManagedSpotTraining"] is True
    static = definition["StaticHyperParameters"]
    assert static["epochs"] == "2" and "lr" not in static and "batch-size" not in static
    assert static["sagemaker_program"] == "train.py"  # v3's trials run through the training toolkit


def test_a_same_second_name_is_retried_and_a_failed_job_reports_train_pys_line(run):
    first, (second, status, reason) = run.out["job_name"], run.out["second_job"]
    assert re.fullmatch(r"v3job-\d{14}", second) and second > first  # the next second's name, not a refusal
    names = [r["TrainingJobName"] for r in run.emu.training_requests]
    assert names == [first, second, NAMED]  # the colliding request was refused, the retry accepted
    assert request_of(run, second)["HyperParameters"] == {"epochs": "1", "lr": "0"}
    assert status == "Failed"
    assert reason.strip() == "AlgorithmError: invalid hyperparameter: argument --lr: must be > 0, got '0'"
    assert run.emu.jobs[second].returncode == 2  # train.py's own exit code through the v3 drivers


def test_a_job_named_by_the_caller_has_that_name_and_a_name_in_use_is_refused_not_changed(run):
    """start_job(job_name=...) as SDK v2's: the job, its code and its drivers go under that name; starting it
    again is SageMaker's ResourceInUse, not a retry under another name."""
    name, status, reason = run.out["named_job"]
    assert name == NAMED and request_of(run, NAMED)["HyperParameters"] == {"epochs": "1", "lr": "0"}
    assert f"p/code/{NAMED}/input/code/train.py" in run.keys
    assert f"p/code/{NAMED}/input/sm_drivers/sm_train.sh" in run.keys
    assert status == "Failed" and "must be > 0" in reason
    assert "ResourceInUse" in run.out["named_again"], run.out["named_again"]
    assert [r["TrainingJobName"] for r in run.emu.training_requests].count(NAMED) == 1
