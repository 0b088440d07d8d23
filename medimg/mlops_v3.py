"""SageMaker Python SDK v3: the Model Registry and Pipelines for a ``medimg.job.JobSpec``, with the same functions
as ``medimg.mlops_v2`` (``medimg.sdk.mlops(path)`` gives the installed one).

- ``register``: ``sagemaker.serve.ModelBuilder(s3_model_data_url, image_uri, env_vars).register(...)``
  (SAGEMAKER_CONTRACT_2.md, 3; it returns the ARN): the job's model.tar.gz as it is on the PyTorch inference image
  ``medimg.job.inference_version`` gives, the model quality statistics (uploaded first), content types, instance
  type and metadata; the group is created first (``registry.ensure_group``).
- ``deploy_package``: ``ModelBuilder(model=ModelPackage)`` is v3's fine-tuning path, so sagemaker-core
  ``Model.create(primary_container=ContainerDefinition(model_package_name=arn))``, then the endpoint config and
  endpoint as ``sdk_v3.deploy`` makes them. An unapproved package is refused (``registry.check_deployable``).
- ``build_pipeline``: ``sagemaker.mlops.workflow``'s ``TrainingStep(step_args=ModelTrainer.train(...))`` on a
  ``PipelineSession`` (the notebook's trainer, with pipeline parameters for the channels and the instance type,
  and per-execution checkpoints), ``ConditionStep``, ``ModelStep(step_args=ModelBuilder.register(...))`` (one step,
  ``Register``) and ``FailStep``; conditions, parameters and functions from ``sagemaker.core.workflow``.
"""
import types

from medimg import pipeline, registry, scoring, sdk_v3
from medimg.job import INFERENCE_ENVIRONMENT, unique_name
from medimg.sdk import SAGEMAKER_CONFIG


def _only_set(**kwargs):
    """The keyword arguments that are set (unset ones keep the API's defaults)."""
    return {k: v for k, v in kwargs.items() if v}


def _builder(spec, model_data, session, instance_type):
    from sagemaker.serve.model_builder import ModelBuilder

    region = sdk_v3.region_of(session)
    return ModelBuilder(s3_model_data_url=model_data, image_uri=sdk_v3.inference_image(spec, region, instance_type),
                        env_vars=dict(INFERENCE_ENVIRONMENT, SAGEMAKER_REGION=region), role_arn=spec.role,
                        sagemaker_session=session)


def _model_metrics(quality_uri):
    from sagemaker.core.model_metrics import MetricsSource, ModelMetrics

    return ModelMetrics(model_statistics=MetricsSource(content_type="application/json", s3_uri=quality_uri))


def register(spec, model_data, session, metrics, *, training_job, model_package_group, quality_uri,
             approval_status="PendingManualApproval", instance_type="ml.m5.large"):
    """Register the job's model.tar.gz in ``model_package_group`` (created when missing) with ``metrics``'
    statistics written to ``quality_uri``: the new package's ARN."""
    registry.check_approval_status(approval_status)
    boto = session.boto_session
    registry.ensure_group(boto.client("sagemaker"), model_package_group, tags=spec.tags)
    registry.upload_model_quality(boto.client("s3"), metrics, quality_uri, training_job=training_job,
                                  kms_key=spec.output_kms_key)
    return _builder(spec, model_data, session, instance_type).register(
        model_metrics=_model_metrics(quality_uri), description=registry.package_description(metrics, training_job),
        customer_metadata_properties=registry.package_metadata(metrics, training_job),
        **registry.register_kwargs(model_package_group, approval_status, instance_type))


def deploy_package(spec, package_arn, session, *, endpoint_name=None, instance_type="ml.m5.large", wait=True,
                   poll=30, serving=None):
    """An endpoint serving an Approved model package (model, endpoint config and endpoint named ``endpoint_name``,
    default ``<base_job_name>-endpoint-<timestamp>``, tagged as the job, in its VPC, network isolation as the
    job), of the kind ``serving`` asks (``medimg.scoring.Serving``, default real-time, as ``sdk_v3.deploy``): the
    ``sagemaker.core.resources.Endpoint`` that ``sdk_v3.invoke`` (or ``invoke_async``) takes. ValueError for a
    package that is not Approved."""
    from sagemaker.core.resources import Endpoint, Model
    from sagemaker.core.shapes import ContainerDefinition, VpcConfig

    serving = serving or scoring.Serving()
    serving.check_security(**spec.security)
    region, boto = sdk_v3.region_of(session), session.boto_session
    registry.check_deployable(boto.client("sagemaker"), package_arn)
    name = endpoint_name or unique_name(f"{spec.base_job_name}-endpoint")
    tags = sdk_v3._tags(spec)
    Model.create(model_name=name, execution_role_arn=spec.role, session=boto, region=region, **_only_set(
        primary_container=ContainerDefinition(model_package_name=package_arn,
                                              environment=serving.container_environment() or None),
        vpc_config=VpcConfig(subnets=spec.subnets, security_group_ids=spec.security_group_ids) if spec.subnets
        else None, enable_network_isolation=spec.enable_network_isolation, tags=tags))
    session.create_endpoint_config(name, **sdk_v3.endpoint_config_kwargs(serving, name, instance_type, spec))
    endpoint = Endpoint.create(endpoint_name=name, endpoint_config_name=name, session=boto, region=region,
                               **_only_set(tags=tags))
    if wait:
        endpoint.wait_for_status("InService", poll=poll)
    return endpoint


