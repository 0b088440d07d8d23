"""Scoring for tests/sagemaker_emulator.py: batch transform jobs that really run, serverless and asynchronous
endpoints, and SageMaker's and the container's size limits (moto stores transform jobs and answers at once,
writing nothing; its InvokeEndpointAsync writes canned JSON to a bucket of its own).

``ScoringEmulation(emulator)`` patches moto (through the emulator's ``_patch_attr``) so that

* CreateTransformJob is recorded as sent (``transform_requests``) and runs in a background thread, as SageMaker
  runs it: the input is the ``S3Prefix``'s objects or the ``ManifestFile``'s list (``[{"prefix": ...}, key,
  ...]``); each object is one request (SplitType None; another SplitType is refused) with the job's ContentType
  and Accept, served by the job's model (``emulator._serve``: the model's ModelDataUrl and Environment, the job's
  Environment over it, plus SAGEMAKER_BATCH, SAGEMAKER_MAX_PAYLOAD_IN_MB, SAGEMAKER_BATCH_STRATEGY and
  SAGEMAKER_MAX_CONCURRENT_TRANSFORMS, as SageMaker sets them); the answer goes to ``<S3OutputPath>/<key relative to
  the prefix>.out``. An object above MaxPayloadInMB, or one the model answers with an error, writes no output and
  fails the job (FailureReason ``ClientError: <bucket>/<key>: ...``, the first failure and how many failed) after
  the other objects; otherwise Completed. StopTransformJob (not in moto) stops it before the next object.
* DescribeTransformJob leaves out moto's empty objects, as for the other Describe* calls.
* CreateEndpointConfig is recorded as sent (``endpoint_config_requests``); a ServerlessConfig outside SageMaker's
  limits (MemorySizeInMB 1024..6144 in 1 GB steps, MaxConcurrency 1..200, ProvisionedConcurrency at most
  MaxConcurrency) is a ValidationError. A serverless endpoint is then served like a real-time one.
* InvokeEndpoint refuses a body above 6,291,456 bytes (4 MB for a serverless endpoint) with a ValidationError
  before the model sees it, as SageMaker does (the message is the emulator's).
* InvokeEndpointAsync (recorded in ``async_invocations``) answers at once with the OutputLocation
  ``<S3OutputPath>/<inference id>.out`` and FailureLocation ``<S3FailurePath>/<inference id>-error.out`` of the
  endpoint config's AsyncInferenceConfig; a background thread reads the InputLocation object (at most 1 GB), has
  the endpoint's model answer it, and writes the answer there, or the model's error message to the failure path.
  An endpoint without AsyncInferenceConfig is a ValidationError.
* The model container refuses a body above TorchServe's max_request_size (6,553,500 bytes unless the model's
  environment sets TS_MAX_REQUEST_SIZE) with a 413, as the PyTorch inference container does (``torchserve_refusal``).

Only recorded, not enforced: instance types and counts of transform jobs, MaxConcurrentTransforms, KMS keys,
ModelClientConfig, data capture, async notifications, RequestTTLSeconds and InvocationTimeoutSeconds.
"""
import json
import threading
import time
import uuid

from emulator_mlops import resolve_container

MB = 1024 * 1024
REALTIME_MAX_BYTES, SERVERLESS_MAX_BYTES, ASYNC_MAX_BYTES = 6 * MB, 4 * MB, 1024 * MB
TORCHSERVE_DEFAULT_MAX_BYTES = 6_553_500
SERVERLESS_MEMORY = (1024, 2048, 3072, 4096, 5120, 6144)


def _s3_parts(uri):
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def torchserve_refusal(env, size):
    """The container's answer to a body above TorchServe's max_request_size, or None."""
    limit = int((env or {}).get("TS_MAX_REQUEST_SIZE") or TORCHSERVE_DEFAULT_MAX_BYTES)
    if size > limit:
        return 413, {"Content-Type": "text/plain"}, (
            f"the request body of {size} bytes is above TorchServe's max_request_size ({limit} bytes); set "
            f"TS_MAX_REQUEST_SIZE in the model's environment").encode()
    return None


def _validation_error(message):
    from moto.sagemaker.exceptions import ValidationError

    return ValidationError(message=message)


class TransformRun:
    def __init__(self, name, request):
        self.name, self.request = name, request
        self.log, self.failures, self.job = [], [], None
        self.stop, self.done = threading.Event(), threading.Event()


