"""The SageMaker emulator's Model Registry, Pipelines and tuning-trial listing (tests/sagemaker_emulator.py installs
these patches with ``install(emulator)``; kept here so that the emulator's file stays about one topic).

moto stores model packages, pipelines and executions, but marks an execution Succeeded at once without running a
step, answers DescribePipelineExecution with an empty FailureReason, has no ListPipelineExecutionSteps nor
ListTrainingJobsForHyperParameterTuningJob, and lets CreateModel name any model package. Here:

* StartPipelineExecution executes the definition the execution was started with, in a background thread
  (``Executing`` meanwhile), top-level steps in their order and a condition's IfSteps/ElseSteps after it (no
  parallel branches, no retries, no caching). Arguments are resolved first: ``{"Get": "Parameters.<name>"}`` (the
  execution's values, else the defaults, typed as declared), ``{"Get": "Execution.PipelineExecutionId"}``
  (``PipelineExecutionArn``, ``PipelineName``), ``{"Get": "Steps.<step>.<property path>"}`` (a training step's
  DescribeTrainingJob response: ``ModelArtifacts.S3ModelArtifacts``, ``TrainingJobName``,
  ``FinalMetricDataList['<metric>'].Value``) and ``{"Std:Join": {"On", "Values"}}``. Step types executed:

  - ``Training``: CreateTrainingJob with the step's arguments, named ``pipelines-<execution id>-<step>-<hash>``,
    through the emulator's own job machinery (the job really runs, its metric definitions fill
    FinalMetricDataList); the step fails when the job fails, with its FailureReason;
  - ``Condition``: ``GreaterThanOrEqualTo``, ``GreaterThan``, ``LessThanOrEqualTo``, ``LessThan``, ``Equals`` (all
    must hold), then the IfSteps or the ElseSteps; a property that does not resolve (a metric the job never
    logged) fails the step;
  - ``RegisterModel``: CreateModelPackage with the step's arguments (metadata property values as strings);
  - ``Fail``: the step and the execution fail, the message (resolved) as the execution's FailureReason.

  Any other step type fails the execution ("not executed by the emulator"); nothing is only recorded.
  DescribePipelineExecution then reports the status and FailureReason, and ListPipelineExecutionSteps the steps
  (StepName, StepStatus, times, FailureReason, Metadata: TrainingJob/Condition/RegisterModel/Fail) as SageMaker
  lists them (newest first, or ``SortOrder="Ascending"``).
* CreateModel naming a versioned model package that is not Approved is refused (ValidationException), as SageMaker
  deploys only approved versions; ``resolve_container`` gives InvokeEndpoint the package's container (image,
  ModelDataUrl, environment, the model's own environment on top).
* ListTrainingJobsForHyperParameterTuningJob lists the training jobs a test assigned to a tuning job
  (``emulator.tuning_trials[name] = [job names]``: moto runs no trials), with their status, the tuned
  hyperparameters (the job's values of the tuning ranges) and the objective from FinalMetricDataList.
"""
import json
import re
import secrets
import threading
import time
from datetime import datetime, timezone

COMPARE = {"GreaterThanOrEqualTo": lambda a, b: a >= b, "GreaterThan": lambda a, b: a > b,
           "LessThanOrEqualTo": lambda a, b: a <= b, "LessThan": lambda a, b: a < b, "Equals": lambda a, b: a == b}
_PATH = re.compile(r"\.?([A-Za-z0-9_]+)|\[(?:'([^']*)'|(\d+))\]")
_VERSIONED_PACKAGE = re.compile(r"^arn:aws[a-z-]*:sagemaker:[^:]+:\d+:model-package/[^/]+/\d+$")


class StepFailed(Exception):
    pass


