"""A SageMaker Pipeline that retrains and registers, SDK-free: its rules, parameters and step names, and following
an execution (boto3 clients in, plain text out). ``medimg.mlops_v2``/``mlops_v3``'s ``build_pipeline`` and
``run_pipeline`` turn these into the installed SDK's steps:

    Train (the notebook's job, on pipeline parameters) -> CheckMetric (a final metric of the training job against
    the threshold) -> Register (a package in the group) | ConditionNotMet (Fail: the metric and both values)

- ``Condition``: ``{"metric": "test_auc", "min": 0.9}`` (and/or ``"max"``: for a loss), on a metric the job's
  metric definitions extract (``test_*`` only when the job has a test channel), read from the training job's
  FinalMetricDataList: the last value the job logged (for ``val_auc``: the kept epoch's, which the summary line
  repeats last).
- Pipeline parameters (``parameters``): one data location per channel (``TrainData``, ``ValData``, ``TestData``),
  ``TrainingInstanceType``, the threshold(s) (``MinTestAuc``...) and ``ModelApprovalStatus``: a retrain on new
  data is one ``start()`` with new values (``run_pipeline(..., parameters={"TrainData": "s3://..."})``).
- ``wait_for_execution``: follow an execution to its end, print its steps (ListPipelineExecutionSteps), and return
  its status, failure reason and the model package it registered.
"""
import math
import re
import time
from dataclasses import dataclass

TRAIN, CHECK, REGISTER, FAIL = "Train", "CheckMetric", "Register", "ConditionNotMet"
INSTANCE_TYPE, APPROVAL = "TrainingInstanceType", "ModelApprovalStatus"
TERMINAL = ("Succeeded", "Failed", "Stopped")


def camel(name):
    """``test_auc`` -> ``TestAuc``, ``validation`` -> ``Validation`` (pipeline parameter names)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def channel_parameter(channel):
    """The pipeline parameter holding a channel's S3 location: ``train`` -> ``TrainData``."""
    return f"{camel(channel)}Data"


@dataclass(frozen=True)
class Condition:
    """Register only when ``metric`` >= ``min`` (and/or <= ``max``)."""
    metric: str
    min: float = None
    max: float = None

    @property
    def bounds(self):
        """``{"min"|"max": (parameter name, default)}`` for the bounds that are set."""
        out = {}
        if self.min is not None:
            out["min"] = (f"Min{camel(self.metric)}", float(self.min))
        if self.max is not None:
            out["max"] = (f"Max{camel(self.metric)}", float(self.max))
        return out

    def holds(self, value):
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def failure_message(self, value, low=None, high=None):
        """The Fail step's message as Join parts: ``value``, ``low``, ``high`` are the SDK's pipeline variables
        (the metric, the threshold parameters) or plain numbers."""
        if self.min is not None and self.max is not None:
            middle = [" is outside [", low, ", ", high, "]"]
        elif self.min is not None:
            middle = [" is below the minimum ", low]
        else:
            middle = [" is above the maximum ", high]
        return [f"pipeline condition not met: {self.metric}=", value, *middle,
                " (the training job's final value); no model package was registered"]


def parse_condition(condition, metric_names, *, has_test_channel=True):
    """``{"metric": name, "min": x, "max": y}`` as a Condition. ValueError for another shape, a metric the job's
    metric definitions (``metric_names``) do not extract, or bounds that are not numbers or are crossed."""
    if not isinstance(condition, dict) or not set(condition) <= {"metric", "min", "max"} or "metric" not in condition:
        raise ValueError(f"pipeline_condition must be {{'metric': name, 'min': number}} (or 'max', or both), got "
                         f"{condition!r}")
    metric = condition["metric"]
    if metric not in metric_names:
        hint = " (the test metrics exist only when the job has a test channel)" if (
            str(metric).startswith("test_") and not has_test_channel) else ""
        raise ValueError(f"pipeline_condition metric {metric!r} is not one the job's metric definitions extract"
                         f"{hint}; choose one of {', '.join(metric_names)}")
    bounds = {}
    for key in ("min", "max"):
        value = condition.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"pipeline_condition {key} must be a finite number, got {value!r}")
        bounds[key] = float(value)
    if not bounds:
        raise ValueError(f"pipeline_condition {condition!r} has no bound: give 'min' (and/or 'max')")
    if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
        raise ValueError(f"pipeline_condition min {bounds['min']} is above max {bounds['max']}: nothing could pass")
    return Condition(metric=metric, **bounds)


def check_condition(condition):
    """``parse_condition`` before the channels are known (a notebook's first cells): against every metric a job can
    have (test and ordinal ones included); ``condition_for`` checks again against the job itself."""
    from medimg.container import epoch_log

    return parse_condition(condition, [d["Name"] for d in epoch_log.metric_definitions(test=True, ordinal=True)])


def condition_for(spec, condition):
    """``parse_condition`` against a JobSpec's metric definitions."""
    return parse_condition(condition, [d["Name"] for d in spec.metric_definitions],
                           has_test_channel=spec.has_test_channel)


