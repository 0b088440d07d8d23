"""How a trained model is served, and what each path of SageMaker takes per request (no SDK imported here).

Four paths, one ``code/inference.py`` behind each (the endpoint decodes and predicts exactly as train.py evaluates):

==============  ==========================  ================================================  ==================
path            request                     largest request (SageMaker's limit)                time per request
==============  ==========================  ================================================  ==================
real-time       InvokeEndpoint, the body    6 MB (6,291,456 bytes)                            60 s
serverless      InvokeEndpoint, the body    4 MB                                              60 s
asynchronous    InvokeEndpointAsync, an S3  1 GB                                              15 min (up to 1 h)
                object; the answer in S3
batch transform one S3 object per request   MaxPayloadInMB: 6 by default, at most 100         (medimg.transform)
==============  ==========================  ================================================  ==================

``Serving`` describes the endpoint (``endpoint_type`` and the settings of its kind, each checked against
SageMaker's limits with a one-line ValueError); the SDK builders (``medimg.sdk_v2``/``sdk_v3``) turn it into the
endpoint config: instances for "realtime" and "async" (plus ``AsyncInferenceConfig`` with an S3 output and failure
path), ``ServerlessConfig`` (memory, concurrency) and no instance for "serverless".

The model container has limits of its own: TorchServe (the PyTorch inference container's model server) refuses
bodies above 6,553,500 bytes unless ``TS_MAX_REQUEST_SIZE`` is set, and inference.py above
``INFERENCE_MAX_REQUEST_BYTES`` (10 MiB by default). ``container_environment`` raises both to what the path lets
through, so an 8 MB image sent asynchronously or by a transform job is not refused inside the container after
SageMaker accepted it. The size a request may have is checked here, before anything is sent
(``check_request``): one line that says which path takes it.
"""
import json
import time
from dataclasses import dataclass

MB = 1024 * 1024
ENDPOINT_TYPES = ("realtime", "serverless", "async")
REQUEST_LIMITS = {"realtime": 6 * MB, "serverless": 4 * MB, "async": 1024 * MB}  # bytes per request
PATH_NAMES = {"realtime": "a real-time endpoint", "serverless": "a serverless endpoint",
              "async": "an asynchronous endpoint", "transform": "a batch transform request"}
TRANSFORM_DEFAULT_PAYLOAD_MB, TRANSFORM_MAX_PAYLOAD_MB = 6, 100  # MaxPayloadInMB: SageMaker's default and limit
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_MAX_CONCURRENCY = 200
TORCHSERVE_MAX_REQUEST_BYTES = 6_553_500  # TorchServe's max_request_size when TS_MAX_REQUEST_SIZE is not set
ASYNC_TIMEOUT_SECONDS = 900  # InvokeEndpointAsync's default InvocationTimeoutSeconds
TRANSFORM_TIMEOUT_SECONDS = 600  # a transform's default InvocationsTimeoutInSeconds


class PayloadTooLarge(ValueError):
    """A request above what its path takes (one line: its size, the limit, the path that takes it)."""


def size_text(size):
    """Bytes as people read them: ``'8.4 MB'``, ``'6 MB'`` (MB of 1,048,576 bytes, as SageMaker counts
    MaxPayloadInMB)."""
    if size < MB / 10:
        return f"{size:,} bytes"
    value, unit = (size / (1024 * MB), "GB") if size >= 1024 * MB else (size / MB, "MB")
    return f"{value:.1f}".rstrip("0").rstrip(".") + f" {unit}"


def paths_that_take(size, but=None):
    """The paths that take a request of ``size`` bytes (other than ``but``), for a refusal's advice."""
    options = [f"{PATH_NAMES[t]} (endpoint_type={t!r}, up to {size_text(REQUEST_LIMITS[t])})"
               for t in ("realtime", "async") if t != but and size <= REQUEST_LIMITS[t]]
    if but != "transform" and size <= TRANSFORM_MAX_PAYLOAD_MB * MB:
        options.append(f"batch transform (up to {TRANSFORM_MAX_PAYLOAD_MB} MB per image)")
    return options


