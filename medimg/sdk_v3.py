"""SageMaker Python SDK v3 (``sagemaker`` >= 3): a ``medimg.job.JobSpec`` as a ``ModelTrainer`` job, a v3
``HyperparameterTuner``, and an endpoint made of sagemaker-core resources.

    session = sdk_v3.make_session(boto3.Session(region_name=region), default_bucket=bucket)
    trainer, job_name = sdk_v3.start_job(spec, session, job_name=name)  # ModelTrainer.train(wait=False)
    tuner, tuning_job = sdk_v3.start_tuning(spec, session, TuningSpec(max_jobs=6))
    endpoint = sdk_v3.deploy(spec, model_data, session, endpoint_name=name)
    sdk_v3.invoke(endpoint, png_bytes)    # {"predictions": [...]}; sdk_v3.delete(session, name) cleans up
    sdk_v3.deploy(..., serving=Serving("serverless"))   # or Serving("async", async_path=...), then invoke_async
    transformer, job = sdk_v3.transform(spec, model_data, session, transform.plan(...))

What the job is, next to SDK v2's (SAGEMAKER_CONTRACT.md, "SDK v3 training"):

- Same image (``pytorch-training:<framework_version>-<gpu|cpu>-<py_version>``), hyperparameters, channels, output
  path (``<output_path>/<job>/output/model.tar.gz``), metric definitions, spot + ``max_wait`` or warm pool by
  mode, checkpoint location, ``Torchrun()`` where v2 has ``torch_distributed``, VPC/isolation/encryption
  (``Networking``), KMS keys, volume size and tags.
- Channels: explicit ``Channel`` objects with the spec's input mode and S3 distribution (``training_inputs``);
  ``InputData`` with an S3 URI would always be File + FullyReplicated, whatever ``training_input_mode`` says.
- In the container no training toolkit runs: the SDK uploads ``code/`` as a channel ``code`` and its drivers as
  ``sm_drivers``, and the drivers run ``python train.py --key value`` (dict order, ``true``/``false``).
- Code location: v2 puts ``sourcedir.tar.gz`` at ``<code_location>/<job>/source/``; v3 uploads the files to the
  session's default bucket under ``<key prefix>/<job>/input/code/``, so the key prefix is ``code_location``'s:
  ``<code_location>/<job>/input/{code,sm_drivers}/`` (``code_location`` must be in the default bucket).
- Job name: ``ModelTrainer.train()`` takes none; the SDK names the job ``<base_job_name>-YYYYMMDDHHMMSS``
  (``sagemaker.train.utils._get_unique_name``, called once per ``train()``), so two jobs of one base started
  within the same second collide (SageMaker answers ResourceInUse), and ``start_job`` starts again in the next
  second. ``start_job(job_name=...)`` names the job as v2's does: that one call gives ``job_name`` (the code and
  drivers upload under it too); an SDK without that function refuses a ``job_name`` rather than choose another.
- Tuning: v3's tuner starts its trials without ModelTrainer's drivers (the training toolkit runs train.py, as
  under v2) and drops network isolation, inter-container encryption, the volume key, keep-alive and the trials'
  tags from their definition: an isolated or encrypted spec is refused rather than tuned without them.
- Deployment: the job's model.tar.gz as it is (train.py put ``code/inference.py`` and its modules in it) on the
  PyTorch inference image of ``medimg.job.inference_version`` (2.6.0 for a 2.8 job), with SAGEMAKER_PROGRAM=
  inference.py; model, endpoint config and endpoint share the endpoint's name. The endpoint config is the SDK's
  (``production_variant`` through ``Session.create_endpoint_config``): serverless with
  the SDK's ``ServerlessInferenceConfig`` (CPU image, no instance), async with its ``AsyncInferenceConfig``
  (requests through ``Endpoint.invoke_async``). sagemaker-core's own ``ProductionVariantServerlessConfig`` sends
  "MemorySizeInMb", which the API refuses.
- Batch transform: a model named as the job (the container limits of the batch's MaxPayloadInMB in its
  environment), then ``sagemaker.core.transformer.Transformer``, the class SDK v2 has too.

The SDK is imported inside functions, so this module imports with SDK v2 installed too.
"""
import contextlib
import json
import time

from medimg import cleanup, job, scoring
from medimg.job import INFERENCE_ENVIRONMENT, inference_version, unique_name
from medimg.sdk import SAGEMAKER_CONFIG

