"""SageMaker on 127.0.0.1 for the tests: moto's server, plus real training jobs and real endpoints.

moto answers the SageMaker, S3, CloudWatch and Logs APIs but runs nothing: it marks a training job
Completed at once with no artefacts, replaces its MetricDefinitions, and its InvokeEndpoint returns canned
text. ``SageMakerEmulator`` starts ``moto.server.ThreadedMotoServer`` in this process and wraps moto so that

* CreateTrainingJob is recorded as the client sent it (``training_requests``, the raw JSON body), a second job of
  the same name is refused (ResourceInUse, as SageMaker does), and then, when ``run_jobs``, the job really runs in
  a background thread: its channels are fetched from moto's S3 (a prefix as a folder; a URI that names one object,
  such as the weights file or SDK v2's ``model_uri``, as that file in the channel) and

  - an SDK v2 job (the Estimator: ``sagemaker_submit_directory`` = the uploaded sourcedir.tar.gz) runs through
    the real sagemaker-training toolkit on a fake /opt/ml (medimg.launch_v2's ``stage_base_dir`` and
    ``toolkit_env``) with ``python``;
  - an SDK v3 job (ModelTrainer: a ContainerEntrypoint, the code in a ``code`` channel and the SDK's drivers in
    ``sm_drivers``) runs its own container command through those uploaded drivers, their /opt/ml redirected to the
    fake one (medimg.launch_v3's ``stage_v3_base``, ``v3_command``, ``v3_env``), with ``python_v3`` (default
    ``python``) first on PATH as the image's python3/pip3/torchrun;

  checkpoints are restored from and synced to the job's CheckpointConfig S3 URI (SM_CHECKPOINT_DIR stands in for
  /opt/ml/checkpoints, which SageMaker creates), and ``model.tar.gz`` (the model dir) and ``output.tar.gz``
  (output/data) are put at ``<S3OutputPath>/<job>/output/``. Meanwhile the job is InProgress; then Completed, or
  Failed with the failure file as FailureReason, as SageMaker reports it. The job's log goes to CloudWatch Logs
  (``/aws/sagemaker/TrainingJobs``, stream ``<job>/algo-1-<time>``) and every MetricDefinitions regex is applied
  to it, line by line, into CloudWatch metrics (``/aws/sagemaker/TrainingJobs``, dimension TrainingJobName) and
  FinalMetricDataList.
* CreateHyperParameterTuningJob is recorded (``tuning_requests``); moto's canned tuning result stands.
* InvokeEndpoint runs the endpoint's model for real: the model's ModelDataUrl (the SDK's repacked
  model.tar.gz) is extracted like /opt/ml/model and served by ``medimg.serving.ModelServer`` (a process that
  imports ``SAGEMAKER_PROGRAM`` from ``code/`` and calls model_fn once, then input_fn -> predict_fn -> output_fn
  per request, as the PyTorch inference toolkit does); an error with a ``BaseInferenceToolkitError`` status
  becomes SageMaker's ModelError (HTTP 424) carrying that status, anything else a 500 from the model. Each model
  and environment gets its own server; TorchServe's request size limit (TS_MAX_REQUEST_SIZE) is applied first.
* Batch transform jobs run for real, serverless endpoints are served as real-time ones (their ServerlessConfig
  checked), InvokeEndpointAsync answers through S3, and SageMaker's request size limits are applied:
  tests/support/emulator_scoring.py says what exactly, and what it only records.
* The Model Registry, Pipelines (executed: Training, Condition, RegisterModel and Fail steps) and tuning trials:
  tests/support/emulator_mlops.py says exactly what it executes and answers; an endpoint whose model names a model
  package serves that package's container.

* DescribeModel, DescribeEndpointConfig and DescribeEndpoint leave out the empty objects moto adds
  (``VpcConfig: {}``, ``DataCaptureConfig: {}``), which SageMaker does not send and sagemaker-core (SDK v3)
  refuses.

Only one emulator runs at a time (moto's classes are patched for its lifetime). Child processes reach it
through ``emulator.env()`` (AWS_ENDPOINT_URL, fake credentials, and SAGEMAKER_VALIDATE_ROLE=false: moto has no
iam:SimulatePrincipalPolicy, which SDK v3's role check calls).
"""
import base64
import copy
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request

