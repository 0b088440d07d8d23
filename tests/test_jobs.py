"""medimg/monitor.py and medimg/cleanup.py: following a training job (status changes and the log, each line once), a failed job's
plain FailureReason, waiting for a tuning job, idempotent clean-up, stopping a warm pool, the resource log."""
import json

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from medimg import cleanup, monitor
from medimg.container import epoch_log


class FakeLogs:
    """CloudWatch Logs with streams that grow while the job runs."""

    class exceptions:
        class ResourceNotFoundException(Exception):
            pass

    def __init__(self, timeline):
        self.timeline, self.tick = timeline, 0  # tick -> {stream: [messages so far]}

    def current(self):
        return self.timeline[min(self.tick, len(self.timeline) - 1)]

    def describe_log_streams(self, logGroupName, logStreamNamePrefix):
        assert logGroupName == "/aws/sagemaker/TrainingJobs"
        streams = self.current()
        if streams is None:
            raise self.exceptions.ResourceNotFoundException()
        return {"logStreams": [{"logStreamName": s} for s in streams if s.startswith(logStreamNamePrefix)]}

    def get_log_events(self, logGroupName, logStreamName, startFromHead, nextToken=None):
        messages = self.current()[logStreamName]
        start = int(nextToken.split("/")[1]) if nextToken else 0
        end = min(len(messages), start + 2)  # two per page, so that paging is exercised
        return {"events": [{"message": m + "\n"} for m in messages[start:end]], "nextForwardToken": f"f/{end}"}


class FakeSageMaker:
    def __init__(self, descriptions, logs):
        self.descriptions, self.logs, self.calls = descriptions, logs, 0

    def describe_training_job(self, TrainingJobName):
        desc = self.descriptions[min(self.calls, len(self.descriptions) - 1)]
        self.logs.tick = self.calls
        self.calls += 1
        return dict(desc, TrainingJobName=TrainingJobName)


def status(s, secondary, **extra):
    return dict({"TrainingJobStatus": s, "SecondaryStatus": secondary}, **extra)


def test_follow_prints_status_changes_and_each_log_line_once():
    logs = FakeLogs([None, {"job/algo-1-1": ["a", "b", "c"]},
                     {"job/algo-1-1": ["a", "b", "c", "epoch=1", "epoch=2"]},
                     {"job/algo-1-1": ["a", "b", "c", "epoch=1", "epoch=2", "done"]}])
    sm = FakeSageMaker([status("InProgress", "Starting"), status("InProgress", "Training"),
                        status("InProgress", "Training"),
                        status("Completed", "Completed", TrainingTimeInSeconds=100, BillableTimeInSeconds=30,
                               EnableManagedSpotTraining=True)], logs)
    out = []
    desc = monitor.follow_training_job(sm, logs, "job", poll=0, full_log=True, out=out.append)
    assert desc["TrainingJobStatus"] == "Completed"
    log_lines = [line for line in out if not line.startswith(("training time", "0", "1", "2"))]
    assert log_lines == ["a", "b", "c", "epoch=1", "epoch=2", "done"]
    assert sum("InProgress / Training" in line for line in out) == 1
    assert out[-1] == "training time 100 s, billable 30 s, managed spot saving 70%"


def test_follow_prefixes_hosts_of_multi_instance_jobs():
    logs = FakeLogs([{"job/algo-1-1": ["x"], "job/algo-2-1": ["y"]}])
    sm = FakeSageMaker([status("Completed", "Completed")], logs)
    out = []
    monitor.follow_training_job(sm, logs, "job", poll=0, full_log=True, out=out.append)
    assert "[algo-1-1] x" in out and "[algo-2-1] y" in out


