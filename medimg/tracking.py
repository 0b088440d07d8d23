"""Experiment tracking with MLflow, after the job: one MLflow run per SageMaker training job, logged from the client
(so the container needs no network: network isolation keeps working) from the job's description and its
metrics.json. Tuning trials are child runs of one run for the tuning job.

    tracking.check_settings(uri, experiment)            # before training: ValueError/RuntimeError, one line
    run_id = tracking.log_training_job(uri, experiment, sm.describe_training_job(...), metrics,
                                       metrics_path=".../metrics.json")
    parent_id = tracking.log_tuning_job(uri, experiment, sm, s3, tuning_job_name, work_dir=...)

What a run holds: params, the hyperparameters the job was sent (its HyperParameters without the SDK's own
``sagemaker_*``/``_*`` keys, JSON-decoded: SDK v2 encodes every value) and the resolved plan (``plan.<key>``);
metrics, every per-epoch curve of metrics.json's history with the epoch as its step (``val_auc``, ``train_loss``,
...), the kept epoch's validation figures (``best_val_<key>``) and the test split's (``test_<key>``, the operating
point's as ``test_op_<key>``, intervals as ``<name>_ci95_lower``/``_ci95_upper``); tags, the job's name and ARN,
the model's S3 URI, image, instance type and billable seconds (``sagemaker.*``); artifacts, metrics.json and the
result figures (learning curves, confusion matrix at the operating point, ROC, calibration: ``result_figures``,
drawn from metrics.json by the notebook's own ``medimg.plots``).

A tracking URI is ``http(s)://...`` or a SageMaker managed MLflow ARN (``arn:aws:sagemaker:<region>:<account>:
mlflow-tracking-server/<name>``, or ``mlflow-app/<id>``), which the ``sagemaker-mlflow`` plugin resolves and signs.
mlflow is imported only here, when tracking is on. A server that cannot be reached (one try of
``PROBE_TIMEOUT`` seconds, no retries) or fails part-way costs one ``WARNING:`` line and returns None: the job,
its artefacts and the notebook's results are never touched. Logging the same job again reuses its finished run.
MLflow's own usage telemetry is off unless the environment says otherwise (MLFLOW_DISABLE_TELEMETRY), as this
package turns the SageMaker SDK's off.
"""
import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import time

ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:(mlflow-tracking-server|mlflow-app)/[A-Za-z0-9-]+$")
PROBE_TIMEOUT = 10  # seconds for the one request that checks the server before a job is logged
JOB_TAG = "sagemaker.training_job_name"
INSTALL = "pip install mlflow"


# ==================================================================================================
# Settings
# ==================================================================================================
def check_settings(uri, experiment):
    """Raise ValueError for a tracking URI or experiment name this module cannot use, RuntimeError when what it
    needs is not installed (with the one ``pip install`` line that fixes it). ``uri`` None: tracking is off."""
    if uri is None:
        return None
    if not isinstance(uri, str) or not (uri.startswith(("http://", "https://")) or ARN.match(uri)):
        raise ValueError(f"mlflow_tracking_uri {uri!r}: use an http(s):// URL of an MLflow server or a SageMaker MLflow "
                         "ARN (arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>), or None for no "
                         "tracking")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ValueError(f"mlflow_experiment must be a non-empty name, got {experiment!r}")
    if importlib.util.find_spec("mlflow") is None:
        raise RuntimeError(f"mlflow_tracking_uri is set but mlflow is not installed: {INSTALL}" +
                           (" sagemaker-mlflow" if ARN.match(uri) else ""))
    if ARN.match(uri) and importlib.util.find_spec("sagemaker_mlflow") is None:
        raise RuntimeError("mlflow_tracking_uri is a SageMaker MLflow ARN, which needs the sagemaker-mlflow plugin: "
                           "pip install sagemaker-mlflow")
    return uri


