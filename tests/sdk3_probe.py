"""What medimg.sdk_v3 builds, printed as JSON, for tests that run in the SDK v2 environment: run with .venv-sdk3's
python (SDK v3 installed, medimg installed with --no-deps -e .), never collected by pytest.

    .venv-sdk3/bin/python tests/sdk3_probe.py build  < cases.json   # no AWS: a session that refuses every request
    .venv-sdk3/bin/python tests/sdk3_probe.py job    < job.json     # against the emulator (AWS_ENDPOINT_URL)

``build``: ``{"jobs": {case: JobSpec kwargs}, "tuners": {case: [JobSpec kwargs, TuningSpec kwargs]}}`` in; out, per
job case, the CreateTrainingJob request ModelTrainer would send (``_create_training_job_args(boto3=True)``), what
it would upload (and the drivers' sm_train.sh, sourcecode.json, distributed.json), or the error; per tuner case
its settings; and ``sdk.detect()``.

``job``: ``{"spec": JobSpec kwargs, "bucket", "deploy": bool, "image": path, "tuning": TuningSpec kwargs | null,
"second_job": JobSpec changes | null}`` in; starts the job with ``sdk_v3.start_job``, waits, and (``deploy``)
deploys its model.tar.gz, sends the image through the endpoint, describes and deletes it; (``tuning``) starts a
tuning job; (``second_job``) starts a changed job whose first name the SDK gives is the first job's (as two jobs
started within one second get) and waits for it. Out: names, statuses, failure reasons, descriptions, the answer.
"""
import json
import os
import shutil
import sys
import tempfile


def recording_session(bucket, keep):
    """A v3 Session that never reaches AWS: every botocore request fails before it is sent (the SDK tolerates
    that for its optional IAM check; anything else fails the probe), ``default_bucket()`` is ``bucket``, and
    ``upload_data`` records what it would upload (folders copied under ``keep``) and returns its S3 URI."""
    import boto3
    from sagemaker.core.helper.session_helper import Session

    from medimg.sdk import SAGEMAKER_CONFIG

    class Refused(Exception):
        pass

    def refuse(request, **_):
        raise Refused(f"no AWS in this probe: {request.method} {request.url}")

    class RecordingSession(Session):
        uploads = []

        def default_bucket(self):
            return bucket

        def upload_data(self, path, bucket=None, key_prefix="data", callback=None, extra_args=None):
            copy = os.path.join(keep, str(len(self.uploads)))
            if os.path.isdir(path):
                shutil.copytree(path, copy)
            self.uploads.append({"path": path, "bucket": bucket, "key_prefix": key_prefix, "extra_args": extra_args,
                                 "copy": copy if os.path.isdir(path) else None})
            return f"s3://{bucket}/{key_prefix}"

    boto = boto3.Session(region_name="us-east-1", aws_access_key_id="probe", aws_secret_access_key="probe")
    boto.events.register("before-send", refuse)
    return RecordingSession(boto_session=boto, default_bucket=bucket, sagemaker_config=SAGEMAKER_CONFIG)


def read_drivers(folder):
    """sm_train.sh, sourcecode.json and distributed.json of a drivers folder, and its file list."""
    out = {"files": sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
                           if "__pycache__" not in d)}
    for name in ("sm_train.sh", "sourcecode.json", "distributed.json"):
        with open(os.path.join(folder, name), encoding="utf-8") as fh:
            out[name] = fh.read()
    return out


def build_job(kwargs, keep):
    from medimg import sdk_v3
    from medimg.job import JobSpec

    session = recording_session("probe-bucket", keep)
    session.uploads.clear()
    spec = JobSpec(**kwargs)
    trainer = sdk_v3.build_trainer(spec, session)
    request = trainer._create_training_job_args(input_data_config=sdk_v3.input_data(spec.channels, spec.model_uri),
                                                boto3=True)
    uploads = [dict(u) for u in session.uploads]
    drivers = next((read_drivers(u["copy"]) for u in uploads if u["copy"] and
                    os.path.isfile(os.path.join(u["copy"], "sm_train.sh"))), None)
    code = next((sorted(os.listdir(u["copy"])) for u in uploads if u["copy"] and
                 os.path.isfile(os.path.join(u["copy"], "train.py"))), None)
    return {"request": request, "uploads": uploads, "drivers": drivers, "code_files": code}


