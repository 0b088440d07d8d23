"""The model's life after one job, end to end against the emulator (tests/support/emulator_mlops.py executes the
pipeline's Training, Condition, RegisterModel and Fail steps; the training jobs really run), under SDK v2 (.venv) and v3
(.venv-sdk3): tests/support/mlops_probe.py builds the pipeline with medimg.mlops_v2/v3, upserts it and starts two
executions, a low threshold that registers one package, and a threshold above the test AUC on new data that fails
with the metric named and registers nothing. Then the four real jobs serve as a tuning job's trials for
medimg.tracking.log_tuning_job against a real MLflow server: one parent run, a child run per trial."""
import json
import os
import shutil
import subprocess
import sys
import types

import pytest

from conftest import ROOT, make_dataset
from medimg import s3_data, tracking
from mlflow_server import MlflowServer
from sagemaker_emulator import SageMakerEmulator

pytestmark = pytest.mark.slow

PYTHON = {"v2": sys.executable, "v3": os.path.join(ROOT, ".venv-sdk3", "bin", "python")}
BUCKET, ROLE = "medimg-pipeline-test", "arn:aws:iam::123456789012:role/MedImgSageMakerRole"
HIGH = 1.5  # above any AUC: that execution must fail
FAST = {"epochs": 1, "batch-size": 16, "bootstrap": 50, "amp": False}


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    data = make_dataset(tmp / "data", counts={"train": 16, "val": 6, "test": 8})
    with SageMakerEmulator(tmp / "emulator", python_v3=PYTHON["v3"]) as emu:
        s3 = emu.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        channels, _ = s3_data.upload_channels(s3, data, f"s3://{BUCKET}/p/data", "tiny", log=lambda *a: None)
        shutil.copytree(os.path.join(data, "train"), tmp / "new" / "train")  # new data: one more copy of train
        new_train, _ = s3_data.upload_channels(s3, str(tmp / "new"), f"s3://{BUCKET}/p/data", "new",
                                               log=lambda *a: None)
        probes = {sdk: start_probe(emu, sdk, channels, new_train, tmp) for sdk in ("v2", "v3")}
        results = {sdk: finish_probe(*probe) for sdk, probe in probes.items()}
        emu.wait_for_jobs()
        yield types.SimpleNamespace(emu=emu, sm=emu.client("sagemaker"), s3=s3, results=results, channels=channels,
                                    new_train=new_train, tmp=tmp)