class ScoringEmulation:
    def __init__(self, emulator):
        self.emu = emulator
        self.transform_requests, self.endpoint_config_requests, self.async_invocations = [], [], []
        self.transforms = {}
        self._threads = []

    # ------------------------------------------------------------------ patches
    def patch(self, patch_attr):
        from moto.sagemaker import models as sm_models
        from moto.sagemaker import responses as sm_responses
        from moto.sagemakerruntime import responses as rt_responses

        from sagemaker_emulator import _with_status, _without_empty_objects

        scoring, response_cls = self, sm_responses.SageMakerResponse
        original_response = response_cls.create_transform_job
        original_backend = sm_models.SageMakerModelBackend.create_transform_job
        original_config = response_cls.create_endpoint_config

        def create_transform_job_response(handler):
            raw = json.loads(handler.body)
            scoring.transform_requests.append(raw)
            scoring.transforms[raw["TransformJobName"]] = TransformRun(raw["TransformJobName"], raw)
            return original_response(handler)

        def create_transform_job_backend(backend, **kwargs):
            job = original_backend(backend, **kwargs)
            run = scoring.transforms[job.transform_job_name]
            run.job, job.transform_job_status, job.transform_end_time = job, "InProgress", None  # moto: Completed
            scoring._start(scoring._run_transform, job, run)
            return job

        def create_endpoint_config_response(handler):
            raw = json.loads(handler.body)
            for variant in raw.get("ProductionVariants") or []:
                scoring._check_serverless(variant.get("ServerlessConfig"))
            scoring.endpoint_config_requests.append(raw)
            return original_config(handler)

        def stop_transform_job(handler):
            return scoring._stop_transform(json.loads(handler.body)["TransformJobName"])

        patch_attr(response_cls, "create_transform_job", create_transform_job_response)
        patch_attr(sm_models.SageMakerModelBackend, "create_transform_job", create_transform_job_backend)
        patch_attr(response_cls, "create_endpoint_config", create_endpoint_config_response)
        patch_attr(response_cls, "stop_transform_job", stop_transform_job)
        patch_attr(response_cls, "describe_transform_job",
                   _without_empty_objects(response_cls.describe_transform_job))
        patch_attr(rt_responses.SageMakerRuntimeResponse, "invoke_endpoint_async",
                   lambda handler: _with_status(scoring._invoke_async(handler)))

    def wait(self, timeout=600):
        end = time.time() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, end - time.time()))

    def _start(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    # ------------------------------------------------------------------ endpoints
    def _check_serverless(self, config):
        if not config:
            return
        memory, concurrency = config.get("MemorySizeInMB"), config.get("MaxConcurrency")
        if memory not in SERVERLESS_MEMORY:
            raise _validation_error(f"MemorySizeInMB {memory} is not one of {list(SERVERLESS_MEMORY)}")
        if not isinstance(concurrency, int) or not 1 <= concurrency <= 200:
            raise _validation_error(f"MaxConcurrency {concurrency} is not between 1 and 200")
        provisioned = config.get("ProvisionedConcurrency")
        if provisioned is not None and not 1 <= provisioned <= concurrency:
            raise _validation_error(f"ProvisionedConcurrency {provisioned} must be between 1 and MaxConcurrency")

    def request_refusal(self, endpoint_name, variant, body):
        """SageMaker's refusal of an InvokeEndpoint body above the endpoint's limit, or None."""
        limit = SERVERLESS_MAX_BYTES if variant.get("ServerlessConfig") else REALTIME_MAX_BYTES
        if len(body) <= limit:
            return None
        return 400, {"x-amzn-ErrorType": "ValidationError"}, json.dumps({
            "message": f"Request body of {len(body)} bytes to endpoint {endpoint_name} is above the maximum of "
                       f"{limit} bytes for {'a serverless' if limit == SERVERLESS_MAX_BYTES else 'an'} endpoint"})

    def _invoke_async(self, handler):
        name, headers = handler.path.split("/")[2], handler.headers
        sm = self.emu.client("sagemaker")
        config = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(
            EndpointName=name)["EndpointConfigName"])
        output = (config.get("AsyncInferenceConfig") or {}).get("OutputConfig")
        if not output:
            return 400, {"x-amzn-ErrorType": "ValidationError"}, json.dumps(
                {"message": f"Endpoint {name} has no AsyncInferenceConfig: invoke it with InvokeEndpoint"})
        inference_id = headers.get("X-Amzn-SageMaker-Inference-Id") or str(uuid.uuid4())
        record = {"endpoint": name, "inference_id": inference_id,
                  "input": headers.get("X-Amzn-SageMaker-InputLocation"),
                  "content_type": headers.get("X-Amzn-SageMaker-Content-Type"),
                  "accept": headers.get("X-Amzn-SageMaker-Accept"),
                  "output": f"{output['S3OutputPath'].rstrip('/')}/{inference_id}.out",
                  "failure": f"{output['S3FailurePath'].rstrip('/')}/{inference_id}-error.out"
                  if output.get("S3FailurePath") else None}
        self.async_invocations.append(record)
        container = resolve_container(sm, sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"]))
        record["model_package"] = container.get("ModelPackageName")
        self._start(self._answer_async, record, container)
        out = {"X-Amzn-SageMaker-OutputLocation": record["output"]}
        if record["failure"]:
            out["X-Amzn-SageMaker-FailureLocation"] = record["failure"]
        return 202, out, json.dumps({"InferenceId": inference_id})

    def _answer_async(self, record, container):
        s3 = self.emu.client("s3")
        try:
            bucket, key = _s3_parts(record["input"])
            size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
            if size > ASYNC_MAX_BYTES:
                status, out = 400, f"the input of {size} bytes is above the 1 GB of an asynchronous request".encode()
            else:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                status, _, out = self.emu._serve(container, body, record["content_type"], record["accept"])
        except Exception as exc:  # noqa: BLE001 - the emulator's own failure becomes the request's
            status, out = 500, f"emulator error: {type(exc).__name__}: {exc}".encode()
        record["status"] = status
        target = record["output"] if status < 400 else record["failure"]
        if target:
            bucket, key = _s3_parts(target)
            s3.put_object(Bucket=bucket, Key=key, Body=out)

    # ------------------------------------------------------------------ transform jobs
    def _stop_transform(self, name):
        from moto.core.responses import EmptyResult

        run = self.transforms.get(name)
        if run is None:
            raise _validation_error(f"Could not find transform job '{name}'.")
        if run.job.transform_job_status == "InProgress":
            run.job.transform_job_status = "Stopping"
        run.stop.set()
        return EmptyResult()

    def _inputs(self, s3, source):
        """``[(bucket, key, key relative to the prefix), ...]`` of an S3Prefix or a ManifestFile."""
        if source["S3DataType"] == "ManifestFile":
            bucket, key = _s3_parts(source["S3Uri"])
            manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            bucket, prefix = _s3_parts(manifest[0]["prefix"])
            return [(bucket, prefix + rel, rel) for rel in manifest[1:]]
        bucket, prefix = _s3_parts(source["S3Uri"])
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for o in page.get("Contents", [])]
        base = prefix if prefix.endswith("/") or not keys else prefix.rsplit("/", 1)[0] + "/"
        return [(bucket, k, k[len(base):]) for k in keys if not k.endswith("/")]

    def _run_transform(self, job, run):
        from datetime import datetime, timezone

        status = "Failed"
        try:
            status = self._transform(job, run)
        except Exception as exc:  # noqa: BLE001 - the emulator's own failure becomes the job's
            run.failures.append(f"InternalServerError: emulator error: {type(exc).__name__}: {exc}")
        finally:
            if run.failures:
                more = f" ({len(run.failures)} objects failed)" if len(run.failures) > 1 else ""
                job.failure_reason, status = run.failures[0] + more, "Failed"
            job.transform_end_time = datetime.now(timezone.utc)
            job.transform_job_status = status
            run.done.set()

    def _transform(self, job, run):
        s3, sm = self.emu.client("s3"), self.emu.client("sagemaker")
        source = job.transform_input["DataSource"]["S3DataSource"]
        if job.transform_input.get("SplitType", "None") != "None":
            raise RuntimeError("the emulator runs SplitType None only (one request per object)")
        container = resolve_container(sm, sm.describe_model(ModelName=job.model_name))
        payload_mb = int(job.max_payload_in_mb or 6)
        env = dict(job.environment or {}, SAGEMAKER_BATCH="true", SAGEMAKER_MAX_PAYLOAD_IN_MB=str(payload_mb),
                   SAGEMAKER_BATCH_STRATEGY="SINGLE_RECORD" if job.batch_strategy != "MultiRecord" else "MULTI_RECORD",
                   SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=str(job.max_concurrent_transforms or 1))
        content_type = job.transform_input.get("ContentType")
        accept = job.transform_output.get("Accept")
        out_bucket, out_prefix = _s3_parts(job.transform_output["S3OutputPath"].rstrip("/") + "/")
        for bucket, key, rel in self._inputs(s3, source):
            if run.stop.is_set():
                return "Stopped"
            size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
            if size > payload_mb * MB:
                run.failures.append(f"ClientError: {bucket}/{key}: the object is {size} bytes, above "
                                    f"MaxPayloadInMB={payload_mb} with SplitType None")
                continue
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            status, _, out = self.emu._serve(container, body, content_type, accept, env=env)
            run.log.append(f"{bucket}/{key}: {status}")
            if status >= 400:
                message = " ".join(out.decode("utf-8", "replace").split())
                run.failures.append(f"ClientError: {bucket}/{key}: the model answered {status}: {message}")
                continue
            s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}{rel}.out", Body=out)
        return "Completed"