@contextlib.contextmanager
def _client(uri):
    """An ``MlflowClient`` on ``uri``, with mlflow's global tracking URI set to it meanwhile: sagemaker-mlflow's
    request header provider reads the global URI, not the client's (without it, requests to a SageMaker server
    lack their routing header). Its provider fails on any URI that is not an ARN (sagemaker-mlflow 0.5) and
    mlflow then warns at every request: for such URIs that logger is quiet meanwhile."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    headers_log = logging.getLogger("mlflow.tracking.request_header.registry")
    level = headers_log.level
    if not ARN.match(uri):
        headers_log.setLevel(logging.ERROR)
    try:
        with _use_tracking_uri(uri):
            yield MlflowClient(tracking_uri=uri)
    finally:
        headers_log.setLevel(level)


@contextlib.contextmanager
def _environment(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _one_line(exc, limit=240):
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _experiment_id(client, experiment):
    """Probe the server once (no retries, a short timeout), then find or create the experiment."""
    with _environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES=0, MLFLOW_HTTP_REQUEST_TIMEOUT=PROBE_TIMEOUT):
        found = client.get_experiment_by_name(experiment)
    return found.experiment_id if found else client.create_experiment(experiment)


# ==================================================================================================
# What a run holds
# ==================================================================================================
def _key(name):
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", str(name))[:250]


def decoded_hyperparameters(description):
    """The hyperparameters a job was sent (its DescribeTrainingJob ``HyperParameters``) without the SDKs' own keys
    (``sagemaker_*``, ``_*``), JSON-decoded where they are JSON (SDK v2 encodes every value; v3 sends strings bare)."""
    out = {}
    for key, value in (description.get("HyperParameters") or {}).items():
        if key.startswith(("sagemaker_", "_")):
            continue
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def run_params(description, metrics):
    """``{name: text}``: the hyperparameters sent, and the plan (``plan.<key>``)."""
    params = {_key(k): v for k, v in decoded_hyperparameters(description).items()}
    params.update({_key(f"plan.{k}"): v for k, v in ((metrics or {}).get("plan") or {}).items()})
    return {k: (v if isinstance(v, str) else json.dumps(v))[:6000] for k, v in params.items()}


def _numbers(prefix, values):
    """``[(name, value)]`` of a split's scalar figures, its operating point's (``op_``) and its intervals."""
    out = []
    for key, value in values.items():
        if isinstance(value, bool) or key in ("n_groups",):
            continue
        if isinstance(value, (int, float)):
            out.append((f"{prefix}{key}", float(value)))
        elif key == "operating_point" and isinstance(value, dict):
            out += [(f"{prefix}op_{k}", float(v)) for k, v in value.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)]
        elif key == "ci95" and isinstance(value, dict):
            for name, bounds in value.items():
                out += [(f"{prefix}{name}_ci95_{side}", float(v)) for side, v in zip(("lower", "upper"), bounds or [])
                        if isinstance(v, (int, float))]
        elif key == "per_finding" and isinstance(value, dict):
            for finding, figures in value.items():
                out += [(f"{prefix}{finding}/{k}", float(v)) for k, v in figures.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return out


def run_metrics(metrics):
    """``[(name, value, step)]``: each per-epoch value at its epoch, then the kept epoch's val figures
    (``best_val_*``, step = the best epoch) and the test split's (step 0). Values that are null are left out
    (metrics.json's ``undefined`` says why)."""
    out = []
    for row in metrics.get("history") or []:
        step = int(row.get("epoch", 0))
        out += [(key, float(v), step) for key, v in row.items()
                if key != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]
    best = int(metrics.get("best_epoch") or 0)
    out += [(name, value, best) for name, value in _numbers("best_val_", metrics.get("val") or {})]
    out += [(name, value, 0) for name, value in _numbers("test_", metrics.get("test") or {})]
    if metrics.get("best_epoch") is not None:
        out.append(("best_epoch", float(metrics["best_epoch"]), 0))
    return [(_key(n), v, s) for n, v, s in out if math.isfinite(v) or math.isnan(v)]


def run_tags(description, extra=None):
    """``sagemaker.*`` tags of a training job (name, ARN, model S3 URI, image, instance, billable seconds)."""
    resources = description.get("ResourceConfig") or {}
    tags = {JOB_TAG: description.get("TrainingJobName"), "sagemaker.training_job_arn": description.get("TrainingJobArn"),
            "sagemaker.model_data": (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
            "sagemaker.training_image": (description.get("AlgorithmSpecification") or {}).get("TrainingImage"),
            "sagemaker.instance_type": resources.get("InstanceType"),
            "sagemaker.instance_count": resources.get("InstanceCount"),
            "sagemaker.billable_seconds": description.get("BillableTimeInSeconds"),
            "sagemaker.status": description.get("TrainingJobStatus")}
    tags.update(extra or {})
    return {k: str(v)[:5000] for k, v in tags.items() if v is not None}


def result_figures(metrics):
    """``{name: matplotlib Figure}`` drawn from metrics.json with ``medimg.plots``, as the notebook's results show
    them: learning curves, the confusion matrix (at the operating point for a binary task), ROC, calibration."""
    from medimg import plots

    split = "test" if metrics.get("test") else "val"
    figures = {}
    if metrics.get("history"):
        figures["learning_curves"] = plots.learning_curves(metrics["history"], metrics.get("best_epoch"))
    saved = metrics.get(f"{split}_predictions") or {}
    if not saved.get("labels"):
        return figures
    labels, probs, classes = saved["labels"], saved["probabilities"], metrics["classes"]
    if metrics["task"] != "multilabel":
        op = metrics[split].get("operating_point")
        matrix = op["confusion_matrix"] if op else metrics[split]["confusion_matrix"]
        title = f"{split}: at the operating point p >= {op['threshold']:.2f}" if op else f"{split} confusion matrix"
        figures["confusion_matrix"] = plots.confusion_matrix(matrix, classes, title=title)
    figures["roc"] = plots.roc_curves(labels, probs, classes, title=f"{split} ROC ({len(labels)} images)",
                                      operating_point=metrics[split].get("operating_point"))
    figures["calibration"] = plots.reliability_curve(labels, probs, title=f"{split} calibration",
                                                     ece=metrics[split].get("ece"))
    return figures


# ==================================================================================================
# Logging
# ==================================================================================================
def _finished_run(client, experiment_id, job_name):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_name}'", max_results=5)
    return next((r.info.run_id for r in runs if r.info.status == "FINISHED"), None)


def _log_run(client, experiment_id, description, metrics, *, metrics_path, figures, parent_run_id, extra_tags):
    from mlflow.entities import Metric, Param

    job = description["TrainingJobName"]
    tags = run_tags(description, extra_tags)
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run_id = client.create_run(experiment_id, run_name=job, tags=tags).info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, s) for k, v, s in run_metrics(metrics or {})],
                         params=[Param(k, v) for k, v in run_params(description, metrics).items()])
        if metrics_path:
            client.log_artifact(run_id, metrics_path)
        for name, figure in (figures or {}).items():
            client.log_figure(run_id, figure, f"figures/{name}.png")
        ok = description.get("TrainingJobStatus") in (None, "Completed")
        client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
    except Exception:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def _close(figures):
    if figures:
        import matplotlib.pyplot as plt

        for figure in figures.values():
            plt.close(figure)