IMAGE_CONTENT_TYPE = "application/x-image"  # raw image bytes of any training format; inference.py decodes them
NAME_COLLISION_RETRIES = 3


def make_session(boto_session=None, default_bucket=None):
    """A v3 ``Session`` with the SDK's telemetry off. Pass ``default_bucket``: without it the SDK asks STS for the
    account at a fixed AWS address to name one."""
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=boto_session, default_bucket=default_bucket, sagemaker_config=SAGEMAKER_CONFIG)


def region_of(session):
    """The session's region (ValueError when its boto session has none)."""
    region = session.boto_session.region_name
    if not region:
        raise ValueError("the boto3 session has no region: boto3.Session(region_name=...)")
    return region


def training_image(spec, region):
    """The PyTorch training image URI of the spec's framework, Python and instance type (no network)."""
    from sagemaker.core import image_uris

    return image_uris.retrieve(framework="pytorch", region=region, version=spec.framework_version,
                               py_version=spec.py_version, instance_type=spec.instance_type, image_scope="training")


def check_hyperparameters(hyperparameters):
    """Raise ValueError for a value v3's drivers cannot pass on: they write each one as ``export K='<value>'`` into
    a file the shell sources, so a ``'`` ends the quoting and the job fails before train.py starts."""
    for key, value in hyperparameters.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if "'" in text or "'" in str(key):
            raise ValueError(f"hyperparameter {key!r}: SDK v3's drivers cannot pass a value containing ' "
                             f"(got {value!r}); write it without the quote")


def code_key_prefix(spec, session):
    """The S3 key prefix the SDK uploads ``code``/``sm_drivers`` under: ``code_location``'s key, without the
    session's ``default_bucket_prefix`` (which the SDK puts in front itself). ValueError when ``code_location``
    is not in the session's default bucket (v3 stages code there only)."""
    bucket, _, key = spec.code_location[len("s3://"):].partition("/")
    if not spec.code_location.startswith("s3://") or bucket != session.default_bucket():
        raise ValueError(f"code_location {spec.code_location!r}: SDK v3 uploads the code to the session's default "
                         f"bucket ({session.default_bucket()}); put code_location in it")
    key, prefix = key.strip("/"), (session.default_bucket_prefix or "").strip("/")
    if prefix:
        if key != prefix and not key.startswith(prefix + "/"):
            raise ValueError(f"code_location {spec.code_location!r} is outside the session's default bucket "
                             f"prefix {prefix!r}")
        key = key[len(prefix):].strip("/")
    return key or None


# ==================================================================================================
# Training
# ==================================================================================================
def trainer_kwargs(spec, session):
    """Keyword arguments of ``ModelTrainer`` for ``spec`` (the metric definitions and checkpoint location are set
    with ``with_*``: ``build_trainer``)."""
    from sagemaker.core.training.configs import (Compute, Networking, OutputDataConfig, SourceCode,
                                                 StoppingCondition, Tag)
    from sagemaker.train.distributed import Torchrun

    check_hyperparameters(spec.hyperparameters)
    kwargs = {
        "training_image": training_image(spec, region_of(session)),
        "source_code": SourceCode(source_dir=spec.source_dir, entry_script=spec.entry_point),
        "compute": Compute(instance_type=spec.instance_type, instance_count=spec.instance_count,
                           volume_size_in_gb=spec.volume_size, volume_kms_key_id=spec.volume_kms_key,
                           enable_managed_spot_training=True if spec.spot else None,
                           keep_alive_period_in_seconds=spec.keep_alive),
        "stopping_condition": StoppingCondition(max_runtime_in_seconds=spec.max_run,
                                                max_wait_time_in_seconds=spec.max_wait_seconds),
        "output_data_config": OutputDataConfig(s3_output_path=spec.output_path, kms_key_id=spec.output_kms_key,
                                               compression_type="GZIP"),
        "hyperparameters": dict(spec.hyperparameters),
        "training_input_mode": spec.input_mode,
        "base_job_name": spec.base_job_name,
        "input_s3_key_prefix": code_key_prefix(spec, session),
        "role": spec.role,
        "sagemaker_session": session,
    }
    if spec.torchrun:
        kwargs["distributed"] = Torchrun(process_count_per_node=spec.processes_per_host)
    if spec.subnets or spec.enable_network_isolation or spec.encrypt_inter_container_traffic:
        kwargs["networking"] = Networking(
            subnets=spec.subnets, security_group_ids=spec.security_group_ids,
            enable_network_isolation=True if spec.enable_network_isolation else None,
            enable_inter_container_traffic_encryption=True if spec.encrypt_inter_container_traffic else None)
    if spec.tags:
        kwargs["tags"] = [Tag(key=k, value=v) for k, v in spec.tags.items()]
    return kwargs