# ==================================================================================================
# Pipelines
# ==================================================================================================
def pipeline_session(session):
    """A v3 ``PipelineSession`` on the same boto session and bucket (SDK telemetry off)."""
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    return PipelineSession(boto_session=session.boto_session, default_bucket=session.default_bucket(),
                           sagemaker_config=SAGEMAKER_CONFIG)


def _parameters(defaults):
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterString

    return {name: (ParameterFloat if isinstance(value, float) else ParameterString)(name=name, default_value=value)
            for name, value in defaults.items()}


def _conditions(condition, value, params):
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo, ConditionLessThanOrEqualTo

    bounds = condition.bounds
    out = [ConditionGreaterThanOrEqualTo(left=value, right=params[bounds["min"][0]])] if "min" in bounds else []
    if "max" in bounds:
        out.append(ConditionLessThanOrEqualTo(left=value, right=params[bounds["max"][0]]))
    return out


def _training_step(spec, ps, params):
    from sagemaker.core.training.configs import CheckpointConfig
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow import TrainingStep

    trainer = sdk_v3.build_trainer(spec.replace(checkpoint_s3_uri=None), ps)
    trainer.compute.instance_type = params[pipeline.INSTANCE_TYPE]
    if spec.checkpoint_s3_uri:  # one folder per execution: a retrain never resumes an earlier execution's job
        trainer.with_checkpoint_config(CheckpointConfig(s3_uri=Join(on="/", values=[
            spec.checkpoint_s3_uri.rstrip("/"), ExecutionVariables.PIPELINE_EXECUTION_ID])))
    inputs = sdk_v3.training_inputs(spec, {ch: params[pipeline.channel_parameter(ch)] for ch in spec.channels})
    return TrainingStep(name=pipeline.TRAIN, step_args=trainer.train(input_data_config=inputs, wait=False))


def build_pipeline(spec, session, *, pipeline_name, condition, model_package_group,
                   approval_status="PendingManualApproval", instance_type="ml.m5.large"):
    """The ``sagemaker.mlops.workflow.Pipeline`` (not created yet): Train -> CheckMetric -> Register or
    ConditionNotMet. ValueError for a bad condition, approval status or group name."""
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow import ConditionStep, FailStep, ModelStep, Pipeline

    sdk = types.SimpleNamespace(parameters=_parameters, training_step=_training_step, model=_builder,
                                conditions=_conditions, ConditionStep=ConditionStep, FailStep=FailStep,
                                ModelStep=ModelStep, Pipeline=Pipeline, Join=Join)
    return pipeline.assemble(spec, sdk, pipeline_session(session), pipeline_name=pipeline_name, condition=condition,
                             model_package_group=model_package_group, approval_status=approval_status,
                             instance_type=instance_type)


def run_pipeline(spec, session, *, pipeline_name, condition, model_package_group,
                 approval_status="PendingManualApproval", instance_type="ml.m5.large", parameters=None):
    """Create or update the pipeline (``upsert``, role ``spec.role``, the job's tags), make sure the group exists,
    and start an execution with ``parameters`` (pipeline parameter -> value; the rest keep their defaults):
    ``(pipeline, execution_arn)``."""
    pipe = build_pipeline(spec, session, pipeline_name=pipeline_name, condition=condition,
                          model_package_group=model_package_group, approval_status=approval_status,
                          instance_type=instance_type)
    values = pipeline.start_parameters(parameters, {p.name: p.default_value for p in pipe.parameters})
    registry.ensure_group(session.boto_session.client("sagemaker"), model_package_group, tags=spec.tags)
    pipe.upsert(role_arn=spec.role, description="medimg: train, check a metric, register", tags=spec.tag_list)
    execution = pipe.start(parameters=values)
    return pipe, execution.arn