def log_training_job(uri, experiment, description, metrics, *, metrics_path=None, figures=None,
                     parent_run_id=None, extra_tags=None, out=print):
    """One MLflow run for the training job ``description`` (DescribeTrainingJob's response) and its ``metrics``
    (metrics.json, loaded; None for a job that left none): its run id, or None (with one warning line) when the
    server cannot be reached or logging fails. ``figures`` default: ``result_figures(metrics)``."""
    job = description.get("TrainingJobName")
    try:
        with _client(uri) as client:
            experiment_id = _experiment_id(client, experiment)
            done = _finished_run(client, experiment_id, job)
            if done:
                out(f"MLflow: {job} is already logged as run {done} (experiment {experiment!r})")
                return done
            figures = result_figures(metrics) if figures is None and metrics else figures
            run_id = _log_run(client, experiment_id, description, metrics, metrics_path=metrics_path,
                              figures=figures, parent_run_id=parent_run_id, extra_tags=extra_tags)
    except Exception as exc:  # noqa: BLE001 - tracking never costs the job or the notebook's results
        out(f"WARNING: MLflow: {job} was not logged to {uri} ({_one_line(exc)}); the job, its artefacts and these "
            "results are unaffected: run this cell again when the server is reachable")
        return None
    finally:
        _close(figures)
    out(f"MLflow: {job} logged as run {run_id} in experiment {experiment!r} ({uri})")
    return run_id


# ==================================================================================================
# Tuning jobs: one parent run, one child run per trial
# ==================================================================================================
def tuning_trials(sm, tuning_job_name):
    """ListTrainingJobsForHyperParameterTuningJob's summaries, every page, oldest first."""
    out, token = [], None
    while True:
        kwargs = {"HyperParameterTuningJobName": tuning_job_name, "SortBy": "CreationTime", "SortOrder": "Ascending"}
        if token:
            kwargs["NextToken"] = token
        page = sm.list_training_jobs_for_hyper_parameter_tuning_job(**kwargs)
        out += page.get("TrainingJobSummaries", [])
        token = page.get("NextToken")
        if not token:
            return out