def test_follow_shows_only_the_headline_lines_by_default():
    epoch = epoch_log.epoch_line({"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "val_acc": 0.8, "val_auc": 0.9,
                                  "lr": 0.001, "images_per_sec": 300.0})
    lines = ["Invoking script with the following command:", "/opt/conda/bin/python3.12 train.py --epochs 5",
             "2026-11-30 07:00:01 INFO data: train 300 images, val 60", "2026-11-30 07:00:01 INFO plan: 5 epochs",
             "2026-11-30 07:00:02 INFO some detail nobody needs", f"2026-11-30 07:00:03 INFO {epoch}",
             "2026-11-30 07:00:04 WARNING the val channel has 3 images of pneumonia",
             "2026-11-30 07:00:05 INFO best epoch 1: val_auc=0.9; model saved to /opt/ml/model",
             "2026-11-30 07:00:06,000 sagemaker-training-toolkit INFO     Reporting training SUCCESS"]
    logs = FakeLogs([{"job/algo-1-1": lines}])
    out = []
    monitor.follow_training_job(FakeSageMaker([status("Completed", "Completed")], logs), logs, "job", poll=0,
                             out=out.append)
    assert out[1:] == ["data: train 300 images, val 60", "plan: 5 epochs", epoch,
                       "2026-11-30 07:00:04 WARNING the val channel has 3 images of pneumonia",
                       "best epoch 1: val_auc=0.9; model saved to /opt/ml/model", "Reporting training SUCCESS"]
    assert monitor.headline("2026-11-30 07:00:02 INFO some detail nobody needs") is None


def test_failed_job_raises_its_failure_reason():
    logs = FakeLogs([{"job/algo-1-1": ["Traceback ..."]}])
    reason = "AlgorithmError: invalid hyperparameter: argument --lr: must be > 0, got '0'"
    sm = FakeSageMaker([status("Failed", "Failed", FailureReason=reason)], logs)
    with pytest.raises(monitor.JobFailed) as err:
        monitor.follow_training_job(sm, logs, "job", poll=0, out=lambda line: None)
    assert str(err.value) == f"job failed: {reason}"
    stopped = {"TrainingJobName": "j", "TrainingJobStatus": "Stopped"}
    assert monitor.failure_message(stopped) == "j stopped: SageMaker gave no reason"


def test_wait_for_tuning_job():
    answers = iter([{"HyperParameterTuningJobStatus": "InProgress", "TrainingJobStatusCounters": {"InProgress": 2}},
                    {"HyperParameterTuningJobStatus": "Completed", "TrainingJobStatusCounters": {"Completed": 4}}])

    class SM:
        def describe_hyper_parameter_tuning_job(self, HyperParameterTuningJobName):
            return dict(next(answers), HyperParameterTuningJobName=HyperParameterTuningJobName)

    out = []
    assert monitor.wait_for_tuning_job(SM(), "hpo", poll=0, out=out.append)["HyperParameterTuningJobStatus"] == "Completed"
    assert len(out) == 2 and "Completed" in out[1]
    failing = {"HyperParameterTuningJobName": "hpo", "HyperParameterTuningJobStatus": "Failed",
               "FailureReason": "no capacity"}

    class Failing:
        def describe_hyper_parameter_tuning_job(self, HyperParameterTuningJobName):
            return failing

    with pytest.raises(monitor.JobFailed, match="hpo failed: no capacity"):
        monitor.wait_for_tuning_job(Failing(), "hpo", poll=0, out=lambda line: None)


# ---------------------------------------------------------------- clean-up against moto
@pytest.fixture
def sm():
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("sagemaker", region_name="us-east-1")


