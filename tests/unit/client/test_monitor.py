"""medimg/monitor.py: following a training job (status changes and the log, each line once, the hosts of a
multi-instance job), a failed job's plain FailureReason, waiting for a tuning job."""
import pytest

from medimg import monitor
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