def build_trainer(spec, session):
    """The ``ModelTrainer`` for ``spec`` on a v3 ``session``, with its metric definitions and, when the spec has a
    checkpoint location, its checkpoint config (local path /opt/ml/checkpoints, train.py's default)."""
    from sagemaker.core.training.configs import CheckpointConfig, MetricDefinition
    from sagemaker.train import ModelTrainer

    trainer = ModelTrainer(**trainer_kwargs(spec, session))
    trainer.with_metric_definitions([MetricDefinition(name=d["Name"], regex=d["Regex"])
                                     for d in spec.metric_definitions])
    if spec.checkpoint_s3_uri:
        trainer.with_checkpoint_config(CheckpointConfig(s3_uri=spec.checkpoint_s3_uri))
    return trainer


MODEL_CHANNEL, MODEL_CONTENT_TYPE = "model", "application/x-sagemaker-model"  # SDK v2's model_uri channel


def training_inputs(spec, uris=None):
    """``spec.channel_inputs`` as ModelTrainer ``Channel`` objects: each channel with its input mode and S3
    distribution. (An ``InputData`` with an S3 URI is always File + FullyReplicated, and a channel's mode beats
    the job's ``training_input_mode``: SAGEMAKER_CONTRACT_2.md, section 1.) The earlier model ``spec.model_uri`` is
    the ``model`` channel SDK v2's ``model_uri`` makes (File, its content type too). ``uris``: a channel's URI in
    place of the spec's (a pipeline parameter). ValueError when there are none."""
    from sagemaker.core.training.configs import Channel, DataSource, S3DataSource

    if not spec.channels:
        raise ValueError("the job needs its channels: JobSpec(channels={'train': 's3://...', ...})")
    uris = uris or {}
    inputs = [Channel(channel_name=name, input_mode=c.input_mode, data_source=DataSource(s3_data_source=S3DataSource(
        s3_data_type="S3Prefix", s3_uri=uris.get(name, c.uri), s3_data_distribution_type=c.distribution)))
        for name, c in spec.channel_inputs.items()]
    if spec.model_uri:
        inputs.append(Channel(channel_name=MODEL_CHANNEL, input_mode="File", content_type=MODEL_CONTENT_TYPE,
                              data_source=DataSource(s3_data_source=S3DataSource(
                                  s3_data_type="S3Prefix", s3_uri=spec.model_uri,
                                  s3_data_distribution_type="FullyReplicated"))))
    return inputs


def is_name_collision(exc):
    """SageMaker's answer to a second job of the same name (ResourceInUse)."""
    error = getattr(exc, "response", {}).get("Error", {})
    return error.get("Code") in ("ResourceInUse", "ResourceInUseException") or "already exists" in error.get(
        "Message", "")


@contextlib.contextmanager
def job_named(job_name):
    """Within: ModelTrainer names the job it starts ``job_name`` (None: as the SDK does, ``<base>-<timestamp>``).
    Raises ValueError when the installed SDK v3 names its jobs some other way, so no other name is chosen."""
    if job_name is None:
        yield
        return
    import sagemaker.train.model_trainer as model_trainer

    sdk_namer = getattr(model_trainer, "_get_unique_name", None)
    if sdk_namer is None:
        raise ValueError(f"this SDK v3 names training jobs itself, so job_name={job_name!r} cannot be honoured; leave "
                         "job_name out (the job is then <base_job_name>-<timestamp>)")
    model_trainer._get_unique_name = lambda base, max_length=63: job_name
    try:
        yield
    finally:
        model_trainer._get_unique_name = sdk_namer