def build_tuner(job_kwargs, tuning_kwargs, keep):
    from medimg import sdk_v3
    from medimg.job import JobSpec, TuningSpec

    t = sdk_v3.tuner(JobSpec(**job_kwargs), recording_session("probe-bucket", keep), TuningSpec(**tuning_kwargs))
    return {"objective": [t.objective_metric_name, t.objective_type], "strategy": t.strategy,
            "max_jobs": t.max_jobs, "max_parallel_jobs": t.max_parallel_jobs, "early_stopping": t.early_stopping_type,
            "metric_definitions": t.metric_definitions, "tags": t.tags, "base": t.base_tuning_job_name,
            "ranges": {name: p.as_tuning_range(name) for name, p in t._hyperparameter_ranges.items()},
            "range_types": {name: type(p).__name__ for name, p in t._hyperparameter_ranges.items()},
            "checkpoint_config": t.model_trainer.checkpoint_config is not None}


def guarded(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the error is the answer
        return {"error": f"{type(exc).__name__}: {exc}"}


def build(cases):
    from medimg import sdk

    keep = tempfile.mkdtemp(prefix="sdk3-probe-")
    try:
        return {"detect": sdk.detect(), "describe": sdk.describe(sdk.detect()),
                "jobs": {name: guarded(build_job, kw, os.path.join(keep, name)) for name, kw in cases["jobs"].items()},
                "tuners": {name: guarded(build_tuner, job, tuning, keep)
                           for name, (job, tuning) in cases.get("tuners", {}).items()}}
    finally:
        shutil.rmtree(keep, ignore_errors=True)


def wait(session, name):
    """Wait for a training job to end: its status and FailureReason."""
    from sagemaker.core.utils.exceptions import FailedStatusError

    from medimg import sdk_v3

    training_job = sdk_v3.training_job(session, name)
    try:
        training_job.wait(poll=1, timeout=600, logs=False)
    except FailedStatusError:
        training_job.refresh()
    return training_job.training_job_status, training_job.failure_reason


def name_collision_once(name):
    """Make the SDK's next job name ``name`` (as if started within the same second as that job), then its own."""
    import sagemaker.train.model_trainer as model_trainer

    real = model_trainer._get_unique_name

    def once(base, max_length=63):
        model_trainer._get_unique_name = real
        return name

    model_trainer._get_unique_name = once


def job(params):
    """Against the emulator: train and wait; deploy, invoke, describe and delete; tune; a second job."""
    import boto3

    from medimg import sdk_v3
    from medimg.job import JobSpec, TuningSpec

    session = sdk_v3.make_session(boto3.Session(region_name="us-east-1"), default_bucket=params["bucket"])
    sm = session.boto_session.client("sagemaker")
    spec = JobSpec(**params["spec"])
    _, name = sdk_v3.start_job(spec, session)
    status, reason = wait(session, name)
    out = {"job_name": name, "status": status, "failure_reason": reason, "model_data": sdk_v3.model_data(session, name)}
    if params.get("deploy"):
        endpoint = sdk_v3.deploy(spec, out["model_data"], session, poll=1)
        out["endpoint"] = endpoint.endpoint_name
        with open(params["image"], "rb") as fh:
            out["answer"] = sdk_v3.invoke(endpoint, fh.read())
        out["model"] = sm.describe_model(ModelName=endpoint.endpoint_name)
        out["endpoint_config"] = sm.describe_endpoint_config(EndpointConfigName=endpoint.endpoint_name)
        out["deleted"] = sdk_v3.delete(session, endpoint.endpoint_name, out=lambda line: None)
    if params.get("tuning") is not None:
        _, out["tuning_job"] = sdk_v3.start_tuning(spec, session, TuningSpec(**params["tuning"]))
    if params.get("second_job") is not None:
        name_collision_once(name)
        _, second = sdk_v3.start_job(spec.replace(**params["second_job"]), session)
        out["second_job"] = [second, *wait(session, second)]
    return out


if __name__ == "__main__":
    command, request = sys.argv[1], json.load(sys.stdin)
    result = build(request) if command == "build" else job(request)
    json.dump(result, sys.stdout, default=str)
