"""The SageMaker Model Registry, SDK-free (boto3 clients in, plain values out): what a registered model carries and
the rules both SDK paths share. The SDK calls themselves are ``medimg.mlops_v2``/``mlops_v3``'s ``register`` and
``deploy_package``.

- ``model_quality(metrics)``: the model quality statistics JSON of a model package, built from the job's
  metrics.json in SageMaker's model quality schema (``binary_classification_metrics``: ``{"auc": {"value": ...,
  "standard_deviation": ...}, ...}``, AWS guide "model-monitor-model-quality-metrics"), each figure with its
  bootstrap 95% interval (``ci95``) as metrics.json has it; ``upload_model_quality`` puts it in S3.
- ``ensure_group``: the model package group, created when missing (with the job's tags).
- ``package_metadata``/``package_description``: what Studio shows beside a package (the job, the split, AUC).
- ``check_deployable``: a versioned package deploys only when Approved; SDK v2's ``ModelPackage.deploy`` would
  approve a pending one itself, so both paths refuse it here first. ``approve`` approves one.

A binary model's accuracy, sensitivity (``true_positive_rate``, ``recall``) and specificity
(``true_negative_rate``) are those at its operating point, the decisions its endpoint makes; AUC is threshold-free.
``standard_deviation`` is the interval's width / 3.92 (a normal approximation of the bootstrap percentile
interval: Studio shows that field), ``"NaN"`` where metrics.json has no interval, as SageMaker writes it.
"""
import json
import math
import re

APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")
GROUP_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # CreateModelPackageGroup's pattern
# what code/inference.py reads (an image file's bytes, a numpy array, JSON) and answers (JSON or npy)
CONTENT_TYPES = ["application/x-image", "image/png", "image/jpeg", "image/tiff", "image/bmp",
                 "application/octet-stream", "application/x-npy", "application/json"]
RESPONSE_TYPES = ["application/json", "application/x-npy"]
DOMAIN, TASK = "COMPUTER_VISION", "IMAGE_CLASSIFICATION"
Z95 = 1.959963984540054  # a 95% normal interval is +-1.96 standard deviations


def check_approval_status(status):
    """Raise ValueError unless ``status`` is one SageMaker takes."""
    if status not in APPROVAL_STATUSES:
        raise ValueError(f"approval_status must be one of {', '.join(APPROVAL_STATUSES)}, got {status!r}")
    return status


def check_group_name(name):
    """Raise ValueError unless ``name`` is a valid model package group name (1-63 letters, digits, hyphens)."""
    if not isinstance(name, str) or not GROUP_NAME.match(name):
        raise ValueError(f"model_package_group {name!r}: use 1-63 letters, digits and hyphens, starting with a letter "
                         "or digit (SageMaker's rule for group names)")
    return name