def start_job(spec, session, *, job_name=None, wait=False):
    """Start the training job on ``spec.channels``: ``(trainer, job_name)``. ``job_name`` names the job (as
    SDK v2's ``fit(job_name=...)``; a name in use is SageMaker's ResourceInUse error); without it the SDK names
    it ``<base_job_name>-YYYYMMDDHHMMSS``, and a name it gave out in the same second as another job's
    (ResourceInUse) is retried in the next second, up to NAME_COLLISION_RETRIES times; other errors are raised as
    the SDK raises them. ``wait``: until the job ends, with its log."""
    from botocore.exceptions import ClientError

    inputs, attempt = training_inputs(spec), 0
    while True:
        trainer = build_trainer(spec, session)
        try:
            with job_named(job_name):
                trainer.train(input_data_config=inputs, wait=wait, logs=wait)
            return trainer, trainer._latest_training_job.training_job_name
        except ClientError as exc:
            attempt += 1
            if job_name is not None or not is_name_collision(exc) or attempt > NAME_COLLISION_RETRIES:
                raise
            time.sleep(1.0 - time.time() % 1.0 + 0.01)  # the SDK's names change every second


def training_job(session, job_name):
    """The ``sagemaker.core.resources.TrainingJob`` of an existing job (v3 has no ``ModelTrainer.attach``)."""
    from sagemaker.core.resources import TrainingJob

    return TrainingJob.get(training_job_name=job_name, session=session.boto_session, region=region_of(session))


def model_data(session, job_name):
    """The job's model.tar.gz URI (from DescribeTrainingJob's ModelArtifacts)."""
    return training_job(session, job_name).model_artifacts.s3_model_artifacts


# ==================================================================================================
# Hyperparameter tuning
# ==================================================================================================
def parameter_ranges(ranges):
    """``medimg.job.tuning_ranges`` as ``sagemaker.core.parameter`` objects."""
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter

    return job.range_objects(ranges, ContinuousParameter, CategoricalParameter)


def tuner(spec, session, tuning):
    """A v3 ``HyperparameterTuner`` whose trials run ``spec.for_tuning()`` (no shared checkpoint location), with
    the spec's metric definitions. ValueError for settings v3's tuner would silently drop from the trials
    (network isolation, inter-container encryption, a volume KMS key)."""
    from sagemaker.train.tuner import HyperparameterTuner

    dropped = [name for name in ("enable_network_isolation", "encrypt_inter_container_traffic", "volume_kms_key")
               if getattr(spec, name)]
    if dropped:
        raise ValueError(f"SDK v3's HyperparameterTuner leaves {', '.join(dropped)} out of the trials' definition; "
                         "tune without them (or with SDK v2), then train the chosen settings with them")
    kwargs = {"base_tuning_job_name": tuning.base_tuning_job_name} if tuning.base_tuning_job_name else {}
    return HyperparameterTuner(
        model_trainer=build_trainer(spec.for_tuning(), session), objective_metric_name=tuning.objective_metric_name,
        objective_type=tuning.objective_type, hyperparameter_ranges=parameter_ranges(tuning.ranges),
        metric_definitions=spec.metric_definitions, strategy=tuning.strategy, max_jobs=int(tuning.max_jobs),
        max_parallel_jobs=int(tuning.max_parallel_jobs), early_stopping_type=tuning.early_stopping,
        tags=spec.tag_list, **kwargs)


def start_tuning(spec, session, tuning, *, job_name=None):
    """Start the tuning job on ``spec.channels``: ``(tuner, tuning_job_name)``; the name defaults to
    ``<base_job_name>-hpo-<yymmdd-hhmm>`` (at most 32 characters, as SageMaker allows)."""
    from sagemaker.core.common_utils import name_from_base

    inputs = training_inputs(spec)
    job_name = job_name or name_from_base(f"{spec.base_job_name}-hpo", max_length=32, short=True)
    t = tuner(spec, session, tuning)
    t.tune(inputs=inputs, job_name=job_name, wait=False)
    return t, job_name


# ==================================================================================================
# Deployment
# ==================================================================================================
def inference_image(spec, region, instance_type, serverless=None):
    """The PyTorch inference image for a model of ``spec`` (``inference_version``: 2.6.0 for a 2.8 job); the CPU
    image for a serverless endpoint (``serverless``: the SDK's ServerlessInferenceConfig)."""
    from sagemaker.core import image_uris

    return image_uris.retrieve(framework="pytorch", region=region, version=inference_version(spec.framework_version),
                               py_version=spec.py_version, instance_type=None if serverless else instance_type,
                               image_scope="inference", serverless_inference_config=serverless)