def install(emulator):
    """Patch moto's SageMaker for the lifetime of ``emulator`` (its ``_patch_attr`` restores everything)."""
    from moto.sagemaker import models as sm_models
    from moto.sagemaker import responses as sm_responses
    from moto.sagemaker.exceptions import ValidationError

    response_cls, backend_cls = sm_responses.SageMakerResponse, sm_models.SageMakerModelBackend
    original_start = response_cls.start_pipeline_execution
    original_describe = backend_cls.describe_pipeline_execution
    original_create_model = response_cls.create_model
    emulator.pipeline_runs, emulator.tuning_trials = {}, {}

    def start_pipeline_execution(handler):
        result = original_start(handler)
        arn = result.result["PipelineExecutionArn"]
        execution = sm_models.get_pipeline_execution_from_arn(handler.sagemaker_backend.pipelines, arn)
        execution.pipeline_execution_status = "Executing"
        run = PipelineRun(emulator, arn, execution)
        emulator.pipeline_runs[arn] = run
        threading.Thread(target=run.execute, name=f"pipeline-{arn.rsplit('/', 1)[-1]}", daemon=True).start()
        return result

    def describe_pipeline_execution(backend, pipeline_execution_arn):
        out = original_describe(backend, pipeline_execution_arn)
        run = emulator.pipeline_runs.get(pipeline_execution_arn)
        out.pop("FailureReason", None)
        if run is not None and run.failure_reason:
            out["FailureReason"] = run.failure_reason
        return out

    def list_pipeline_execution_steps(handler):
        from moto.core.responses import ActionResult

        run = emulator.pipeline_runs.get(handler._get_param("PipelineExecutionArn"))
        steps = list(run.steps if run else [])
        if handler._get_param("SortOrder") != "Ascending":
            steps.reverse()
        return ActionResult({"PipelineExecutionSteps": [dict(s) for s in steps]})

    def create_model(handler):
        containers = [handler._get_param("PrimaryContainer") or {}] + list(handler._get_param("Containers") or [])
        for package in [c["ModelPackageName"] for c in containers if c.get("ModelPackageName")]:
            status = handler.sagemaker_backend.describe_model_package(package).model_approval_status
            if _VERSIONED_PACKAGE.match(str(package)) and status != "Approved":
                raise ValidationError(f"Model package {package} is {status}: only an Approved versioned model "
                                      "package can be deployed")
        return original_create_model(handler)

    def list_training_jobs_for_tuning_job(handler):
        from moto.core.responses import ActionResult

        return ActionResult({"TrainingJobSummaries": emulator_trials(
            emulator, handler._get_param("HyperParameterTuningJobName"))})

    emulator._patch_attr(response_cls, "start_pipeline_execution", start_pipeline_execution)
    emulator._patch_attr(backend_cls, "describe_pipeline_execution", describe_pipeline_execution)
    emulator._patch_attr(response_cls, "list_pipeline_execution_steps", list_pipeline_execution_steps)
    emulator._patch_attr(response_cls, "create_model", create_model)
    emulator._patch_attr(response_cls, "list_training_jobs_for_hyper_parameter_tuning_job",
                         list_training_jobs_for_tuning_job)


def resolve_container(sm, model):
    """A model's (DescribeModel's) container as the endpoint runs it: its PrimaryContainer, or its single
    container (SDK v2's ModelPackage sends ``Containers``); one naming a ``ModelPackageName`` becomes the package's
    first inference container, with the model container's own Environment on top."""
    container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
    if not container.get("ModelPackageName"):
        return container
    package = sm.describe_model_package(ModelPackageName=container["ModelPackageName"])
    resolved = dict(package["InferenceSpecification"]["Containers"][0])
    resolved["Environment"] = {**(resolved.get("Environment") or {}), **(container.get("Environment") or {})}
    resolved["ModelPackageName"] = container["ModelPackageName"]
    return resolved


