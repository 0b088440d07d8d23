"""SageMaker Python SDK v2 (``sagemaker`` < 3): a ``medimg.job.JobSpec`` as the ``sagemaker.pytorch`` Estimator,
its HyperparameterTuner and its PyTorchModel endpoint.

    session = sdk_v2.make_session(boto3.Session(region_name=region), default_bucket=bucket)
    estimator, job_name = sdk_v2.start_job(spec, session, job_name=name)  # fit(spec.channels, wait=False)
    tuner, tuning_job = sdk_v2.start_tuning(spec, session, TuningSpec(max_jobs=6))
    predictor = sdk_v2.deploy(spec, estimator.model_data, session, endpoint_name=name)
    sdk_v2.invoke(predictor, png_bytes)   # {"predictions": [...]}; sdk_v2.delete(session, name) cleans up
    sdk_v2.deploy(..., serving=Serving("serverless"))   # or Serving("async", async_path=...), then invoke_async
    transformer, job = sdk_v2.transform(spec, estimator.model_data, session, transform.plan(...))

The training images go to PyTorch 2.8; the inference images stop at 2.6 (SAGEMAKER_CONTRACT.md, "Versions"). So
``PyTorch(framework_version="2.8.0").deploy()`` fails in the SDK itself ("Unsupported pytorch version: 2.8.0"
for the inference image). ``Estimator`` is ``sagemaker.pytorch.PyTorch`` whose ``create_model`` (what
``deploy()`` calls) serves the trained model on the newest inference image not newer than the training one, with
the SDK's own defaults otherwise: ``train.py`` as the entry point (it exports inference.py's handlers) and
``PyTorchPredictor``'s numpy serializer/deserializer (inference.py answers application/x-npy).

The SDK is imported inside functions (and ``Estimator`` when first used), so this module imports with SDK v3
installed too (``inference_version`` and the keyword builders work there).
"""
import json
import logging

from medimg import cleanup, job, scoring
from medimg.job import INFERENCE_VERSIONS, check_vpc, inference_version, unique_name  # noqa: F401 (API)
from medimg.sdk import SAGEMAKER_CONFIG

IMAGE_CONTENT_TYPE = "application/x-image"  # raw image bytes of any training format; inference.py decodes them


def _estimator_class():
    from sagemaker.pytorch import PyTorch

    class Estimator(PyTorch):
        """``sagemaker.pytorch.PyTorch`` whose ``deploy()`` and ``create_model()`` work for a 2.7/2.8 training job."""

        def create_model(self, *args, **kwargs):
            model = super().create_model(*args, **kwargs)
            model.framework_version = inference_version(self.framework_version)
            return model

    Estimator.__module__, Estimator.__qualname__ = __name__, "Estimator"
    return Estimator


