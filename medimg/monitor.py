"""Following SageMaker jobs from the notebook (boto3 clients in, plain text out).

- ``follow_training_job``: wait for a training job, printing its status changes and its CloudWatch log;
  a failed or stopped job raises ``JobFailed`` whose message is the job's FailureReason.
- ``wait_for_tuning_job``: the same for a hyperparameter tuning job (status only).
- ``metric_series``: the CloudWatch metrics SageMaker extracted from the log; ``model_data``: a job's model.tar.gz.
"""
import re
import time

from medimg.container import epoch_log

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")


class JobFailed(RuntimeError):
    pass


def failure_message(description):
    """One plain paragraph saying how a job ended and why."""
    name = description.get("TrainingJobName") or description.get("HyperParameterTuningJobName") or "the job"
    status = description.get("TrainingJobStatus") or description.get("HyperParameterTuningJobStatus")
    reason = (description.get("FailureReason") or "").strip() or "SageMaker gave no reason"
    return f"{name} {status.lower() if status else 'ended'}: {reason}"


def _log_streams(logs, job_name):
    try:
        resp = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=job_name + "/")
    except logs.exceptions.ResourceNotFoundException:
        return []  # no log group before the first job of an account writes to it
    return sorted(s["logStreamName"] for s in resp.get("logStreams", []))


LAUNCHER_OUTCOME = ("Reporting training SUCCESS", "Reporting training FAILURE", "Training Container Execution Completed",
                    "An error occurred with exit code", "ExecuteUserScriptError")
_LOG_PREFIX = re.compile(r"^\S+ \S+ (INFO|WARNING|ERROR|CRITICAL) ")  # train.py's "<date> <time> <LEVEL> "


def headline(line):
    """The part of a job's log line a reader needs, or None: train.py's headline lines (epoch_log.is_headline), its
    warnings and errors, and the launcher's outcome (the toolkit's or SDK v3 drivers')."""
    match = _LOG_PREFIX.match(line)
    message = line[match.end():] if match else line
    if match and match.group(1) != "INFO":
        return line
    if epoch_log.is_headline(message):
        return message
    marker = next((m for m in LAUNCHER_OUTCOME if m in line), None)
    return line[line.index(marker):] if marker else None


def log_location(region, job_name):
    """Where the whole log is: the CloudWatch console's view of the job's log streams."""
    group = LOG_GROUP.replace("/", "$252F")
    return (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/log-group/"
            f"{group}$3FlogStreamNameFilter$3D{job_name}")


def _print_new_events(logs, job_name, tokens, out, keep=None):
    """Print log events not shown yet (``tokens``: stream -> next forward token), prefixed by host when >1;
    ``keep(line)`` returns the text to show or None (default: every line)."""
    streams = _log_streams(logs, job_name)
    for stream in streams:
        while True:
            kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if stream in tokens:
                kwargs["nextToken"] = tokens[stream]
            resp = logs.get_log_events(**kwargs)
            prefix = f"[{stream.split('/', 1)[-1]}] " if len(streams) > 1 else ""
            for event in resp.get("events", []):
                text = event["message"].rstrip("\n")
                text = keep(text) if keep is not None else text
                if text is not None:
                    out(prefix + text)
            token = resp.get("nextForwardToken")
            if not resp.get("events") or token == tokens.get(stream):
                tokens[stream] = token or tokens.get(stream)
                break
            tokens[stream] = token


def follow_training_job(sm, logs, job_name, *, poll=30, show_log=True, full_log=False, out=print):
    """Wait until the training job ends, printing status changes and (``show_log``) its log as it arrives: the
    headline lines only (``headline``), or every line with ``full_log``. Returns the final DescribeTrainingJob
    response; raises JobFailed (with the FailureReason) unless it Completed."""
    tokens, last = {}, None
    while True:
        desc = sm.describe_training_job(TrainingJobName=job_name)
        state = (desc["TrainingJobStatus"], desc.get("SecondaryStatus"))
        if state != last:
            out(f"{time.strftime('%H:%M:%S')} {job_name}: {state[0]} / {state[1]}")
            last = state
        if show_log:
            _print_new_events(logs, job_name, tokens, out, keep=None if full_log else headline)
        if desc["TrainingJobStatus"] in TERMINAL:
            break
        time.sleep(poll)
    if desc["TrainingJobStatus"] != "Completed":
        raise JobFailed(failure_message(desc))
    seconds, billable = desc.get("TrainingTimeInSeconds"), desc.get("BillableTimeInSeconds")
    if seconds is not None:
        saving = f", managed spot saving {100 * (1 - billable / seconds):.0f}%" if (
            desc.get("EnableManagedSpotTraining") and billable is not None and seconds) else ""
        out(f"training time {seconds} s, billable {billable} s{saving}")
    return desc


METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"


def metric_series(cloudwatch, sm, job_name, names, period=60):
    """The job's CloudWatch metrics (what SageMaker extracted from its log with the metric definitions): a pandas
    DataFrame of ``timestamp`` (seconds since the job started), ``metric_name`` and ``value``, one row per
    ``period``-second average, whichever SDK started the job."""
    import datetime

    import pandas as pd

    desc = sm.describe_training_job(TrainingJobName=job_name)
    start = desc.get("TrainingStartTime") or desc["CreationTime"]
    end = (desc.get("TrainingEndTime") or datetime.datetime.now(datetime.timezone.utc)) + datetime.timedelta(
        seconds=period)
    rows = []
    for name in names:
        points = cloudwatch.get_metric_statistics(
            Namespace=METRIC_NAMESPACE, MetricName=name, StartTime=start - datetime.timedelta(seconds=period),
            EndTime=end, Period=period, Statistics=["Average"],
            Dimensions=[{"Name": "TrainingJobName", "Value": job_name}])["Datapoints"]
        rows += [{"timestamp": (p["Timestamp"] - start).total_seconds(), "metric_name": name, "value": p["Average"]}
                 for p in points]
    return pd.DataFrame(rows, columns=["timestamp", "metric_name", "value"])


def model_data(sm, job_name):
    """The S3 URI of a completed training job's model.tar.gz (whichever SDK started it)."""
    return sm.describe_training_job(TrainingJobName=job_name)["ModelArtifacts"]["S3ModelArtifacts"]


def wait_for_tuning_job(sm, name, *, poll=60, out=print):
    """Wait until a tuning job ends; return its description. Raises JobFailed unless it Completed."""
    last = None
    while True:
        desc = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        status = desc["HyperParameterTuningJobStatus"]
        counters = desc.get("TrainingJobStatusCounters", {})
        line = f"{name}: {status}, training jobs {counters}"
        if line != last:
            out(f"{time.strftime('%H:%M:%S')} {line}")
            last = line
        if status in TERMINAL:
            break
        time.sleep(poll)
    if status != "Completed":
        raise JobFailed(failure_message(desc))
    return desc