def check_request(size, endpoint_type="realtime", what="the request"):
    """Raise PayloadTooLarge when ``size`` bytes are more than ``endpoint_type``'s path takes."""
    limit = REQUEST_LIMITS[endpoint_type]
    if size > limit:
        others = paths_that_take(size, but=endpoint_type)
        advice = f"send it to {' or '.join(others)}, or downscale it" if others else "downscale it"
        raise PayloadTooLarge(f"{what} is {size_text(size)} ({size:,} bytes), above the {size_text(limit)} "
                              f"{PATH_NAMES[endpoint_type]} takes (SageMaker's limit); {advice}")


def container_environment(max_request_bytes, timeout_seconds=None):
    """The model container's settings for requests of up to ``max_request_bytes``: inference.py's own limit and,
    above TorchServe's default, TorchServe's (the answers are small JSON, under its response limit), and the model
    server's timeout."""
    env = {"INFERENCE_MAX_REQUEST_BYTES": str(int(max_request_bytes))}
    if max_request_bytes > TORCHSERVE_MAX_REQUEST_BYTES:
        env["TS_MAX_REQUEST_SIZE"] = str(int(max_request_bytes))
    if timeout_seconds:
        env["SAGEMAKER_MODEL_SERVER_TIMEOUT"] = str(int(timeout_seconds))
    return env


def whole_number(value):
    """``value`` as an int when it is one (3072, 3072.0), else None (True, 2.5, "3072")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        return None
    return int(value)


# ==================================================================================================
# The endpoint
# ==================================================================================================
@dataclass(frozen=True)
class Serving:
    """What kind of endpoint serves the model.

    ``endpoint_type``: "realtime" (instances billed per hour while the endpoint exists; 6 MB, 60 s per request),
    "serverless" (no instance: billed per request by memory and duration; ``memory_mb`` 1024..6144 in 1024 steps,
    ``max_concurrency`` 1..200; CPU only, 4 MB per request, cold starts) or "async" (instances; each request is
    an S3 object under ``async_path``/inputs/, its answer is written to ``async_path``/outputs/ (failures to
    ``async_path``/failures/); 1 GB and up to 15 minutes per request)."""
    endpoint_type: str = "realtime"
    memory_mb: int = 2048
    max_concurrency: int = 5
    async_path: str = None

    def __post_init__(self):
        kind = str(self.endpoint_type).strip().lower().replace("real-time", "realtime")
        if kind not in ENDPOINT_TYPES:
            raise ValueError(f"endpoint_type must be one of {', '.join(ENDPOINT_TYPES)}, got {self.endpoint_type!r}")
        object.__setattr__(self, "endpoint_type", kind)  # as users write it: "Serverless", "real-time"
        if kind == "serverless":
            memory = whole_number(self.memory_mb)
            if memory not in SERVERLESS_MEMORY_MB:
                raise ValueError(f"serverless memory must be one of {', '.join(map(str, SERVERLESS_MEMORY_MB))} MB "
                                 f"(1 GB steps, SageMaker's limits), got {self.memory_mb!r}")
            concurrency = whole_number(self.max_concurrency)
            if concurrency is None or not 1 <= concurrency <= SERVERLESS_MAX_CONCURRENCY:
                raise ValueError(f"serverless max concurrency must be a whole number from 1 to "
                                 f"{SERVERLESS_MAX_CONCURRENCY} (SageMaker's limits), got {self.max_concurrency!r}")
            object.__setattr__(self, "memory_mb", memory)
            object.__setattr__(self, "max_concurrency", concurrency)
        if kind == "async" and not str(self.async_path or "").startswith("s3://"):
            raise ValueError(f"an asynchronous endpoint needs an S3 prefix for its requests and answers "
                             f"(async_path='s3://<bucket>/<prefix>/...'), got {self.async_path!r}")

    @property
    def output_path(self):
        return f"{self.async_path.rstrip('/')}/outputs" if self.endpoint_type == "async" else None

    @property
    def failure_path(self):
        return f"{self.async_path.rstrip('/')}/failures" if self.endpoint_type == "async" else None

    @property
    def input_path(self):
        return f"{self.async_path.rstrip('/')}/inputs" if self.endpoint_type == "async" else None

    @property
    def max_request_bytes(self):
        return REQUEST_LIMITS[self.endpoint_type]

    def container_environment(self):
        """The model container's settings: none for real-time and serverless (SageMaker refuses what is above 6 or
        4 MB before the container; inference.py's 10 MiB default is above that), 1 GB for async."""
        if self.endpoint_type != "async":
            return {}
        return container_environment(self.max_request_bytes, ASYNC_TIMEOUT_SECONDS)

    def check_security(self, *, subnets=None, enable_network_isolation=False, **_others):
        """Serverless endpoints run neither in a VPC nor network-isolated: refused rather than deployed without."""
        if self.endpoint_type == "serverless" and (subnets or enable_network_isolation):
            raise ValueError("a serverless endpoint cannot run in a VPC or with network isolation (SageMaker's "
                             "limits); use endpoint_type 'realtime' or 'async', or deploy without subnets and "
                             "enable_network_isolation")

    def describe(self, instance_type):
        if self.endpoint_type == "serverless":
            return (f"serverless: {self.memory_mb} MB, up to {self.max_concurrency} concurrent requests, no instance "
                    f"(deploy_instance_type is not used), requests up to 4 MB")
        if self.endpoint_type == "async":
            return (f"asynchronous on 1 x {instance_type}: requests in {self.input_path}/, answers in "
                    f"{self.output_path}/ (failures: {self.failure_path}/), requests up to 1 GB")
        return f"real-time on 1 x {instance_type}, requests up to 6 MB"