# ==================================================================================================
# The model quality statistics
# ==================================================================================================
def _number(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else "NaN"


def _figure(value, interval=None):
    """``{"value", "standard_deviation"[, "ci95"]}`` in the schema's form ("NaN" for what is not a number)."""
    out = {"value": _number(value), "standard_deviation": "NaN"}
    if interval and all(isinstance(v, (int, float)) and math.isfinite(v) for v in interval):
        out["standard_deviation"] = (interval[1] - interval[0]) / (2 * Z95)
        out["ci95"] = [interval[0], interval[1]]
    return out


def _confusion(matrix, classes):
    """SageMaker's ``{"<true>": {"<predicted>": count}}`` from metrics.json's rows-true matrix."""
    return {str(t): {str(p): int(n) for p, n in zip(classes, row)} for t, row in zip(classes, matrix)}


def _binary(split, classes):
    ci, op = split.get("ci95") or {}, split.get("operating_point")
    if not op:  # no threshold chosen: the argmax decisions
        op = {"accuracy": split["accuracy"], "sensitivity": split.get("sensitivity"),
              "specificity": split.get("specificity"), "confusion_matrix": split["confusion_matrix"]}
        ci = dict(ci, op_accuracy=ci.get("accuracy"), op_sensitivity=ci.get("sensitivity"),
                  op_specificity=ci.get("specificity"))
    tpr, tnr = _figure(op.get("sensitivity"), ci.get("op_sensitivity")), _figure(
        op.get("specificity"), ci.get("op_specificity"))
    out = {"auc": _figure(split.get("auc"), ci.get("auc")), "accuracy": _figure(op["accuracy"], ci.get("op_accuracy")),
           "true_positive_rate": tpr, "recall": dict(tpr), "true_negative_rate": tnr,
           "false_positive_rate": _figure(1 - tnr["value"] if tnr["value"] != "NaN" else None),
           "false_negative_rate": _figure(1 - tpr["value"] if tpr["value"] != "NaN" else None),
           "confusion_matrix": _confusion(op["confusion_matrix"], classes)}
    if "ppv" in op:
        out["precision"] = _figure(op["ppv"])
    return {"binary_classification_metrics": out}


def _multiclass(split, classes):
    ci = split.get("ci95") or {}
    out = {name: _figure(split.get(name), ci.get(name)) for name in ("accuracy", "auc")}
    out["macro_sensitivity"] = _figure(split.get("sensitivity"), ci.get("sensitivity"))
    out["macro_specificity"] = _figure(split.get("specificity"), ci.get("specificity"))
    out["balanced_accuracy"] = _figure(split.get("balanced_accuracy"))
    for name in ("kappa", "mae"):  # ordered grades
        if name in split:
            out[name] = _figure(split[name])
    out["confusion_matrix"] = _confusion(split["confusion_matrix"], classes)
    return {"multiclass_classification_metrics": out}


def _multilabel(split):
    ci = split.get("ci95") or {}
    out = {name: _figure(split.get(name), ci.get(name)) for name in ("auc", "accuracy")}
    out["macro_sensitivity"] = _figure(split.get("sensitivity"), ci.get("sensitivity"))
    out["macro_specificity"] = _figure(split.get("specificity"), ci.get("specificity"))
    out["per_finding"] = {name: {k: _figure(v.get(k)) for k in ("auc", "sensitivity", "specificity", "threshold")}
                          for name, v in (split.get("per_finding") or {}).items()}
    return {"multilabel_classification_metrics": out}


def quality_split(metrics):
    """The split a package reports: "test", or "val" when the job had no test split (then its figures are
    optimistic: val chose the epoch and the threshold)."""
    return "test" if metrics.get("test") else "val"


def model_quality(metrics, *, training_job=None):
    """The model quality statistics of the model in ``metrics`` (a loaded metrics.json), as a JSON-ready dict."""
    split_name = quality_split(metrics)
    split, classes = metrics[split_name], list(metrics["classes"])
    if metrics["task"] == "multilabel":
        out = _multilabel(split)
    elif len(classes) == 2:
        out = _binary(split, classes)
    else:
        out = _multiclass(split, classes)
    op = split.get("operating_point") or {}
    out["evaluation"] = {
        "split": split_name, "n": split.get("n"), "classes": classes, "task": metrics["task"],
        "intervals": f"bootstrap 95%, resampling {split.get('ci95_unit', 'image')}s" if split.get("ci95") else None,
        "positive_class": op.get("positive_class"), "threshold": op.get("threshold"), "threshold_rule": op.get("rule"),
        "best_epoch": metrics.get("best_epoch"), "training_job": training_job}
    return out


def upload_model_quality(s3, metrics, uri, *, training_job=None, kms_key=None):
    """Write ``model_quality(metrics)`` to ``uri`` (s3://bucket/key.json; SSE-KMS with ``kms_key``); return ``uri``."""
    if not (uri.startswith("s3://") and uri.endswith(".json")):
        raise ValueError(f"expected s3://.../<name>.json, got {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
    body = json.dumps(model_quality(metrics, training_job=training_job), indent=1, allow_nan=False)
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/json", **extra)
    return uri


def quality_uri(base, group, job_name):
    """Where a package's statistics go: ``<base>/registry/<group>/<job>/model_quality.json``."""
    return f"{base.rstrip('/')}/registry/{group}/{job_name}/model_quality.json"


def _short(value):
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def package_description(metrics, training_job):
    """One line for the package: the job, the split, its AUC with its interval."""
    split_name = quality_split(metrics)
    split = metrics[split_name]
    ci = (split.get("ci95") or {}).get("auc")
    interval = f" (95% CI {_short(ci[0])}-{_short(ci[1])})" if ci else ""
    return (f"{metrics['task']} {'/'.join(metrics['classes'])} from training job {training_job}: {split_name} AUC "
            f"{_short(split.get('auc'))}{interval} on {split.get('n')} images")[:1024]


def package_metadata(metrics, training_job):
    """CustomerMetadataProperties (strings, at most 256 characters each): the job, the split and its headline
    figures, the positive class and the threshold the endpoint applies."""
    split_name = quality_split(metrics)
    split = metrics[split_name]
    op = split.get("operating_point") or {}
    out = {"training_job": training_job, "evaluated_on": split_name, "task": metrics["task"],
           "classes": json.dumps(metrics["classes"])[:256]}
    for name in ("auc", "accuracy"):
        out[f"{split_name}_{name}"] = _short(split.get(name))
    if op:
        out.update(positive_class=str(op.get("positive_class")), threshold=_short(op.get("threshold")),
                   **{f"{split_name}_sensitivity": _short(op.get("sensitivity")),
                      f"{split_name}_specificity": _short(op.get("specificity"))})
    return out


def register_kwargs(model_package_group, approval_status, instance_type):
    """The keyword arguments both SDKs' ``register()`` take alike: content and response types, the instance type
    (real-time and batch), the group, the approval status, the domain and task."""
    return dict(content_types=list(CONTENT_TYPES), response_types=list(RESPONSE_TYPES),
                inference_instances=[instance_type], transform_instances=[instance_type],
                model_package_group_name=model_package_group, approval_status=approval_status, domain=DOMAIN,
                task=TASK)


# ==================================================================================================
# Groups and packages (boto3)
# ==================================================================================================
def _already_exists(exc):
    error = getattr(exc, "response", {}).get("Error", {})
    return "already exists" in error.get("Message", "") or error.get("Code") in ("ResourceInUse",)


def ensure_group(sm, name, *, description=None, tags=None):
    """The group's ARN, creating the group (with ``tags``, a dict) when it does not exist yet."""
    check_group_name(name)
    try:
        return sm.describe_model_package_group(ModelPackageGroupName=name)["ModelPackageGroupArn"]
    except sm.exceptions.ClientError as exc:
        if "does not exist" not in str(exc) and "not found" not in str(exc).lower():
            raise
    kwargs = {"ModelPackageGroupName": name,
              "ModelPackageGroupDescription": description or "medical image classifiers trained by medimg"}
    if tags:
        kwargs["Tags"] = [{"Key": str(k), "Value": str(v)} for k, v in tags.items()]
    try:
        return sm.create_model_package_group(**kwargs)["ModelPackageGroupArn"]
    except sm.exceptions.ClientError as exc:  # created meanwhile by another notebook or pipeline
        if not _already_exists(exc):
            raise
        return sm.describe_model_package_group(ModelPackageGroupName=name)["ModelPackageGroupArn"]


def check_deployable(sm, package_arn):
    """The package's description; ValueError unless it is Approved (SageMaker deploys only approved versions)."""
    desc = sm.describe_model_package(ModelPackageName=package_arn)
    status = desc.get("ModelApprovalStatus")
    if status != "Approved":
        raise ValueError(f"model package {package_arn} is {status}: approve it first (Studio's Model Registry, or "
                         "medimg.registry.approve(sm, arn)), or deploy the job's model.tar.gz instead")
    return desc


def approval_status(sm, package_arn):
    """The package's ModelApprovalStatus now (it may have been approved in Studio since it was registered)."""
    return sm.describe_model_package(ModelPackageName=package_arn).get("ModelApprovalStatus")


def approve(sm, package_arn, note=None):
    """Set the package's approval status to Approved (``note``: the approval description)."""
    kwargs = {"ApprovalDescription": note} if note else {}
    sm.update_model_package(ModelPackageArn=package_arn, ModelApprovalStatus="Approved", **kwargs)


def describe(sm, package_arn):
    """One line: the package, its group and version, its status, and where its statistics are."""
    desc = sm.describe_model_package(ModelPackageName=package_arn)
    stats = ((desc.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}
    return (f"model package {desc['ModelPackageArn']} (group {desc.get('ModelPackageGroupName')}, version "
            f"{desc.get('ModelPackageVersion')}): {desc.get('ModelApprovalStatus')}"
            + (f"; model quality statistics {stats['S3Uri']}" if stats.get("S3Uri") else ""))