def trial_metrics(s3, description, work_dir):
    """A job's metrics.json from the output.tar.gz beside its model.tar.gz: ``(metrics, path)``, or ``(None,
    None)`` when the job left none (a failed or stopped trial)."""
    from medimg import artifacts

    model_data = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts") or ""
    if not model_data.endswith("/" + artifacts.MODEL_TAR):
        return None, None
    bucket, key = model_data[5:].split("/", 1)
    folder = os.path.join(work_dir, description["TrainingJobName"])
    os.makedirs(folder, exist_ok=True)
    local = os.path.join(folder, artifacts.OUTPUT_TAR)
    try:
        s3.download_file(bucket, key[: -len(artifacts.MODEL_TAR)] + artifacts.OUTPUT_TAR, local)
    except Exception:  # noqa: BLE001 - no output.tar.gz: a trial that ended before writing one
        return None, None
    artifacts.safe_extract(local, os.path.join(folder, "output"))
    path = os.path.join(folder, "output", "metrics.json")
    if not os.path.isfile(path):
        return None, None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh), path


def _parent_run(client, experiment_id, tuning):
    """The tuning job's run (found again by its ARN tag, so trials that end later join the same parent)."""
    arn = tuning["HyperParameterTuningJobArn"]
    runs = client.search_runs([experiment_id], filter_string=f"tags.`sagemaker.tuning_job_arn` = '{arn}'",
                              max_results=1)
    if runs:
        return runs[0].info.run_id
    config = tuning["HyperParameterTuningJobConfig"]
    tags = {"sagemaker.tuning_job_name": tuning["HyperParameterTuningJobName"], "sagemaker.tuning_job_arn": arn}
    run_id = client.create_run(experiment_id, run_name=tuning["HyperParameterTuningJobName"], tags=tags).info.run_id
    objective = config.get("HyperParameterTuningJobObjective") or {}
    params = {"objective": f"{objective.get('Type')} {objective.get('MetricName')}", "strategy": config.get("Strategy"),
              "max_jobs": (config.get("ResourceLimits") or {}).get("MaxNumberOfTrainingJobs"),
              "max_parallel_jobs": (config.get("ResourceLimits") or {}).get("MaxParallelTrainingJobs"),
              "ranges": json.dumps(config.get("ParameterRanges"))[:6000]}
    for key, value in params.items():
        client.log_param(run_id, key, str(value))
    return run_id


def _log_trial(client, experiment_id, sm, s3, name, parent, tuning_job_name, work_dir):
    """Log one trial as a child of ``parent`` unless it is logged already: 1 when it was logged now, else 0."""
    if _finished_run(client, experiment_id, name):
        return 0
    description = sm.describe_training_job(TrainingJobName=name)
    metrics, path = trial_metrics(s3, description, work_dir)
    figures = result_figures(metrics) if metrics else None
    try:
        _log_run(client, experiment_id, description, metrics, metrics_path=path, figures=figures,
                 parent_run_id=parent, extra_tags={"sagemaker.tuning_job_name": tuning_job_name})
    finally:
        _close(figures)
    return 1


def log_tuning_job(uri, experiment, sm, s3, tuning_job_name, *, work_dir, out=print):
    """One parent run for the tuning job and a child run per trial (``log_training_job``'s content, from each
    trial's own metrics.json; trials logged before are kept, new ones added), the best trial's objective on the
    parent: the parent's run id, or None with one warning line when the server cannot be reached."""
    try:
        with _client(uri) as client:
            experiment_id = _experiment_id(client, experiment)
            tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_job_name)
            parent = _parent_run(client, experiment_id, tuning)
            logged = sum(_log_trial(client, experiment_id, sm, s3, trial["TrainingJobName"], parent, tuning_job_name,
                                    work_dir) for trial in tuning_trials(sm, tuning_job_name))
            best = tuning.get("BestTrainingJob") or {}
            objective = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
            if best.get("TrainingJobName") and isinstance(objective.get("Value"), (int, float)):
                client.set_tag(parent, "sagemaker.best_training_job", best["TrainingJobName"])
                client.log_metric(parent, f"best_{_key(objective.get('MetricName'))}", float(objective["Value"]))
            client.set_terminated(parent, "FINISHED")
    except Exception as exc:  # noqa: BLE001 - tracking never costs the tuning job or the notebook's results
        out(f"WARNING: MLflow: tuning job {tuning_job_name} was not logged to {uri} ({_one_line(exc)}); the jobs and "
            "these results are unaffected: run this cell again when the server is reachable")
        return None
    out(f"MLflow: tuning job {tuning_job_name} is run {parent} with {logged} new trial run(s) in experiment "
        f"{experiment!r}")
    return parent