def deploy(sm, name):
    sm.create_model(ModelName=name, ExecutionRoleArn="arn:aws:iam::123456789012:role/R",
                    PrimaryContainer={"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312",
                                      "ModelDataUrl": "s3://b/m/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName=name + "-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name + "-config")


def test_cleanup_deletes_everything_and_is_idempotent(sm):
    deploy(sm, "ep")
    out = []
    assert cleanup.delete_endpoint_resources(sm, endpoint_name="ep", out=out.append) == {
        "endpoint": True, "endpoint_config": True, "model": True}  # config and model found from the endpoint
    assert out == ["endpoint ep: deleted", "endpoint config ep-config: deleted", "model ep: deleted"]
    assert not sm.list_endpoints()["Endpoints"] and not sm.list_endpoint_configs()["EndpointConfigs"]
    assert not sm.list_models()["Models"]
    out.clear()
    again = cleanup.delete_endpoint_resources(sm, endpoint_name="ep", endpoint_config_name="ep-config", model_name="ep",
                                           out=out.append)
    assert again == {"endpoint": False, "endpoint_config": False, "model": False}
    assert out == ["endpoint ep: already gone", "endpoint config ep-config: already gone", "model ep: already gone"]


def test_cleanup_after_a_half_done_deploy(sm):
    deploy(sm, "half")
    sm.delete_endpoint(EndpointName="half")  # the endpoint never came up; its config and model remain
    out = []
    done = cleanup.delete_endpoint_resources(sm, endpoint_name="half", endpoint_config_name="half-config",
                                          model_name="half", out=out.append)
    assert done == {"endpoint": False, "endpoint_config": True, "model": True}
    assert cleanup.delete_endpoint_resources(sm, out=out.append) == {"endpoint": False, "endpoint_config": False,
                                                                  "model": False}


def test_cleanup_raises_other_errors():
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("describe_endpoint", "AccessDeniedException", "not allowed")
        with pytest.raises(ClientError, match="not allowed"):
            cleanup.delete_endpoint_resources(client, endpoint_name="ep", out=lambda line: None)


# ---------------------------------------------------------------- warm pools
def describe(warm_status=None):
    desc = {"TrainingJobName": "j", "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/j",
            "TrainingJobStatus": "Completed", "SecondaryStatus": "Completed", "CreationTime": 0,
            "AlgorithmSpecification": {"TrainingInputMode": "File"},
            "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m"},
            "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {}}
    if warm_status:
        desc["WarmPoolStatus"] = {"Status": warm_status}
    return desc


def test_stop_warm_pool():
    client = boto3.client("sagemaker", region_name="us-east-1")
    out = []
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", describe("Available"), {"TrainingJobName": "j"})
        stub.add_response("update_training_job", {"TrainingJobArn": describe()["TrainingJobArn"]},
                          {"TrainingJobName": "j", "ResourceConfig": {"KeepAlivePeriodInSeconds": 0}})
        assert cleanup.stop_warm_pool(client, "j", out=out.append) is True
        stub.add_response("describe_training_job", describe("Terminated"), {"TrainingJobName": "j"})
        assert cleanup.stop_warm_pool(client, "j", out=out.append) is False
        stub.add_response("describe_training_job", describe(), {"TrainingJobName": "j"})
        assert cleanup.stop_warm_pool(client, "j", out=out.append) is False
        stub.add_client_error("describe_training_job", "ValidationException", "Could not find training job 'j'")
        assert cleanup.stop_warm_pool(client, "j", out=out.append) is False
        stub.assert_no_pending_responses()
    assert "asked to stop" in out[0] and "Terminated" in out[1] and "none" in out[2] and "not found" in out[3]


# ---------------------------------------------------------------- resource log
def test_resource_log(tmp_path):
    log = cleanup.ResourceLog(str(tmp_path / "sub" / "resources.json"))
    assert log.read() == {"training_jobs": [], "tuning_jobs": [], "endpoints": []}
    entry = {"endpoint": "e", "endpoint_config": "e", "model": "e"}
    log.add("endpoints", entry)
    log.add("endpoints", entry)
    log.add("training_jobs", "job-1")
    assert log.read()["endpoints"] == [entry] and log.read()["training_jobs"] == ["job-1"]
    log.remove("endpoints", entry)
    assert json.loads((tmp_path / "sub" / "resources.json").read_text())["endpoints"] == []
    (tmp_path / "sub" / "resources.json").write_text("{broken")
    assert log.read()["endpoints"] == []