def start_probe(emu, sdk, channels, new_train, tmp):
    spec = {"role": ROLE, "hyperparameters": FAST, "output_path": f"s3://{BUCKET}/p/jobs",
            "code_location": f"s3://{BUCKET}/p/code", "base_job_name": f"pipe{sdk}", "mode": "spot",
            "channels": channels, "instance_type": "ml.m5.large",
            "checkpoint_s3_uri": f"s3://{BUCKET}/p/checkpoints/pipe{sdk}-pipeline"}
    request = {"bucket": BUCKET, "spec": spec, "pipeline_name": f"medimg-{sdk}", "group": f"retrained-{sdk}",
               "condition": {"metric": "test_auc", "min": 0.0}, "approval_status": "PendingManualApproval",
               "executions": [{}, {"MinTestAuc": HIGH, "TrainData": new_train["train"]}]}
    out, asked = tmp / f"{sdk}.json", tmp / f"{sdk}-request.json"
    asked.write_text(json.dumps(request))
    env = dict(emu.env(), OMP_NUM_THREADS="1")
    with open(asked, encoding="utf-8") as stdin:  # both probes run at once: their jobs overlap
        probe = os.path.join(ROOT, "tests", "support", "mlops_probe.py")
        proc = subprocess.Popen([PYTHON[sdk], probe, str(out)], cwd=ROOT,
                                env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out


def finish_probe(proc, out):
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"{stdout[-2000:]}\n{stderr[-4000:]}"
    return json.loads(out.read_text())


def job_request(emulated, name):
    return next(r for r in emulated.emu.training_requests if r["TrainingJobName"] == name)


def final_metric(emulated, job, name):
    desc = emulated.sm.describe_training_job(TrainingJobName=job)
    return next(m["Value"] for m in desc["FinalMetricDataList"] if m["MetricName"] == name)


@pytest.mark.parametrize("sdk", ["v2", "v3"])
def test_a_low_threshold_registers_the_trained_model(emulated, sdk):
    result = emulated.results[sdk]
    assert result["sdk"] == sdk
    passed = result["executions"][0]
    assert passed["status"] == "Succeeded" and not passed["failure_reason"], passed["log"]
    steps = {s["StepName"]: s for s in passed["steps"]}
    register = "Register-RegisterModel" if sdk == "v2" else "Register"  # v2's ModelStep names its step so
    assert list(steps) == ["Train", "CheckMetric", register], passed["log"]
    assert steps["CheckMetric"]["Metadata"]["Condition"]["Outcome"] == "True"
    job = passed["training_job"]
    assert steps["Train"]["Metadata"]["TrainingJob"]["Arn"].endswith(f"/{job}")
    package = emulated.sm.describe_model_package(ModelPackageName=passed["model_package_arn"])
    assert package["ModelPackageGroupName"] == f"retrained-{sdk}"
    assert package["ModelApprovalStatus"] == "PendingManualApproval"  # the ModelApprovalStatus parameter's default
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/p/jobs/{job}/output/model.tar.gz"
    assert container["Image"].endswith("/pytorch-inference:2.6.0-cpu-py312")
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    meta = package["CustomerMetadataProperties"]
    assert meta["training_job"] == job and float(meta["test_auc"]) == final_metric(emulated, job, "test_auc")
    request = job_request(emulated, job)  # the notebook's job, on the pipeline's parameters
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert {ch: channels[ch] for ch in emulated.channels} == emulated.channels
    assert request["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert "test_auc" in [d["Name"] for d in request["AlgorithmSpecification"]["MetricDefinitions"]]
    execution_id = passed["arn"].rsplit("/", 1)[-1]
    assert request["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/p/checkpoints/pipe{sdk}-pipeline/{execution_id}"


@pytest.mark.parametrize("sdk", ["v2", "v3"])
def test_a_threshold_above_the_test_auc_fails_naming_the_metric_and_registers_nothing(emulated, sdk):
    failed = emulated.results[sdk]["executions"][1]
    job = failed["training_job"]
    auc = final_metric(emulated, job, "test_auc")
    assert failed["status"] == "Failed", failed["log"]
    reason = failed["failure_reason"]
    assert f"test_auc={auc}" in reason and f"minimum {HIGH}" in reason and "no model package" in reason, reason
    steps = {s["StepName"]: s for s in failed["steps"]}
    assert list(steps) == ["Train", "CheckMetric", "ConditionNotMet"]
    assert steps["CheckMetric"]["Metadata"]["Condition"]["Outcome"] == "False"
    assert steps["ConditionNotMet"]["StepStatus"] == "Failed" and failed["model_package_arn"] is None
    described = emulated.sm.describe_pipeline_execution(PipelineExecutionArn=failed["arn"])
    assert described["PipelineExecutionStatus"] == "Failed" and described["FailureReason"] == reason
    packages = emulated.sm.list_model_packages(ModelPackageGroupName=f"retrained-{sdk}")["ModelPackageSummaryList"]
    assert len(packages) == 1  # the first execution's
    request = job_request(emulated, job)  # a retrain on new data: one start with a new TrainData
    train = next(c for c in request["InputDataConfig"] if c["ChannelName"] == "train")
    assert train["DataSource"]["S3DataSource"]["S3Uri"] == emulated.new_train["train"]
    assert any("ConditionNotMet: Failed: pipeline condition not met" in line for line in failed["log"])


@pytest.mark.parametrize("sdk", ["v2", "v3"])
def test_the_pipeline_is_made_of_the_installed_sdks_steps_on_parameters(emulated, sdk):
    definition = emulated.results[sdk]["definition"]
    params = {p["Name"]: p for p in definition["Parameters"]}
    assert set(params) == {"TrainData", "ValData", "TestData", "TrainingInstanceType", "MinTestAuc",
                           "ModelApprovalStatus"}
    assert params["MinTestAuc"] == {"Name": "MinTestAuc", "Type": "Float", "DefaultValue": 0.0}
    train, check = definition["Steps"]
    assert (train["Type"], check["Type"]) == ("Training", "Condition")
    assert train["Arguments"]["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    condition = check["Arguments"]["Conditions"][0]
    assert condition == {"Type": "GreaterThanOrEqualTo",
                         "LeftValue": {"Get": "Steps.Train.FinalMetricDataList['test_auc'].Value"},
                         "RightValue": {"Get": "Parameters.MinTestAuc"}}
    assert [s["Type"] for s in check["Arguments"]["IfSteps"]] == ["RegisterModel"]  # v2: no repack step
    assert [s["Type"] for s in check["Arguments"]["ElseSteps"]] == ["Fail"]


def test_tuning_trials_are_child_runs_of_one_parent_run(emulated):
    """moto runs no tuning trials: the pipelines' four real jobs are assigned to a tuning job as its trials."""
    sm = emulated.sm
    jobs = [e["training_job"] for sdk in ("v2", "v3") for e in emulated.results[sdk]["executions"]]
    definition = {"StaticHyperParameters": {"epochs": "1"}, "AlgorithmSpecification": {
        "TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-cpu-py312",
        "TrainingInputMode": "File"}, "RoleArn": ROLE, "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/p/hpo"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600}}
    config = {"Strategy": "Bayesian", "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
              "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "test_auc"},
              "ParameterRanges": {"ContinuousParameterRanges": [{"Name": "lr", "MinValue": "0.0001",
                                                                 "MaxValue": "0.01"}]}}
    sm.create_hyper_parameter_tuning_job(HyperParameterTuningJobName="pipe-hpo", HyperParameterTuningJobConfig=config,
                                         TrainingJobDefinition=definition)
    emulated.emu.tuning_trials["pipe-hpo"] = jobs
    lines = []
    with MlflowServer(emulated.tmp / "mlflow") as server:
        parent = tracking.log_tuning_job(server.uri, "tuning", sm, emulated.s3, "pipe-hpo",
                                         work_dir=str(emulated.tmp / "trials"), out=lines.append)
        again = tracking.log_tuning_job(server.uri, "tuning", sm, emulated.s3, "pipe-hpo",
                                        work_dir=str(emulated.tmp / "trials"), out=lines.append)
        client = server.client()
        experiment = client.get_experiment_by_name("tuning").experiment_id
        children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
        assert parent and again == parent, lines
        assert "with 4 new trial run(s)" in lines[0] and "with 0 new trial run(s)" in lines[1]  # logged once
        assert sorted(r.data.tags["sagemaker.training_job_name"] for r in children) == sorted(jobs)
        for child in children:
            job = child.data.tags["sagemaker.training_job_name"]
            assert child.data.metrics["test_auc"] == pytest.approx(final_metric(emulated, job, "test_auc"), abs=1e-4)
            assert child.data.params["epochs"] == "1" and child.data.tags["sagemaker.tuning_job_name"] == "pipe-hpo"
            assert [m.step for m in client.get_metric_history(child.info.run_id, "val_auc")] == [1]
            assert "metrics.json" in [a.path for a in client.list_artifacts(child.info.run_id)]
            assert len(client.list_artifacts(child.info.run_id, "figures")) == 4
        parent_run = client.get_run(parent)
        assert parent_run.data.params["objective"] == "Maximize test_auc" and parent_run.info.status == "FINISHED"