def __getattr__(name):
    """``Estimator`` is built on first use (it subclasses SDK v2's PyTorch, absent under SDK v3)."""
    if name == "Estimator":
        globals()["Estimator"] = _estimator_class()  # later lookups find it without this hook
        return globals()["Estimator"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _estimator():
    return globals().get("Estimator") or __getattr__("Estimator")


def make_session(boto_session=None, default_bucket=None):
    """A ``sagemaker.Session`` with the SDK's telemetry off. Pass ``default_bucket``: without it the SDK asks STS
    for the account at a fixed AWS address to name one."""
    import sagemaker

    return sagemaker.Session(boto_session=boto_session, default_bucket=default_bucket,
                             sagemaker_config=SAGEMAKER_CONFIG)


# ==================================================================================================
# Training
# ==================================================================================================
def estimator_kwargs(spec):
    """Keyword arguments of ``sagemaker.pytorch.PyTorch`` for ``spec`` (add ``sagemaker_session``): spot
    (``use_spot_instances``, ``max_wait``) or warm pool (``keep_alive_period_in_seconds``) by mode, the checkpoint
    location when given, ``distribution`` when torchrun is on, tags, ``model_uri`` (an earlier model: the ``model``
    channel) and the security settings only when set; the job's ``input_mode`` (TrainingInputMode; each data channel
    carries it too: ``training_inputs``)."""
    kwargs = {
        "entry_point": spec.entry_point, "source_dir": spec.source_dir, "role": spec.role,
        "framework_version": spec.framework_version, "py_version": spec.py_version,
        "instance_type": spec.instance_type, "instance_count": spec.instance_count, "volume_size": spec.volume_size,
        "hyperparameters": dict(spec.hyperparameters), "metric_definitions": spec.metric_definitions,
        "output_path": spec.output_path, "code_location": spec.code_location, "base_job_name": spec.base_job_name,
        "max_run": spec.max_run, "input_mode": spec.input_mode,
        "disable_profiler": True,  # the profiler and debugger hooks add nothing for this script
        "debugger_hook_config": False,
    }
    if spec.spot:
        kwargs.update(use_spot_instances=True, max_wait=spec.max_wait_seconds)
    if spec.keep_alive:
        kwargs["keep_alive_period_in_seconds"] = spec.keep_alive
    if spec.checkpoint_s3_uri:  # local path: /opt/ml/checkpoints (train.py's default)
        kwargs["checkpoint_s3_uri"] = spec.checkpoint_s3_uri
    if spec.distribution:
        kwargs["distribution"] = spec.distribution
    if spec.tag_list:
        kwargs["tags"] = spec.tag_list
    if spec.model_uri:  # the "model" channel (content type application/x-sagemaker-model): train.py starts from it
        kwargs["model_uri"] = spec.model_uri
    kwargs.update(spec.security)  # JobSpec's names are the Estimator's
    return kwargs


def build_estimator(spec, session):
    """The ``Estimator`` (PyTorch) for ``spec`` on ``session``."""
    return _estimator()(sagemaker_session=session, **estimator_kwargs(spec))


def training_inputs(spec, uris=None):
    """``spec.channel_inputs`` as ``{name: sagemaker.inputs.TrainingInput}``: each channel with its input mode and S3
    distribution (a plain URI would be FullyReplicated in the job's mode). A dict, never a lone TrainingInput, whose
    input mode the SDK would also make the job's. ``uris``: a channel's URI in place of the spec's (a pipeline
    parameter). ValueError when the spec has no channels."""
    from sagemaker.inputs import TrainingInput

    if not spec.channels:
        raise ValueError("the job needs its channels: JobSpec(channels={'train': 's3://...', ...})")
    uris = uris or {}
    return {name: TrainingInput(uris.get(name, c.uri), distribution=c.distribution, input_mode=c.input_mode)
            for name, c in spec.channel_inputs.items()}


def start_job(spec, session, *, job_name=None, wait=False):
    """Start the training job on ``spec.channels``: ``(estimator, job_name)``. ``job_name`` defaults to
    ``<base_job_name>-<timestamp>`` (the SDK's ``name_from_base``). ``wait``: until the job ends, with its log.
    Raises ValueError when the spec has no channels."""
    inputs = training_inputs(spec)
    estimator = build_estimator(spec, session)
    job_name = job_name or unique_name(spec.base_job_name)
    estimator.fit(inputs, job_name=job_name, wait=wait)
    return estimator, job_name


def model_data(session, job_name):
    """The job's model.tar.gz URI (from DescribeTrainingJob's ModelArtifacts)."""
    return session.sagemaker_client.describe_training_job(TrainingJobName=job_name)["ModelArtifacts"][
        "S3ModelArtifacts"]


# ==================================================================================================
# Hyperparameter tuning
# ==================================================================================================
def parameter_ranges(ranges):
    """``medimg.job.tuning_ranges`` as ``sagemaker.tuner`` parameter objects."""
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter

    return job.range_objects(ranges, ContinuousParameter, CategoricalParameter)


def tuner_kwargs(tuning, metric_definitions):
    """Keyword arguments of ``sagemaker.tuner.HyperparameterTuner(estimator, **kwargs)`` for a TuningSpec."""
    kwargs = {
        "objective_metric_name": tuning.objective_metric_name, "objective_type": tuning.objective_type,
        "hyperparameter_ranges": parameter_ranges(tuning.ranges),
        "metric_definitions": [dict(d) for d in metric_definitions],
        "max_jobs": int(tuning.max_jobs), "max_parallel_jobs": int(tuning.max_parallel_jobs),
        "early_stopping_type": tuning.early_stopping, "strategy": tuning.strategy,
    }
    if tuning.base_tuning_job_name:
        kwargs["base_tuning_job_name"] = tuning.base_tuning_job_name
    return kwargs


def tuner(spec, session, tuning):
    """A ``HyperparameterTuner`` whose trials run ``spec.for_tuning()`` (no shared checkpoint location)."""
    from sagemaker.tuner import HyperparameterTuner

    return HyperparameterTuner(build_estimator(spec.for_tuning(), session),
                               **tuner_kwargs(tuning, spec.metric_definitions))


def start_tuning(spec, session, tuning, *, job_name=None):
    """Start the tuning job on ``spec.channels``: ``(tuner, tuning_job_name)``; the name defaults to
    ``<base_job_name>-hpo-<yymmdd-hhmm>`` (at most 32 characters, as SageMaker allows)."""
    import sagemaker

    if not spec.channels:
        raise ValueError("the tuning job needs the channels: JobSpec(channels={'train': 's3://...', ...})")
    inputs = training_inputs(spec)
    job_name = job_name or sagemaker.utils.name_from_base(f"{spec.base_job_name}-hpo", max_length=32, short=True)
    t = tuner(spec, session, tuning)
    estimator_log = logging.getLogger("sagemaker.estimator")
    level = estimator_log.level
    estimator_log.setLevel(logging.ERROR)  # "No finished training job found associated with this estimator": the
    try:                                   # tuner's estimator never trains itself, which is what it is for
        t.fit(inputs, job_name=job_name, wait=False)
    finally:
        estimator_log.setLevel(level)
    return t, job_name


# ==================================================================================================
# Deployment
# ==================================================================================================
def model_security_kwargs(*, output_kms_key=None, subnets=None, security_group_ids=None,
                          enable_network_isolation=False, **_training_only):
    """The job's security settings (``**spec.security``) for ``PyTorchModel``: the repacked model.tar.gz encrypted
    with ``output_kms_key``, the endpoint in the VPC, and network isolation. Only those that are set."""
    out = {}
    if output_kms_key:
        out["model_kms_key"] = output_kms_key
    check_vpc(subnets, security_group_ids)
    if subnets:
        out["vpc_config"] = {"Subnets": list(subnets), "SecurityGroupIds": list(security_group_ids)}
    if enable_network_isolation:
        out["enable_network_isolation"] = True
    return out


def _model(spec, model_data, session, name, repack_location, env):
    """``PyTorchModel`` of a job's model.tar.gz with ``spec.source_dir``'s inference.py (repacked by the SDK to
    ``repack_location``) on the PyTorch inference image for the job's version; ``env``: the container's."""
    from sagemaker.pytorch import PyTorchModel

    return PyTorchModel(model_data=model_data, role=spec.role, entry_point="inference.py", source_dir=spec.source_dir,
                        framework_version=inference_version(spec.framework_version), py_version=spec.py_version,
                        name=name, code_location=repack_location, sagemaker_session=session, env=env or None,
                        **model_security_kwargs(**spec.security))


def serving_kwargs(serving, instance_type, output_kms_key=None):
    """``Model.deploy`` keywords for a ``scoring.Serving``: one instance (real-time, async with its
    AsyncInferenceConfig, its answers encrypted with ``output_kms_key`` when set) or a ServerlessInferenceConfig
    (no instance)."""
    if serving.endpoint_type == "serverless":
        from sagemaker.serverless import ServerlessInferenceConfig

        return {"serverless_inference_config": ServerlessInferenceConfig(memory_size_in_mb=serving.memory_mb,
                                                                         max_concurrency=serving.max_concurrency)}
    kwargs = {"initial_instance_count": 1, "instance_type": instance_type}
    if serving.endpoint_type == "async":
        from sagemaker.async_inference import AsyncInferenceConfig

        kwargs["async_inference_config"] = AsyncInferenceConfig(output_path=serving.output_path,
                                                                failure_path=serving.failure_path,
                                                                kms_key_id=output_kms_key)
    return kwargs


def deploy(spec, model_data, session, *, endpoint_name=None, instance_type="ml.m5.large", repack_location=None,
           wait=True, poll=30, serving=None):
    """Deploy a job's model.tar.gz behind an endpoint (model, endpoint config and endpoint all named
    ``endpoint_name``, default ``<base_job_name>-endpoint-<timestamp>``) with ``spec.source_dir``'s inference.py
    on the PyTorch inference image for the job's version. ``repack_location``: where deploy may write the model it
    serves: the SDK repacks the model with that code there (default the session's bucket). ``serving``
    (``medimg.scoring.Serving``, default real-time): the kind of endpoint. Returns the predictor (an
    ``AsyncPredictor`` for "async"): raw image bytes in (application/x-image), JSON out. ``wait``: until InService,
    polling every ``poll`` seconds."""
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import IdentitySerializer

    serving = serving or scoring.Serving()
    serving.check_security(**spec.security)
    endpoint_name = endpoint_name or unique_name(f"{spec.base_job_name}-endpoint")
    model = _model(spec, model_data, session, endpoint_name, repack_location, serving.container_environment())
    predictor = model.deploy(endpoint_name=endpoint_name, serializer=IdentitySerializer(IMAGE_CONTENT_TYPE),
                             deserializer=JSONDeserializer(), wait=False, tags=spec.tag_list,
                             **serving_kwargs(serving, instance_type, spec.output_kms_key),
                             **({"kms_key": spec.volume_kms_key} if spec.volume_kms_key else {}))
    if wait:
        session.wait_for_endpoint(endpoint_name, poll=poll)
    return predictor


def execution_role(session):
    """This notebook's execution role (Studio), as the SDK finds it."""
    import sagemaker

    return sagemaker.get_execution_role(sagemaker_session=session)


def invoke(deployed, body, content_type=IMAGE_CONTENT_TYPE, accept="application/json", *,
           endpoint_type="realtime"):
    """One request to what ``deploy`` returned (a predictor) of a real-time or serverless endpoint, by default an
    image file's bytes: inference.py's answer, parsed JSON (or the raw bytes for another ``accept``). A body above
    what ``endpoint_type`` takes is refused here (``scoring.PayloadTooLarge``, one line naming the paths that take
    it); an asynchronous endpoint takes its requests through S3 (``invoke_async``)."""
    if endpoint_type == "async":
        raise ValueError("an asynchronous endpoint takes its requests from S3: use invoke_async")
    scoring.check_request(len(body), endpoint_type)
    data = deployed.sagemaker_session.sagemaker_runtime_client.invoke_endpoint(
        EndpointName=deployed.endpoint_name, Body=body, ContentType=content_type, Accept=accept)["Body"].read()
    return json.loads(data) if accept == "application/json" else data


def invoke_async(deployed, input_uri, content_type=IMAGE_CONTENT_TYPE, accept="application/json"):
    """One request to an asynchronous endpoint (the ``AsyncPredictor`` of ``deploy``): InvokeEndpointAsync names the
    request already in S3 at ``input_uri`` (``scoring.upload_request`` puts it there). Returns the
    ``scoring.AsyncRequest``: where the answer (or the failure) will be, which ``scoring.wait_for_answer`` reads."""
    response = deployed.predict_async(input_path=input_uri,
                                      initial_args={"ContentType": content_type, "Accept": accept})
    return scoring.AsyncRequest(inference_id=response.output_path.rsplit("/", 1)[-1].removesuffix(".out"),
                                input_location=input_uri, output_location=response.output_path,
                                failure_location=response.failure_path)


def transform(spec, model_data, session, batch, *, job_name=None, instance_type="ml.m5.large", repack_location=None,
              wait=False):
    """Start a batch transform of a job's model.tar.gz over ``batch`` (``medimg.transform.plan``): a model named
    ``job_name`` (default ``<base_job_name>-transform-<timestamp>``) with the container limits of the batch's
    MaxPayloadInMB, then the SDK's Transformer: one ``instance_type`` instance, one request per image of the
    batch's manifest as application/x-image, JSON answers to the batch's output. Returns ``(transformer,
    job_name)``."""
    from medimg.transform import ACCEPT, CONTENT_TYPE

    job_name = job_name or unique_name(f"{spec.base_job_name}-transform")
    model = _model(spec, model_data, session, job_name, repack_location, batch.container_environment())
    transformer = model.transformer(instance_count=1, instance_type=instance_type, strategy="SingleRecord",
                                    output_path=batch.output_uri, output_kms_key=spec.output_kms_key,
                                    accept=ACCEPT, max_payload=batch.max_payload_mb, tags=spec.tag_list,
                                    volume_kms_key=spec.volume_kms_key)
    transformer.transform(batch.manifest_uri, data_type="ManifestFile", content_type=CONTENT_TYPE, split_type="None",
                          job_name=job_name, wait=wait, logs=False)
    return transformer, job_name


def delete(session, endpoint_name, out=print):
    """Delete the endpoint, its config and its model (each step skips what is already gone)."""
    return cleanup.delete_endpoint_resources(session.sagemaker_client, endpoint_name=endpoint_name, out=out)
