"""SageMaker Python SDK v2: the Model Registry and Pipelines for a ``medimg.job.JobSpec`` (``medimg.mlops_v3`` has
the same functions for SDK v3; ``medimg.sdk.mlops(path)`` gives the installed one).

    arn = mlops_v2.register(spec, model_data, session, metrics, training_job=job, model_package_group="chest-xray",
                            quality_uri=f"{base}/registry/.../model_quality.json", approval_status="Approved")
    predictor = mlops_v2.deploy_package(spec, arn, session, endpoint_name=name)   # an Approved package only
    pipe, execution_arn = mlops_v2.run_pipeline(spec, session, pipeline_name="medimg-pipeline",
                                                condition={"metric": "test_auc", "min": 0.9}, model_package_group=...)

- ``register``: ``sagemaker.model.Model(image_uri, model_data, env).register(...)`` (SAGEMAKER_CONTRACT_2.md, 3):
  the job's model.tar.gz as it is (train.py put ``code/inference.py`` in it) on the PyTorch inference image
  ``medimg.job.inference_version`` gives (2.6 for a 2.8 job), its content types, the instance type, the model
  quality statistics (``medimg.registry.model_quality``, uploaded first) and metadata. The group is created first
  (``registry.ensure_group``, with the job's tags).
- ``deploy_package``: ``ModelPackage(...).deploy()``; it would approve a pending package itself
  (sagemaker/model.py, ``_create_sagemaker_model``), so an unapproved one is refused before (``check_deployable``).
- ``build_pipeline``: ``TrainingStep(step_args=estimator.fit(...))`` on a ``PipelineSession`` (the notebook's
  Estimator, with pipeline parameters for the channels and the instance type, and per-execution checkpoints),
  ``ConditionStep`` on ``FinalMetricDataList[metric].Value``, ``ModelStep(step_args=model.register(...))``
  (SDK v2 names the step ``Register-RegisterModel``; a plain ``Model`` with an image: no repack step) and ``FailStep``.
  The pipeline's packages carry the job's final metrics as metadata; their statistics JSON would need
  metrics.json, which is inside output.tar.gz (a processing step: not built).
"""
import types

from medimg import pipeline, registry, scoring, sdk_v2
from medimg.job import INFERENCE_ENVIRONMENT, inference_version, unique_name
from medimg.sdk import SAGEMAKER_CONFIG


def inference_image(spec, region, instance_type):
    """The PyTorch inference image for a model of ``spec`` (the same one ``sdk_v2.deploy`` serves on)."""
    from sagemaker import image_uris

    return image_uris.retrieve("pytorch", region, version=inference_version(spec.framework_version),
                               py_version=spec.py_version, instance_type=instance_type, image_scope="inference")


def _model(spec, model_data, session, instance_type):
    from sagemaker.model import Model

    region = session.boto_region_name
    return Model(image_uri=inference_image(spec, region, instance_type), model_data=model_data, role=spec.role,
                 env=dict(INFERENCE_ENVIRONMENT, SAGEMAKER_REGION=region), sagemaker_session=session)


def register(spec, model_data, session, metrics, *, training_job, model_package_group, quality_uri,
             approval_status="PendingManualApproval", instance_type="ml.m5.large"):
    """Register the job's model.tar.gz in ``model_package_group`` (created when missing) with ``metrics``'
    statistics written to ``quality_uri``: the new package's ARN."""
    from sagemaker.model_metrics import MetricsSource, ModelMetrics

    registry.check_approval_status(approval_status)
    registry.ensure_group(session.sagemaker_client, model_package_group, tags=spec.tags)
    registry.upload_model_quality(session.boto_session.client("s3"), metrics, quality_uri, training_job=training_job,
                                  kms_key=spec.output_kms_key)
    package = _model(spec, model_data, session, instance_type).register(
        model_metrics=ModelMetrics(model_statistics=MetricsSource(content_type="application/json",
                                                                  s3_uri=quality_uri)),
        description=registry.package_description(metrics, training_job),
        customer_metadata_properties=registry.package_metadata(metrics, training_job),
        **registry.register_kwargs(model_package_group, approval_status, instance_type))
    return package.model_package_arn