import emulator_mlops
from emulator_scoring import ScoringEmulation, torchserve_refusal
from medimg import launch_v2, launch_v3, opt_ml
from medimg.serving import ModelServer

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDEMULATORFAKE0000", "AWS_SECRET_ACCESS_KEY": "emulator-fake-secret-Zq9x",
                    "AWS_SESSION_TOKEN": "emulator-fake-token-Wp4v"}
_active = None  # the running emulator (moto's classes call back into it)
_ABSENT = object()  # a patched attribute moto does not have (deleted again at stop)


def _s3_parts(uri):
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _tar_dir(folder):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            tar.add(os.path.join(folder, name), arcname=name)
    return buf.getvalue()


def _extract(data, dest):
    """Extract a tarball's regular files and folders (the emulator's own input: refuse anything else)."""
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(root, member.name))
            if not (member.isfile() or member.isdir()) or not (target == root or target.startswith(root + os.sep)):
                raise ValueError(f"unsafe tar member {member.name!r}")
        tar.extractall(root, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(root)


def _with_status(response):
    """A handler's ``(status, headers, body)`` as moto's server sends it: the status from the ``status`` header
    (moto ignores the tuple's first item, which would turn an error into a 200)."""
    status, headers, body = response
    return status, dict(headers, status=str(status)), body


def _without_empty_objects(describe):
    """A moto Describe* response method whose answer leaves out top-level ``{}`` values."""
    def wrapper(handler):
        result = describe(handler)
        if isinstance(getattr(result, "result", None), dict):
            result._result = {k: v for k, v in result.result.items() if v != {}}
        return result

    return wrapper


class JobRun:
    def __init__(self, name, work):
        self.name, self.work = name, work
        self.returncode = None
        self.log = ""
        self.error = None
        self.done = threading.Event()


class SageMakerEmulator:
    def __init__(self, workdir, *, run_jobs=True, job_timeout=600, python=sys.executable, python_v3=None):
        """``python`` runs SDK v2 jobs (it needs the training toolkit) and serves endpoints (it needs medimg);
        ``python_v3`` (default ``python``) is the python3 on PATH of SDK v3 jobs (it needs torch)."""
        self.workdir = os.path.abspath(workdir)
        self.run_jobs, self.job_timeout, self.python = run_jobs, job_timeout, python
        self.python_v3 = python_v3 or python
        self.training_requests, self.tuning_requests, self.invocations = [], [], []
        self.jobs = {}
        self._raw_by_name = {}
        self._servers = {}  # (model data URL, environment) -> ModelServer
        self.scoring = ScoringEmulation(self)  # transform jobs, serverless and async endpoints, size limits
        self._patches = []
        self._lock = threading.Lock()
        self.server = None
        self.url = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        global _active
        if _active is not None:
            raise RuntimeError("a SageMakerEmulator is already running")
        from moto.server import ThreadedMotoServer

        os.makedirs(self.workdir, exist_ok=True)
        self._patch()
        _active = self
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def stop(self):
        global _active
        self.wait_for_jobs(timeout=self.job_timeout)
        self.scoring.wait(timeout=self.job_timeout)
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        if self.server is not None:
            # moto keeps its accounts in this process's memory: reset them, so the next emulator starts empty
            urllib.request.urlopen(urllib.request.Request(self.url + "/moto-api/reset", method="POST"), timeout=30)
            self.server.stop()
        for owner, name, original in reversed(self._patches):
            delattr(owner, name) if original is _ABSENT else setattr(owner, name, original)
        self._patches.clear()
        _active = None

    def env(self, base=None):
        """Environment for a child process (papermill kernel, scripts) that talks to this emulator."""
        env = dict(os.environ if base is None else base)
        env.update(FAKE_CREDENTIALS)
        env.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_ENDPOINT_URL": self.url, "SAGEMAKER_VALIDATE_ROLE": "false"})
        env.pop("SAGEMAKER_SUPPRESS_V2_WARNING", None)  # a child sees the SDK v2 warnings a real user would see
        env.pop("AWS_SECURITY_TOKEN", None)
        env.pop("AWS_PROFILE", None)
        return env

    def client(self, service):
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"])

    def wait_for_jobs(self, timeout=600):
        end = time.time() + timeout
        for run in list(self.jobs.values()):
            run.done.wait(max(0.0, end - time.time()))

    # ------------------------------------------------------------------ moto patches
    def _patch_attr(self, owner, name, new):
        self._patches.append((owner, name, owner.__dict__.get(name, _ABSENT)))
        setattr(owner, name, new)

    def _patch(self):
        from moto.sagemaker import exceptions as sm_exceptions
        from moto.sagemaker import models as sm_models
        from moto.sagemaker import responses as sm_responses
        from moto.sagemakerruntime import responses as rt_responses

        response_cls = sm_responses.SageMakerResponse
        backend_cls = sm_models.SageMakerModelBackend
        original_response = response_cls.create_training_job
        original_backend = backend_cls.create_training_job
        original_tuning = response_cls.create_hyper_parameter_tuning_job

        def create_training_job_response(handler):
            raw = json.loads(handler.body)
            if raw["TrainingJobName"] in _active._raw_by_name:  # SageMaker: names are unique per account/region
                raise sm_exceptions.ResourceInUseException(
                    f"Training job names must be unique within an AWS account and region, and a training job "
                    f"with this name already exists ({raw['TrainingJobName']})")
            _active.training_requests.append(raw)
            _active._raw_by_name[raw["TrainingJobName"]] = raw
            return original_response(handler)

        def create_training_job_backend(backend, **kwargs):
            sent_metrics = copy.deepcopy((kwargs.get("algorithm_specification") or {}).get("MetricDefinitions"))
            job = original_backend(backend, **kwargs)
            if sent_metrics is not None:  # moto replaces them with its own
                job.algorithm_specification["MetricDefinitions"] = sent_metrics
            _active._job_created(job, backend)
            return job

        def create_tuning_job_response(handler):
            _active.tuning_requests.append(json.loads(handler.body))
            return original_tuning(handler)

        def invoke_endpoint(handler):
            return _with_status(_active._invoke(handler))

        self._patch_attr(response_cls, "create_training_job", create_training_job_response)
        self._patch_attr(backend_cls, "create_training_job", create_training_job_backend)
        self._patch_attr(response_cls, "create_hyper_parameter_tuning_job", create_tuning_job_response)
        self._patch_attr(rt_responses.SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint)
        for name in ("describe_model", "describe_endpoint_config", "describe_endpoint"):
            self._patch_attr(response_cls, name, _without_empty_objects(getattr(response_cls, name)))
        # image bodies are bytes: keep moto from decoding them as UTF-8
        self._patch_attr(rt_responses.SageMakerRuntimeResponse, "use_raw_body", True)
        emulator_mlops.install(self)
        self.scoring.patch(self._patch_attr)

    # ------------------------------------------------------------------ training jobs
    def _job_created(self, job, backend):
        name = job.training_job_name
        run = JobRun(name, os.path.join(self.workdir, "jobs", name))
        self.jobs[name] = run
        job.output_data_config.setdefault("KmsKeyId", "")  # SageMaker always describes it; the SDK's attach needs it
        if not self.run_jobs:
            run.done.set()
            return
        job.training_job_status = "InProgress"
        job.secondary_status = "Starting"
        run.artifacts = job.model_artifacts
        job.model_artifacts = None
        job.training_end_time = None
        threading.Thread(target=self._run_job, args=(job, run), name=f"job-{name}", daemon=True).start()

    def _run_job(self, job, run):
        started = time.time()
        try:
            self._execute(job, run)
        except Exception as exc:  # noqa: BLE001 - the emulator's own failure becomes the job's
            run.error = f"emulator error: {type(exc).__name__}: {exc}"
            run.returncode = -1
        finally:
            self._finish(job, run, started)
            run.done.set()

    def _transition(self, job, status, message):
        now = time.time()
        from datetime import datetime, timezone

        stamp = datetime.fromtimestamp(now, timezone.utc)
        transitions = job.secondary_status_transitions
        if transitions and "EndTime" not in transitions[-1]:
            transitions[-1]["EndTime"] = stamp
        transitions.append({"Status": status, "StartTime": stamp, "StatusMessage": message})
        job.secondary_status = status

    def _execute(self, job, run):
        """Stage the job's /opt/ml (SDK v2 or v3 launcher), run it, and upload what SageMaker uploads."""
        s3 = self.client("s3")
        name = job.training_job_name
        spec = job.algorithm_specification or {}
        if job.resource_config.get("InstanceCount", 1) != 1:
            raise RuntimeError("the emulator runs single-instance jobs only")
        shutil.rmtree(run.work, ignore_errors=True)
        base = os.path.join(run.work, "opt_ml")
        self._transition(job, "Downloading", "Downloading input data")
        if spec.get("ContainerEntrypoint"):  # SDK v3's ModelTrainer: its drivers are a channel
            channels = self._download_channels(s3, job, os.path.join(base, "input", "data"))
            argv, env = self._stage_v3(job, base, channels)
        else:
            channels_root = os.path.join(run.work, "channels")
            channels = self._download_channels(s3, job, channels_root)
            argv, env = self._stage_v2(s3, job, base, channels_root, channels)
        env.update(self._raw_by_name.get(name, {}).get("Environment") or {})
        env["TRAINING_JOB_NAME"] = name
        checkpoints = os.path.join(base, "checkpoints")  # what /opt/ml/checkpoints is in the container
        ckpt_uri = (job.checkpoint_config or {}).get("S3Uri")
        if ckpt_uri:  # SageMaker restores the checkpoint prefix into the local path before the script starts
            os.makedirs(checkpoints, exist_ok=True)
            self._download_prefix(s3, ckpt_uri, checkpoints)
            env["SM_CHECKPOINT_DIR"] = checkpoints  # train.py's stand-in for the literal /opt/ml/checkpoints
        else:
            env.pop("SM_CHECKPOINT_DIR", None)
        self._transition(job, "Training", "Training image download completed. Training in progress.")
        self._run_process(job, run, argv, env, base)
        self._transition(job, "Uploading", "Uploading generated training model")
        if ckpt_uri:
            self._upload_dir(s3, checkpoints, ckpt_uri)
        out_bucket, out_key = _s3_parts(job.output_data_config["S3OutputPath"].rstrip("/") + f"/{name}/output/")
        s3.put_object(Bucket=out_bucket, Key=out_key + "model.tar.gz", Body=_tar_dir(os.path.join(base, "model")))
        s3.put_object(Bucket=out_bucket, Key=out_key + "output.tar.gz",
                      Body=_tar_dir(os.path.join(base, "output", "data")))
        failure = os.path.join(base, "output", "failure")
        if run.returncode and os.path.exists(failure) and not run.error:
            with open(failure, encoding="utf-8", errors="replace") as fh:
                run.error = "AlgorithmError: " + fh.read()[:1024]
        elif run.returncode and not run.error:
            run.error = f"AlgorithmError: the training process exited with {run.returncode}"

    def _download_channels(self, s3, job, root):
        """Every input channel's S3 prefix into ``root/<channel>`` (a URI naming one object, as SDK v2's model_uri
        does, puts that object there under its own name); the channel names, in the job's order."""
        channels = []
        for channel in job.input_data_config or []:
            dest = os.path.join(root, channel["ChannelName"])
            os.makedirs(dest, exist_ok=True)
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            bucket, key = _s3_parts(uri)
            if key and not key.endswith("/") and s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get(
                    "Contents", [{}])[0].get("Key") == key:
                s3.download_file(bucket, key, os.path.join(dest, key.rsplit("/", 1)[-1]))
            else:
                self._download_prefix(s3, uri, dest)
            channels.append(channel["ChannelName"])
        return channels

    def _stage_v2(self, s3, job, base, channels_root, channels):
        """SDK v2: the toolkit's /opt/ml with the uploaded sourcedir.tar.gz as its code; (argv, env)."""
        hps = {k: json.loads(v) for k, v in (job.hyper_parameters or {}).items()}
        if hps.get("sagemaker_torch_distributed_enabled"):
            raise RuntimeError("the emulator runs SDK v2 jobs without distribution only")
        code = launch_v2.stage_base_dir(base, channels_root, channels, hps, ["algo-1"], "algo-1")
        shutil.rmtree(code)  # the job runs the uploaded sourcedir, not this checkout's code/
        submit = hps["sagemaker_submit_directory"]
        if submit.startswith("s3://"):
            bucket, key = _s3_parts(submit)
            _extract(s3.get_object(Bucket=bucket, Key=key)["Body"].read(), code)
        else:  # network isolation: SDK v2 sends the sourcedir as the "code" channel and names its path in /opt/ml
            with open(os.path.join(channels_root, os.path.relpath(submit, "/opt/ml/input/data")), "rb") as fh:
                _extract(fh.read(), code)
        opt_ml.write_json(os.path.join(base, "input", "config", "hyperparameters.json"),
                          launch_v2.encode_hyperparameters(dict(hps, sagemaker_submit_directory=code)))
        argv = [self.python, "-c", launch_v2.TOOLKIT_COMMAND]
        return argv, launch_v2.toolkit_env(base, base, 1)

    def _stage_v3(self, job, base, channels):
        """SDK v3: the downloaded ``code`` and ``sm_drivers`` channels in place, the drivers redirected to
        ``base``, and the job's own container command; (argv, env)."""
        missing = [c for c in ("code", "sm_drivers") if c not in channels]
        if missing:
            raise RuntimeError(f"a job with a ContainerEntrypoint but without the {missing} channel(s): not a "
                               "ModelTrainer job the emulator knows how to run")
        launch_v3.stage_v3_base(base, {ch: None for ch in channels}, job.hyper_parameters or {}, ["algo-1"],
                                "algo-1")
        spec = job.algorithm_specification
        argv = launch_v3.v3_command(spec["ContainerEntrypoint"], spec.get("ContainerArguments"), base)
        return argv, launch_v3.v3_env(self.python_v3, 1, job.training_job_name)

    def _run_process(self, job, run, argv, env, base):
        """Run the job's process (its own session, killed at MaxRuntimeInSeconds); its log into ``run.log``."""
        timeout = min(self.job_timeout, (job.stopping_condition or {}).get("MaxRuntimeInSeconds") or self.job_timeout)
        with open(os.path.join(run.work, "train.log"), "w+", encoding="utf-8") as log:
            proc = subprocess.Popen(argv, env=env, cwd=base, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                run.returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                run.returncode = proc.wait()
                run.error = f"MaxRuntimeExceeded: the job ran past {timeout} s"
            log.seek(0)
            run.log = log.read()

    def _download_prefix(self, s3, uri, dest):
        """Every object under the S3 folder ``uri`` into ``dest``, keeping sub-folders."""
        bucket, prefix = _s3_parts(uri.rstrip("/") + "/")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                if rel and not rel.endswith("/"):
                    os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
                    s3.download_file(bucket, obj["Key"], os.path.join(dest, rel))

    def _upload_dir(self, s3, folder, uri):
        bucket, prefix = _s3_parts(uri.rstrip("/") + "/")
        for dirpath, _, filenames in os.walk(folder):
            for f in filenames:
                path = os.path.join(dirpath, f)
                s3.upload_file(path, bucket, prefix + os.path.relpath(path, folder).replace(os.sep, "/"))

    def _finish(self, job, run, started):
        from datetime import datetime, timezone

        ended = time.time()
        lines = run.log.splitlines()
        try:
            self._publish_log(job, lines, started, ended)
        except Exception as exc:  # noqa: BLE001
            run.error = run.error or f"emulator error publishing the log: {exc}"
        job.training_start_time = datetime.fromtimestamp(started, timezone.utc)
        job.training_end_time = datetime.fromtimestamp(ended, timezone.utc)
        job.training_time_in_seconds = max(1, int(round(ended - started)))
        job.billable_time_in_seconds = job.training_time_in_seconds
        job.model_artifacts = getattr(run, "artifacts", None)
        if run.error or run.returncode:
            job.failure_reason = run.error
            self._transition(job, "Failed", "Training job failed")
            job.training_job_status = "Failed"
        else:
            self._transition(job, "Completed", "Training job completed")
            job.training_job_status = "Completed"
        job.secondary_status_transitions[-1]["EndTime"] = job.training_end_time

    def _publish_log(self, job, lines, started, ended):
        """The log to CloudWatch Logs; the metric definitions' matches to CloudWatch metrics."""
        from datetime import datetime, timezone

        name = job.training_job_name
        logs, cw = self.client("logs"), self.client("cloudwatch")
        try:
            logs.create_log_group(logGroupName=LOG_GROUP)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        stream = f"{name}/algo-1-{int(started)}"
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        n = max(1, len(lines))
        stamps = [int(1000 * (started + (ended - started) * i / n)) for i in range(len(lines))]
        for start in range(0, len(lines), 5000):
            events = [{"timestamp": t, "message": m or " "} for t, m in
                      zip(stamps[start:start + 5000], lines[start:start + 5000])]
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)
        final, data = {}, []
        definitions = (job.algorithm_specification or {}).get("MetricDefinitions") or []
        for stamp, line in zip(stamps, lines):
            for definition in definitions:
                match = re.search(definition["Regex"], line)
                if match:
                    try:
                        value = float(match.group(1))
                    except (IndexError, ValueError):
                        continue
                    when = datetime.fromtimestamp(stamp / 1000, timezone.utc)
                    data.append({"MetricName": definition["Name"], "Value": value, "Timestamp": when,
                                 "Dimensions": [{"Name": "TrainingJobName", "Value": name}]})
                    final[definition["Name"]] = {"MetricName": definition["Name"], "Value": value, "Timestamp": when}
        for start in range(0, len(data), 20):
            cw.put_metric_data(Namespace=METRIC_NAMESPACE, MetricData=data[start:start + 20])
        job.final_metric_data_list = list(final.values())

    # ------------------------------------------------------------------ endpoints
    def _invoke(self, handler):
        name = handler.path.split("/")[2]
        content_type = handler.headers.get("Content-Type")
        accept = handler.headers.get("Accept")
        body = handler.raw_body if isinstance(handler.raw_body, bytes) else (handler.raw_body or "").encode()
        record = {"endpoint": name, "content_type": content_type, "accept": accept, "body": body}
        self.invocations.append(record)
        sm = self.client("sagemaker")
        try:
            config = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
            variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
            container = emulator_mlops.resolve_container(sm, sm.describe_model(ModelName=variant["ModelName"]))
        except sm.exceptions.ClientError as exc:
            record["status"] = 400
            return 400, {"x-amzn-ErrorType": "ValidationError"}, json.dumps(
                {"message": f"Endpoint {name} of account 123456789012 not found. ({exc})"})
        refused = self.scoring.request_refusal(name, variant, body)  # SageMaker's 6 MB (serverless: 4 MB)
        if refused:
            record["status"] = refused[0]
            return refused
        status, headers, out = self._serve(container, body, content_type, accept)
        record.update(status=status, response=out, model_data=container["ModelDataUrl"],
                      model_package=container.get("ModelPackageName"))
        if status >= 400:  # SageMaker wraps the model's error status in a ModelError (424)
            message = out.decode("utf-8", "replace")
            return 424, {"x-amzn-ErrorType": "ModelError"}, json.dumps({
                "message": f"Received {'client' if status < 500 else 'server'} error ({status}) from primary "
                           f"with message \"{message}\".", "OriginalStatusCode": status, "OriginalMessage": message})
        return 200, headers, out

    def _serve(self, container, body, content_type, accept, env=None):
        """The model container's answer: ``container``'s model served with its Environment (``env`` over it: a
        transform job's), one server per model and environment; TorchServe's size limit first."""
        url = container["ModelDataUrl"]
        env = dict(container.get("Environment") or {}, **(env or {}))
        refused = torchserve_refusal(env, len(body))
        if refused:
            return refused
        with self._lock:
            key = (url, json.dumps(env, sort_keys=True))
            if key not in self._servers:
                model_dir = os.path.join(self.workdir, "endpoints", str(len(self._servers)), "model")
                bucket, s3_key = _s3_parts(url)
                _extract(self.client("s3").get_object(Bucket=bucket, Key=s3_key)["Body"].read(), model_dir)
                self._servers[key] = ModelServer(model_dir, env.get("SAGEMAKER_PROGRAM", "inference.py"), env=env,
                                                 python=self.python, toolkit_errors=True)
        status, out_type, out = self._servers[key].invoke(body, content_type, accept)
        return status, {"Content-Type": out_type}, out