def _only_set(**kwargs):
    """The keyword arguments that are set (unset ones keep the API's defaults)."""
    return {k: v for k, v in kwargs.items() if v}


def execution_role(session):
    """This notebook's execution role (Studio), as the SDK finds it."""
    from sagemaker.core.helper.session_helper import get_execution_role

    return get_execution_role(sagemaker_session=session)


def _create_model(spec, model_data_url, session, name, instance_type, env=None, serverless=None):
    """A sagemaker-core Model of the job's model.tar.gz as it is: the inference image, SAGEMAKER_PROGRAM=
    inference.py from the tarball's ``code/`` and ``env``, the spec's VPC, network isolation and tags."""
    from sagemaker.core.resources import Model
    from sagemaker.core.shapes import ContainerDefinition, VpcConfig

    region = region_of(session)
    Model.create(model_name=name, execution_role_arn=spec.role, session=session.boto_session, region=region,
                 **_only_set(primary_container=ContainerDefinition(
                     image=inference_image(spec, region, instance_type, serverless), model_data_url=model_data_url,
                     environment=dict(INFERENCE_ENVIRONMENT, SAGEMAKER_REGION=region, **(env or {}))),
                     vpc_config=VpcConfig(subnets=spec.subnets, security_group_ids=spec.security_group_ids)
                     if spec.subnets else None, enable_network_isolation=spec.enable_network_isolation,
                     tags=_tags(spec)))


def _tags(spec):
    from sagemaker.core.shapes import Tag

    return [Tag(key=k, value=v) for k, v in spec.tags.items()] if spec.tags else None


def endpoint_config_kwargs(serving, name, instance_type, spec):
    """``Session.create_endpoint_config`` keywords for a ``scoring.Serving``: the SDK's ``production_variant`` (one
    instance, or the SDK's ServerlessInferenceConfig and no instance) and, for async, its AsyncInferenceConfig (the
    answers encrypted with the spec's output KMS key when set).
    (sagemaker-core's ``ProductionVariantServerlessConfig`` shape sends "MemorySizeInMb", which the API refuses,
    hence the SDK's request dicts through its session rather than sagemaker-core's EndpointConfig resource.)"""
    from sagemaker.core.helper.session_helper import production_variant
    from sagemaker.core.inference_config import AsyncInferenceConfig, ServerlessInferenceConfig

    serverless = None
    if serving.endpoint_type == "serverless":
        serverless = ServerlessInferenceConfig(memory_size_in_mb=serving.memory_mb,
                                               max_concurrency=serving.max_concurrency)._to_request_dict()
    kwargs = {"production_variants": [production_variant(
        model_name=name, instance_type=None if serverless else instance_type,
        initial_instance_count=None if serverless else 1, serverless_inference_config=serverless)],
        "tags": spec.tag_list or None, "kms_key": spec.volume_kms_key}
    if serving.endpoint_type == "async":
        kwargs["async_inference_config_dict"] = AsyncInferenceConfig(
            output_path=serving.output_path, failure_path=serving.failure_path,
            kms_key_id=spec.output_kms_key)._to_request_dict()
    return kwargs


def deploy(spec, model_data, session, *, endpoint_name=None, instance_type="ml.m5.large", repack_location=None,
           wait=True, poll=30, serving=None):
    """Deploy a job's model.tar.gz (``model_data``) as it is: a Model (the inference image,
    SAGEMAKER_PROGRAM=inference.py from the tarball's ``code/``, the spec's VPC and network isolation), an
    EndpointConfig (one instance of ``instance_type``, or serverless, per ``serving``: ``medimg.scoring.Serving``,
    default real-time; the volume KMS key) and an Endpoint, all named ``endpoint_name`` (default
    ``<base_job_name>-endpoint-<timestamp>``) and tagged as the job. Returns the ``sagemaker.core.resources.Endpoint``;
    ``wait``: until InService, polling every ``poll`` seconds. ``repack_location``: where deploy may write the model
    it serves. SDK v2 writes the model repacked with code/ there; v3 writes nothing anywhere (the job's model.tar.gz
    already holds code/inference.py, and the endpoint serves it from ``model_data``), so the prefix stays empty."""
    from sagemaker.core.inference_config import ServerlessInferenceConfig
    from sagemaker.core.resources import Endpoint

    serving = serving or scoring.Serving()
    serving.check_security(**spec.security)
    region, boto = region_of(session), session.boto_session
    name = endpoint_name or unique_name(f"{spec.base_job_name}-endpoint")
    serverless = ServerlessInferenceConfig() if serving.endpoint_type == "serverless" else None
    _create_model(spec, model_data, session, name, instance_type, serving.container_environment(), serverless)
    session.create_endpoint_config(name, **endpoint_config_kwargs(serving, name, instance_type, spec))
    endpoint = Endpoint.create(endpoint_name=name, endpoint_config_name=name, session=boto, region=region,
                               **_only_set(tags=_tags(spec)))
    if wait:
        endpoint.wait_for_status("InService", poll=poll)
    return endpoint