def parameters(spec, condition, approval_status):
    """The pipeline's parameters and their defaults, in order: ``{name: default}`` (floats for the thresholds,
    strings for the rest). ValueError when the spec has no channels."""
    if not spec.channels:
        raise ValueError("the pipeline needs the job's channels: JobSpec(channels={'train': 's3://...', ...})")
    out = {channel_parameter(ch): uri for ch, uri in spec.channels.items()}
    out[INSTANCE_TYPE] = spec.instance_type
    out.update({name: default for name, default in condition.bounds.values()})
    out[APPROVAL] = approval_status
    return out


def assemble(spec, sdk, session, *, pipeline_name, condition, model_package_group, approval_status, instance_type):
    """The pipeline (not created yet) Train -> CheckMetric -> Register or ConditionNotMet, from ``sdk``: the installed
    SDK's pieces (``parameters``, ``training_step``, ``model``, ``conditions`` and the classes ``ConditionStep``,
    ``FailStep``, ``ModelStep``, ``Pipeline``, ``Join``; medimg.mlops_v2/v3 hand theirs in) on the pipeline
    ``session``. ValueError for a bad condition, approval status or group name."""
    from medimg import registry

    cond = condition_for(spec, condition)
    registry.check_approval_status(approval_status)
    registry.check_group_name(model_package_group)
    params = sdk.parameters(parameters(spec, cond, approval_status))
    train = sdk.training_step(spec, session, params)
    value = train.properties.FinalMetricDataList[cond.metric].Value
    metadata = {"training_job": train.properties.TrainingJobName, cond.metric: sdk.Join(on="", values=[value]),
                "condition": str({k: v[1] for k, v in cond.bounds.items()})}
    register_args = sdk.model(spec, train.properties.ModelArtifacts.S3ModelArtifacts, session, instance_type).register(
        description=f"registered by pipeline {pipeline_name}: {cond.metric} passed {dict(condition)}",
        customer_metadata_properties=metadata,
        **registry.register_kwargs(model_package_group, params[APPROVAL], instance_type))
    bounds = {k: params[name] for k, (name, _) in cond.bounds.items()}
    fail = sdk.FailStep(name=FAIL, error_message=sdk.Join(on="", values=cond.failure_message(
        value, bounds.get("min"), bounds.get("max"))))
    check = sdk.ConditionStep(name=CHECK, conditions=sdk.conditions(cond, value, params),
                              if_steps=[sdk.ModelStep(name=REGISTER, step_args=register_args)], else_steps=[fail])
    return sdk.Pipeline(name=pipeline_name, parameters=list(params.values()), steps=[train, check],
                        sagemaker_session=session,
                        pipeline_experiment_config=None)  # no SageMaker Experiments: runs are tracked in MLflow


def start_parameters(given, defaults):
    """The values to start an execution with (``given`` over nothing: the pipeline keeps its defaults); ValueError
    for a name the pipeline does not have."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"the pipeline has no parameter {unknown[0]!r}; its parameters are {', '.join(defaults)}")
    return given


# ==================================================================================================
# Following an execution
# ==================================================================================================
def execution_steps(sm, execution_arn):
    """The execution's steps, first started first (ListPipelineExecutionSteps lists the newest first)."""
    steps, token = [], None
    while True:
        kwargs = {"PipelineExecutionArn": execution_arn, "SortOrder": "Ascending"}
        if token:
            kwargs["NextToken"] = token
        page = sm.list_pipeline_execution_steps(**kwargs)
        steps += page.get("PipelineExecutionSteps", [])
        token = page.get("NextToken")
        if not token:
            return steps


def step_line(step):
    """One line per step: its name, status and what it made (a training job, the condition's outcome, the model
    package) or why it failed."""
    meta = step.get("Metadata") or {}
    made = (meta.get("TrainingJob") or {}).get("Arn") or (meta.get("RegisterModel") or {}).get("Arn") or (
        f"outcome {(meta.get('Condition') or {}).get('Outcome')}" if "Condition" in meta else "")
    reason = step.get("FailureReason") or (meta.get("Fail") or {}).get("ErrorMessage")
    return f"  {step['StepName']}: {step['StepStatus']}" + (f" ({made})" if made else "") + (
        f": {reason}" if reason else "")


def wait_for_execution(sm, execution_arn, *, poll=30, out=print):
    """Wait for the execution to end, printing status changes and then its steps. Returns ``{"status",
    "failure_reason", "steps", "model_package_arn", "training_job"}`` (a failed execution is an answer, not an
    error: a model below the threshold fails the pipeline on purpose)."""
    last = None
    while True:
        desc = sm.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
        status = desc["PipelineExecutionStatus"]
        if status != last:
            out(f"{time.strftime('%H:%M:%S')} {execution_arn.rsplit('/', 1)[-1]}: {status}")
            last = status
        if status in TERMINAL:
            break
        time.sleep(poll)
    steps = execution_steps(sm, execution_arn)
    for step in steps:
        out(step_line(step))
    meta = [s.get("Metadata") or {} for s in steps]
    package = next((m["RegisterModel"]["Arn"] for m in meta if "RegisterModel" in m), None)
    job = next((m["TrainingJob"]["Arn"].rsplit("/", 1)[-1] for m in meta if "TrainingJob" in m), None)
    failed = next((m["Fail"].get("ErrorMessage") for m in meta if "Fail" in m), None)
    return {"status": status, "failure_reason": desc.get("FailureReason") or failed, "steps": steps,
            "model_package_arn": package, "training_job": job}