def deploy_package(spec, package_arn, session, *, endpoint_name=None, instance_type="ml.m5.large", wait=True,
                   poll=30, serving=None):
    """An endpoint serving an Approved model package (model, endpoint config and endpoint named ``endpoint_name``,
    default ``<base_job_name>-endpoint-<timestamp>``, tagged as the job, in its VPC), of the kind ``serving`` asks
    (``medimg.scoring.Serving``, default real-time, as ``sdk_v2.deploy``): the predictor that ``sdk_v2.invoke`` (or
    ``invoke_async``) takes. ValueError for a package that is not Approved."""
    from sagemaker import ModelPackage
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    serving = serving or scoring.Serving()
    serving.check_security(**spec.security)
    registry.check_deployable(session.sagemaker_client, package_arn)
    endpoint_name = endpoint_name or unique_name(f"{spec.base_job_name}-endpoint")
    security = sdk_v2.model_security_kwargs(**spec.security)
    security.pop("model_kms_key", None)  # nothing is repacked: the package's model.tar.gz is served as it is
    model = ModelPackage(role=spec.role, model_package_arn=package_arn, sagemaker_session=session,
                         name=endpoint_name, predictor_cls=Predictor, env=serving.container_environment() or None,
                         **security)
    predictor = model.deploy(endpoint_name=endpoint_name, serializer=IdentitySerializer(sdk_v2.IMAGE_CONTENT_TYPE),
                             deserializer=JSONDeserializer(), wait=False, tags=spec.tag_list,
                             **sdk_v2.serving_kwargs(serving, instance_type, spec.output_kms_key),
                             **({"kms_key": spec.volume_kms_key} if spec.volume_kms_key else {}))
    if wait:
        session.wait_for_endpoint(endpoint_name, poll=poll)
    return predictor


# ==================================================================================================
# Pipelines
# ==================================================================================================
def pipeline_session(session):
    """A ``PipelineSession`` on the same boto session and bucket (SDK telemetry off)."""
    from sagemaker.workflow.pipeline_context import PipelineSession

    return PipelineSession(boto_session=session.boto_session, default_bucket=session.default_bucket(),
                           sagemaker_config=SAGEMAKER_CONFIG)


def _parameters(defaults):
    from sagemaker.workflow.parameters import ParameterFloat, ParameterString

    return {name: (ParameterFloat if isinstance(value, float) else ParameterString)(name=name, default_value=value)
            for name, value in defaults.items()}


def _conditions(condition, value, params):
    from sagemaker.workflow.conditions import ConditionGreaterThanOrEqualTo, ConditionLessThanOrEqualTo

    bounds = condition.bounds
    out = [ConditionGreaterThanOrEqualTo(left=value, right=params[bounds["min"][0]])] if "min" in bounds else []
    if "max" in bounds:
        out.append(ConditionLessThanOrEqualTo(left=value, right=params[bounds["max"][0]]))
    return out


def _training_step(spec, ps, params):
    from sagemaker.workflow.execution_variables import ExecutionVariables
    from sagemaker.workflow.functions import Join
    from sagemaker.workflow.steps import TrainingStep

    kwargs = sdk_v2.estimator_kwargs(spec)
    kwargs["instance_type"] = params[pipeline.INSTANCE_TYPE]
    if spec.checkpoint_s3_uri:  # one folder per execution: a retrain never resumes an earlier execution's job
        kwargs["checkpoint_s3_uri"] = Join(on="/", values=[spec.checkpoint_s3_uri.rstrip("/"),
                                                           ExecutionVariables.PIPELINE_EXECUTION_ID])
    estimator = sdk_v2._estimator()(sagemaker_session=ps, **kwargs)
    inputs = sdk_v2.training_inputs(spec, {ch: params[pipeline.channel_parameter(ch)] for ch in spec.channels})
    return TrainingStep(name=pipeline.TRAIN, step_args=estimator.fit(inputs))


def build_pipeline(spec, session, *, pipeline_name, condition, model_package_group,
                   approval_status="PendingManualApproval", instance_type="ml.m5.large"):
    """The ``sagemaker.workflow.pipeline.Pipeline`` (not created yet): Train -> CheckMetric -> Register or
    ConditionNotMet. ValueError for a bad condition, approval status or group name."""
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join
    from sagemaker.workflow.model_step import ModelStep
    from sagemaker.workflow.pipeline import Pipeline

    sdk = types.SimpleNamespace(parameters=_parameters, training_step=_training_step, model=_model,
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
    registry.ensure_group(session.sagemaker_client, model_package_group, tags=spec.tags)
    pipe.upsert(role_arn=spec.role, description="medimg: train, check a metric, register", tags=spec.tag_list)
    execution = pipe.start(parameters=values)
    return pipe, execution.arn