def emulator_trials(emulator, tuning_job_name):
    """ListTrainingJobsForHyperParameterTuningJob's summaries of the jobs assigned to ``tuning_job_name``."""
    sm = emulator.client("sagemaker")
    tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_job_name)
    config = tuning["HyperParameterTuningJobConfig"]
    objective = config["HyperParameterTuningJobObjective"]
    ranged = {r["Name"] for kind in (config.get("ParameterRanges") or {}).values() for r in kind}
    out = []
    for name in emulator.tuning_trials.get(tuning_job_name, []):
        job = sm.describe_training_job(TrainingJobName=name)
        final = {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}
        summary = {"TrainingJobName": name, "TrainingJobArn": job["TrainingJobArn"], "TuningJobName": tuning_job_name,
                   "CreationTime": job["CreationTime"], "TrainingJobStatus": job["TrainingJobStatus"],
                   "TunedHyperParameters": {k: v for k, v in (job.get("HyperParameters") or {}).items()
                                            if k in ranged}}
        for key in ("TrainingStartTime", "TrainingEndTime", "FailureReason"):
            if job.get(key):
                summary[key] = job[key]
        if objective["MetricName"] in final:
            summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": objective["Type"], "MetricName": objective["MetricName"],
                "Value": final[objective["MetricName"]]}
            summary["ObjectiveStatus"] = "Succeeded"
        out.append(summary)
    return out