def endpoint(session, endpoint_name):
    """The ``sagemaker.core.resources.Endpoint`` of an existing endpoint."""
    from sagemaker.core.resources import Endpoint

    return Endpoint.get(endpoint_name=endpoint_name, session=session.boto_session, region=region_of(session))


def invoke(deployed, body, content_type=IMAGE_CONTENT_TYPE, accept="application/json", *,
           endpoint_type="realtime"):
    """One request through a real-time or serverless endpoint (what ``deploy`` returned: a sagemaker-core Endpoint),
    by default an image file's bytes: inference.py's JSON answer (``accept`` application/json), else the raw bytes.
    A body above what ``endpoint_type`` takes is refused here (``scoring.PayloadTooLarge``, one line naming the
    paths that take it); an asynchronous endpoint takes its requests through S3 (``invoke_async``)."""
    if endpoint_type == "async":
        raise ValueError("an asynchronous endpoint takes its requests from S3: use invoke_async")
    scoring.check_request(len(body), endpoint_type)
    response = deployed.invoke(body=body, content_type=content_type, accept=accept)
    data = response.body.read()
    return json.loads(data) if accept == "application/json" else data


def invoke_async(deployed, input_uri, content_type=IMAGE_CONTENT_TYPE, accept="application/json"):
    """One request to an asynchronous endpoint: ``Endpoint.invoke_async`` names the request already in S3 at
    ``input_uri`` (``scoring.upload_request`` puts it there). Returns the ``scoring.AsyncRequest``: where the
    answer (or the failure) will be, which ``scoring.wait_for_answer`` reads."""
    response = deployed.invoke_async(input_location=input_uri, content_type=content_type, accept=accept)
    failure = getattr(response, "failure_location", None)
    return scoring.AsyncRequest(inference_id=response.inference_id, input_location=input_uri,
                                output_location=response.output_location,
                                failure_location=failure if isinstance(failure, str) else None)


def transform(spec, model_data, session, batch, *, job_name=None, instance_type="ml.m5.large", repack_location=None,
              wait=False):
    """Start a batch transform of a job's model.tar.gz over ``batch`` (``medimg.transform.plan``): a model named
    ``job_name`` (default ``<base_job_name>-transform-<timestamp>``) with the container limits of the batch's
    MaxPayloadInMB, then ``sagemaker.core.transformer.Transformer``: one ``instance_type`` instance, one request
    per image of the batch's manifest as application/x-image, JSON answers to the batch's output. Returns
    ``(transformer, job_name)``. ``repack_location`` as in ``deploy``: v3 writes nothing there (the model.tar.gz
    already holds code/inference.py)."""
    from sagemaker.core.transformer import Transformer

    from medimg.transform import ACCEPT, CONTENT_TYPE

    job_name = job_name or unique_name(f"{spec.base_job_name}-transform")
    _create_model(spec, model_data, session, job_name, instance_type, batch.container_environment())
    transformer = Transformer(model_name=job_name, instance_count=1, instance_type=instance_type,
                              strategy="SingleRecord", output_path=batch.output_uri, output_kms_key=spec.output_kms_key,
                              accept=ACCEPT, max_payload=batch.max_payload_mb, tags=spec.tag_list,
                              volume_kms_key=spec.volume_kms_key, sagemaker_session=session)
    transformer.transform(batch.manifest_uri, data_type="ManifestFile", content_type=CONTENT_TYPE, split_type="None",
                          job_name=job_name, wait=wait, logs=False)
    return transformer, job_name


def delete(session, endpoint_name, out=print):
    """Delete the endpoint, its config and its model (each step skips what is already gone)."""
    return cleanup.delete_endpoint_resources(session.boto_session.client("sagemaker"), endpoint_name=endpoint_name,
                                          out=out)