# ==================================================================================================
# Asynchronous requests
# ==================================================================================================
class AsyncInferenceFailed(RuntimeError):
    """The endpoint wrote a failure for the request (its message), or no answer came in time."""


@dataclass(frozen=True)
class AsyncRequest:
    """A request an asynchronous endpoint accepted: where its input is and where its answer will be."""
    inference_id: str
    input_location: str
    output_location: str
    failure_location: str = None


def upload_request(s3, body, input_uri, content_type="application/x-image", kms_key=None):
    """Put one request for an asynchronous endpoint at ``input_uri`` (refused in one line above 1 GB); returns
    the URI, which ``invoke_async`` of the SDK builders names in InvokeEndpointAsync."""
    check_request(len(body), "async")
    bucket, _, key = input_uri[len("s3://"):].partition("/")
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, **extra)
    return input_uri


def _get(s3, uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:  # noqa: BLE001 - only "not there yet" is expected
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def wait_for_answer(s3, request, *, poll=5, timeout=ASYNC_TIMEOUT_SECONDS, accept="application/json"):
    """The answer of an asynchronous request, read from S3 when the endpoint writes it (parsed JSON for
    ``accept`` application/json, else bytes). AsyncInferenceFailed with the endpoint's message when it wrote a
    failure instead, or when neither came within ``timeout`` seconds."""
    end = time.time() + timeout
    while True:
        body = _get(s3, request.output_location)
        if body is not None:
            return json.loads(body) if accept == "application/json" else body
        failure = _get(s3, request.failure_location) if request.failure_location else None
        if failure is not None:
            message = " ".join(failure.decode("utf-8", "replace").split())[:1000]
            raise AsyncInferenceFailed(f"asynchronous request {request.inference_id} failed: {message} "
                                       f"({request.failure_location})")
        if time.time() >= end:
            raise AsyncInferenceFailed(f"no answer to asynchronous request {request.inference_id} after {timeout} s; "
                                       f"it may still come to {request.output_location}")
        time.sleep(poll)