class PipelineRun:
    """One pipeline execution, run step by step (see the module's docstring)."""

    def __init__(self, emulator, arn, execution):
        self.emulator, self.arn, self.execution = emulator, arn, execution
        self.definition = json.loads(execution.pipeline_definition_for_execution)
        self.id = arn.rsplit("/", 1)[-1]
        self.pipeline_name = arn.split(":pipeline/", 1)[1].split("/", 1)[0]
        declared = {p["Name"]: p for p in self.definition.get("Parameters", [])}
        given = {p["Name"]: p["Value"] for p in (execution.pipeline_parameters or [])}
        self.parameters = {name: _typed(p.get("Type", "String"), given.get(name, p.get("DefaultValue")))
                           for name, p in declared.items()}
        self.steps, self.properties = [], {}
        self.failure_reason = None
        self.done = threading.Event()

    # ---------------------------------------------------------------- resolving values
    def get(self, expression):
        head, _, rest = expression.partition(".")
        if head == "Parameters":
            if rest not in self.parameters:
                raise StepFailed(f"pipeline parameter {rest!r} is not declared")
            return self.parameters[rest]
        if head == "Execution":
            values = {"PipelineExecutionId": self.id, "PipelineExecutionArn": self.arn,
                      "PipelineName": self.pipeline_name}
            if rest not in values:
                raise StepFailed(f"execution variable {rest!r} is not emulated")
            return values[rest]
        if head == "Steps":
            step, _, path = rest.partition(".")
            if step not in self.properties:
                raise StepFailed(f"{expression}: step {step!r} has not run")
            return _walk(self.properties[step], path, expression)
        raise StepFailed(f"cannot resolve {expression!r}")

    def resolve(self, value):
        if isinstance(value, dict):
            if set(value) == {"Get"}:
                return self.get(value["Get"])
            if set(value) == {"Std:Join"}:
                join = value["Std:Join"]
                return join["On"].join(_text(self.resolve(v)) for v in join["Values"])
            if any(key.startswith("Std:") for key in value):
                raise StepFailed(f"function {sorted(value)} is not emulated")
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    # ---------------------------------------------------------------- running
    def execute(self):
        try:
            for step in self.definition.get("Steps", []):
                if not self.run_step(step):
                    break
            status = "Failed" if self.failure_reason else "Succeeded"
        except Exception as exc:  # noqa: BLE001 - the emulator's own failure fails the execution
            self.failure_reason = f"emulator error: {type(exc).__name__}: {exc}"
            status = "Failed"
        self.execution.pipeline_execution_status = status
        self.execution.pipeline_execution_failure_reason = self.failure_reason
        self.execution.last_modified_time = datetime.now(timezone.utc)
        self.done.set()

    def run_step(self, step):
        """Run one step; False when the execution stops here (the step failed, or it was a Fail step)."""
        record = {"StepName": step["Name"], "StepStatus": "Executing", "StartTime": datetime.now(timezone.utc),
                  "AttemptCount": 1, "Metadata": {}}
        self.steps.append(record)
        runner = {"Training": self.training, "Condition": self.condition, "RegisterModel": self.register,
                  "Fail": self.fail}.get(step["Type"])
        try:
            if runner is None:
                raise StepFailed(f"{step['Type']} steps are not executed by the emulator")
            ok = runner(step, record)
        except StepFailed as exc:
            record["FailureReason"] = str(exc)
            self.failure_reason = self.failure_reason or f"Step failure: {step['Name']}: {exc}"
            ok = False
        record["EndTime"] = datetime.now(timezone.utc)
        if record["StepStatus"] == "Executing":
            record["StepStatus"] = "Succeeded" if ok else "Failed"
        return ok

    def training(self, step, record):
        sm = self.emulator.client("sagemaker")
        name = f"pipelines-{self.id}-{step['Name']}-{secrets.token_hex(4)}"[:63]
        arguments = self.resolve(step["Arguments"])
        job = sm.create_training_job(TrainingJobName=name, **arguments)
        record["Metadata"] = {"TrainingJob": {"Arn": job["TrainingJobArn"]}}
        run = self.emulator.jobs.get(name)
        if run is not None:
            run.done.wait(self.emulator.job_timeout)
        while True:
            desc = sm.describe_training_job(TrainingJobName=name)
            if desc["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
                break
            time.sleep(0.5)
        desc.pop("ResponseMetadata", None)
        self.properties[step["Name"]] = desc
        if desc["TrainingJobStatus"] != "Completed":
            raise StepFailed(desc.get("FailureReason") or f"training job {name} {desc['TrainingJobStatus']}")
        return True

    def condition(self, step, record):
        args = step["Arguments"]
        results = []
        for cond in args["Conditions"]:
            if cond["Type"] not in COMPARE:
                raise StepFailed(f"condition type {cond['Type']} is not emulated")
            left, right = self.resolve(cond["LeftValue"]), self.resolve(cond["RightValue"])
            results.append(COMPARE[cond["Type"]](left, right))
        outcome = all(results)
        record["Metadata"] = {"Condition": {"Outcome": str(outcome)}}
        record["StepStatus"] = "Succeeded"
        for nested in args.get("IfSteps" if outcome else "ElseSteps", []):
            if not self.run_step(nested):
                return True  # this step succeeded; the execution stops at the nested one
        return True

    def register(self, step, record):
        args = self.resolve(step["Arguments"])
        if args.get("CustomerMetadataProperties"):
            args["CustomerMetadataProperties"] = {k: _text(v) for k, v in args["CustomerMetadataProperties"].items()}
        arn = self.emulator.client("sagemaker").create_model_package(**args)["ModelPackageArn"]
        record["Metadata"] = {"RegisterModel": {"Arn": arn}}
        return True

    def fail(self, step, record):
        message = _text(self.resolve(step["Arguments"].get("ErrorMessage", "")))
        record["Metadata"] = {"Fail": {"ErrorMessage": message}}
        record["StepStatus"] = "Failed"
        self.failure_reason = message
        return False


def _typed(kind, value):
    if value is None:
        return None
    if kind == "Float":
        return float(value)
    if kind == "Integer":
        return int(value)
    if kind == "Boolean":
        return str(value).lower() == "true"
    return str(value)


def _text(value):
    return value if isinstance(value, str) else json.dumps(value)


def _walk(properties, path, expression):
    """A property path (``A.B``, ``List['name']``, ``List[0]``) on a Describe* response; a list indexed by a name
    is searched by its items' ``MetricName``/``Name``, as SageMaker's property files are."""
    value = properties
    for attr, key, index in _PATH.findall(path):
        if attr:
            if not isinstance(value, dict) or attr not in value:
                raise StepFailed(f"{expression} does not resolve: no {attr}")
            value = value[attr]
        elif key:
            match = [v for v in value if isinstance(v, dict) and key in (v.get("MetricName"), v.get("Name"))]
            if not match:
                raise StepFailed(f"{expression} does not resolve: the job reported no {key!r}")
            value = match[0]
        else:
            value = value[int(index)]
    return value
