"""The rules of the model's life after one job, without AWS or a server: the Model Registry's statistics JSON
(medimg.registry.model_quality) built from metrics.json entries that code/evaluation.py itself writes, the names and
statuses SageMaker accepts, the pipeline condition and parameters (medimg.pipeline), and what an MLflow run holds
and which tracking URIs are accepted (medimg.tracking)."""
import copy
import functools
import importlib.util
import json
import math
import re

import numpy as np
import pytest

import epoch_log
import evaluation
from medimg import pipeline, registry, tracking
from medimg.job import JobSpec

BINARY = ["normal", "pneumonia"]
MLFLOW_NAME = re.compile(r"^[A-Za-z0-9_\-. :/]+$")  # what MLflow accepts in param and metric names


def split_entry(classes, task="multiclass", n=240, seed=0, single_class=False):
    """A split's metrics.json entry and its predictions, as train.py writes them (evaluation.report)."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    if task == "multilabel":
        y = (rng.random((n, k)) < 0.4).astype(int)
        logits = (y * 2 - 1) * 1.2 + rng.normal(0, 1.2, (n, k))
    else:
        y = np.zeros(n, int) if single_class else rng.integers(0, k, n)
        logits = rng.normal(0, 1.0, (n, k))
        logits[np.arange(n), y] += 1.5
    decisions = evaluation.fit_decisions(y, logits, task=task, classes=list(classes))
    return evaluation.report(y, logits, [f"{i}.png" for i in range(n)], decisions, task=task, classes=list(classes),
                             resamples=100, seed=seed)


def metrics_json(classes=BINARY, task="multiclass", test=True, **kw):
    return copy.deepcopy(_metrics_json(tuple(classes), task, test, tuple(sorted(kw.items()))))


@functools.lru_cache(maxsize=None)
def _metrics_json(classes, task, test, kw):
    kw = dict(kw)
    val, val_predictions = split_entry(classes, task, seed=1)
    out = {"task": task, "classes": list(classes), "best_epoch": 2, "steps": 20,
           "plan": {"epochs": 2, "batch_size": 16, "lr": 0.001, "auto": ["lr"]},
           "history": [{"epoch": e, "train_loss": 0.7 / e, "val_loss": 0.6 / e, "val_auc": 0.7 + e / 10,
                        "val_acc": 0.6 + e / 10, "lr": 0.001, "images_per_sec": 100.0} for e in (1, 2)],
           "val": val, "val_predictions": val_predictions}
    if test:
        out["test"], out["test_predictions"] = split_entry(classes, task, seed=2, **kw)
    return json.loads(json.dumps(out))  # as read back from the file


# ---------------------------------------------------------------- the Model Registry's statistics
def test_a_binary_models_statistics_are_sagemakers_schema_with_the_operating_points_decisions():
    metrics = metrics_json()
    quality = registry.model_quality(metrics, training_job="job-1")
    json.dumps(quality, allow_nan=False)  # strict JSON: S3 readers and Studio parse it
    figures, test = quality["binary_classification_metrics"], metrics["test"]
    op, ci = test["operating_point"], test["ci95"]
    assert figures["auc"]["value"] == test["auc"] and figures["auc"]["ci95"] == ci["auc"]
    assert figures["auc"]["standard_deviation"] == pytest.approx((ci["auc"][1] - ci["auc"][0]) / 3.919928)
    assert figures["accuracy"]["value"] == op["accuracy"] and figures["accuracy"]["ci95"] == ci["op_accuracy"]
    assert figures["true_positive_rate"]["value"] == op["sensitivity"] == figures["recall"]["value"]
    assert figures["true_positive_rate"]["ci95"] == ci["op_sensitivity"]
    assert figures["true_negative_rate"]["value"] == op["specificity"]
    assert figures["false_negative_rate"]["value"] == pytest.approx(1 - op["sensitivity"])
    assert figures["precision"] == {"value": op["ppv"], "standard_deviation": "NaN"}  # no interval: said so
    (tn, fp), (fn, tp) = op["confusion_matrix"]
    assert figures["confusion_matrix"] == {"normal": {"normal": tn, "pneumonia": fp},
                                           "pneumonia": {"normal": fn, "pneumonia": tp}}
    evaluation_ = quality["evaluation"]
    assert evaluation_["split"] == "test" and evaluation_["n"] == test["n"] and evaluation_["training_job"] == "job-1"
    assert evaluation_["positive_class"] == "pneumonia" and evaluation_["threshold"] == op["threshold"]
    assert "image" in evaluation_["intervals"]


def test_without_a_test_split_the_statistics_say_they_are_validations():
    metrics = metrics_json(test=False)
    quality = registry.model_quality(metrics)
    assert quality["evaluation"]["split"] == "val"
    assert quality["binary_classification_metrics"]["auc"]["value"] == metrics["val"]["auc"]
    assert registry.package_metadata(metrics, "job")["evaluated_on"] == "val"
    assert "val AUC" in registry.package_description(metrics, "job")


def test_more_classes_and_several_findings_get_their_own_sections():
    three = metrics_json(classes=["normal", "benign", "malignant"])
    quality = registry.model_quality(three)
    assert set(quality) == {"multiclass_classification_metrics", "evaluation"}
    figures = quality["multiclass_classification_metrics"]
    assert figures["auc"]["value"] == three["test"]["auc"] and figures["auc"]["ci95"] == three["test"]["ci95"]["auc"]
    assert figures["macro_sensitivity"]["value"] == three["test"]["sensitivity"]
    assert set(figures["confusion_matrix"]) == {"normal", "benign", "malignant"}
    findings = metrics_json(classes=["Effusion", "Nodule"], task="multilabel")
    quality = registry.model_quality(findings)
    assert set(quality) == {"multilabel_classification_metrics", "evaluation"}
    per = quality["multilabel_classification_metrics"]["per_finding"]
    assert per["Nodule"]["auc"]["value"] == findings["test"]["per_finding"]["Nodule"]["auc"]
    json.dumps(quality, allow_nan=False)


def test_an_undefined_auc_is_nan_in_the_statistics_and_the_json_stays_strict():
    metrics = metrics_json(single_class=True)  # a test split of one class: no AUC
    assert metrics["test"]["auc"] is None or math.isnan(metrics["test"]["auc"])
    quality = registry.model_quality(metrics)
    assert quality["binary_classification_metrics"]["auc"]["value"] == "NaN"
    json.dumps(quality, allow_nan=False)
    assert registry.package_metadata(metrics, "job")["test_auc"] == "n/a"


def test_package_metadata_are_short_strings():
    meta = registry.package_metadata(metrics_json(), "job-1")
    assert meta["training_job"] == "job-1" and meta["positive_class"] == "pneumonia"
    assert all(isinstance(v, str) and len(v) <= 256 for v in meta.values())
    assert float(meta["test_auc"]) == pytest.approx(metrics_json()["test"]["auc"], abs=5e-4)


@pytest.mark.parametrize("status", ["Approved", "PendingManualApproval", "Rejected"])
def test_sagemakers_approval_statuses_are_taken(status):
    assert registry.check_approval_status(status) == status


@pytest.mark.parametrize("status", ["approved", "Pending", "", None])
def test_another_approval_status_is_one_line_naming_the_three(status):
    with pytest.raises(ValueError, match="Approved, Rejected, PendingManualApproval"):
        registry.check_approval_status(status)


@pytest.mark.parametrize("name", ["chest-xray", "a", "A1-b2--c3", "x" * 63])
def test_valid_group_names(name):
    assert registry.check_group_name(name) == name


@pytest.mark.parametrize("name", ["", "-lead", "trail-", "under_score", "dot.ted", "x" * 64, "sp ace", None])
def test_invalid_group_names_say_the_rule(name):
    with pytest.raises(ValueError, match="letters, digits and hyphens"):
        registry.check_group_name(name)


def test_the_statistics_land_where_asked_encrypted_when_a_key_is_given():
    class S3:
        def put_object(self, **kw):
            self.sent = kw

    s3 = S3()
    uri = registry.quality_uri("s3://b/prefix/", "grp", "job-1")
    assert uri == "s3://b/prefix/registry/grp/job-1/model_quality.json"
    registry.upload_model_quality(s3, metrics_json(), uri, training_job="job-1", kms_key="alias/k")
    assert (s3.sent["Bucket"], s3.sent["Key"]) == ("b", "prefix/registry/grp/job-1/model_quality.json")
    assert s3.sent["ServerSideEncryption"] == "aws:kms" and s3.sent["SSEKMSKeyId"] == "alias/k"
    assert json.loads(s3.sent["Body"])["evaluation"]["training_job"] == "job-1"
    with pytest.raises(ValueError, match="s3://"):
        registry.upload_model_quality(s3, metrics_json(), "/local/file.json")


# ---------------------------------------------------------------- the pipeline's condition and parameters
def spec(channels=("train", "val", "test"), **kw):
    return JobSpec(role="r", hyperparameters=kw.pop("hyperparameters", {}), output_path="s3://b/o",
                   code_location="s3://b/c", base_job_name="b", mode="on-demand",
                   channels={ch: f"s3://b/data/{ch}" for ch in channels}, **kw)


@pytest.mark.parametrize("condition, holds, fails", [
    ({"metric": "test_auc", "min": 0.9}, [0.9, 0.95], [0.89]),
    ({"metric": "val_loss", "max": 0.3}, [0.3, 0.1], [0.31]),
    ({"metric": "val_auc", "min": 0.8, "max": 0.99}, [0.8, 0.99], [0.79, 0.995]),
    ({"metric": "test_acc", "min": 0}, [0.0], [-0.1]),
])
def test_a_condition_holds_within_its_bounds(condition, holds, fails):
    cond = pipeline.condition_for(spec(), condition)
    assert all(cond.holds(v) for v in holds) and not any(cond.holds(v) for v in fails)


@pytest.mark.parametrize("condition, message", [
    ("test_auc >= 0.9", "must be {'metric'"),
    ({"metric": "test_auc", "minimum": 0.9}, "must be {'metric'"),
    ({"min": 0.9}, "must be {'metric'"),
    ({"metric": "test_auc"}, "has no bound"),
    ({"metric": "test_auc", "min": "0.9"}, "finite number"),
    ({"metric": "test_auc", "min": True}, "finite number"),
    ({"metric": "test_auc", "min": float("nan")}, "finite number"),
    ({"metric": "test_auc", "max": float("inf")}, "finite number"),
    ({"metric": "test_auc", "min": 0.9, "max": 0.8}, "above max"),
    ({"metric": "test_sensitivity", "min": 0.9}, "not one the job's metric definitions extract"),
    ({"metric": "auc", "min": 0.9}, "choose one of epoch, train_loss"),
])
def test_a_bad_condition_is_one_line_saying_what_to_write(condition, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pipeline.condition_for(spec(), condition)


def test_a_test_metric_without_a_test_channel_says_so():
    with pytest.raises(ValueError, match="only when the job has a test channel"):
        pipeline.condition_for(spec(channels=("train", "val")), {"metric": "test_auc", "min": 0.9})
    assert pipeline.condition_for(spec(channels=("train", "val")), {"metric": "val_auc", "min": 0.9})
    ordinal = spec(hyperparameters={"ordinal": True})
    assert pipeline.condition_for(ordinal, {"metric": "val_kappa", "min": 0.5}).metric == "val_kappa"
    with pytest.raises(ValueError, match="val_kappa"):
        pipeline.condition_for(spec(), {"metric": "val_kappa", "min": 0.5}).metric  # not logged without ordinal
    assert pipeline.check_condition({"metric": "val_kappa", "min": 0.5})  # before the job is known: any metric


def test_the_condition_metric_names_are_the_metric_definitions():
    names = [d["Name"] for d in epoch_log.metric_definitions(test=True)]
    for name in names:
        assert pipeline.condition_for(spec(), {"metric": name, "min": 0}).metric == name


def test_pipeline_parameters_are_the_channels_the_instance_the_bounds_and_the_status():
    cond = pipeline.condition_for(spec(), {"metric": "test_auc", "min": 0.9, "max": 1.0})
    params = pipeline.parameters(spec(channels=("train", "validation", "test")), cond, "Approved")
    assert params == {"TrainData": "s3://b/data/train", "ValidationData": "s3://b/data/validation",
                      "TestData": "s3://b/data/test", "TrainingInstanceType": "ml.g5.xlarge", "MinTestAuc": 0.9,
                      "MaxTestAuc": 1.0, "ModelApprovalStatus": "Approved"}
    assert pipeline.start_parameters({"TrainData": "s3://new/"}, params) == {"TrainData": "s3://new/"}
    with pytest.raises(ValueError, match="no parameter 'TrainingData'; its parameters are TrainData"):
        pipeline.start_parameters({"TrainingData": "s3://new/"}, params)
    with pytest.raises(ValueError, match="needs the job's channels"):
        pipeline.parameters(JobSpec(role="r", hyperparameters={}, output_path="s3://b/o", code_location="s3://b/c",
                                    base_job_name="b"), cond, "Approved")


@pytest.mark.parametrize("condition, words", [
    ({"metric": "test_auc", "min": 0.9}, "is below the minimum"),
    ({"metric": "val_loss", "max": 0.3}, "is above the maximum"),
    ({"metric": "val_auc", "min": 0.8, "max": 0.99}, "is outside ["),
])
def test_the_failure_message_names_the_metric_and_both_values(condition, words):
    cond = pipeline.condition_for(spec(), condition)
    text = "".join(str(p) for p in cond.failure_message(0.5, condition.get("min"), condition.get("max")))
    assert f"{condition['metric']}=0.5" in text and words in text and "no model package was registered" in text
    for bound in ("min", "max"):
        if bound in condition:
            assert str(condition[bound]) in text


def test_a_steps_line_says_what_it_made_or_why_it_failed():
    assert pipeline.step_line({"StepName": "Train", "StepStatus": "Succeeded",
                               "Metadata": {"TrainingJob": {"Arn": "arn:job"}}}) == "  Train: Succeeded (arn:job)"
    assert pipeline.step_line({"StepName": "CheckMetric", "StepStatus": "Succeeded",
                               "Metadata": {"Condition": {"Outcome": "False"}}}).endswith("(outcome False)")
    line = pipeline.step_line({"StepName": "ConditionNotMet", "StepStatus": "Failed",
                               "Metadata": {"Fail": {"ErrorMessage": "test_auc=0.5 is below"}}})
    assert line == "  ConditionNotMet: Failed: test_auc=0.5 is below"


# ---------------------------------------------------------------- MLflow: settings and what a run holds
@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "https://mlflow.example.org/",
                                 "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/my-server",
                                 "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-app/app-abc123"])
def test_tracking_uris_that_are_taken(uri):
    assert tracking.check_settings(uri, "exp") == uri
    assert tracking.check_settings(None, None) is None  # off


@pytest.mark.parametrize("uri", ["file:./mlruns", "127.0.0.1:5000", "mlruns", "databricks",
                                 "arn:aws:sagemaker:us-east-1:1234:mlflow-tracking-server/x",
                                 "arn:aws:sagemaker:us-east-1:123456789012:endpoint/x", ""])
def test_other_tracking_uris_are_one_line_naming_the_two_forms(uri):
    with pytest.raises(ValueError, match=r"http\(s\):// URL .* SageMaker MLflow ARN"):
        tracking.check_settings(uri, "exp")


@pytest.mark.parametrize("experiment", ["", "  ", None, 3])
def test_an_experiment_needs_a_name(experiment):
    with pytest.raises(ValueError, match="mlflow_experiment"):
        tracking.check_settings("http://127.0.0.1:5000", experiment)


@pytest.mark.parametrize("missing, uri, says", [
    ("mlflow", "http://127.0.0.1:5000", "pip install mlflow"),
    ("mlflow", "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/s", "pip install mlflow sagemaker-mlflow"),
    ("sagemaker_mlflow", "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/s",
     "pip install sagemaker-mlflow"),
])
def test_what_is_not_installed_is_one_line_with_the_install_command(monkeypatch, missing, uri, says):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    with pytest.raises(RuntimeError, match=re.escape(says)):
        tracking.check_settings(uri, "exp")


def test_http_tracking_needs_no_plugin(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sagemaker_mlflow" else real(name, *a))
    assert tracking.check_settings("http://127.0.0.1:5000", "exp")


@pytest.mark.parametrize("sent", [
    {"lr": "0.003", "model": '"smallcnn"', "tta": "true", "sagemaker_program": '"train.py"',
     "sagemaker_submit_directory": '"s3://b/c/source/sourcedir.tar.gz"', "_tuning_objective_metric": "val_auc"},  # v2
    {"lr": "0.003", "model": "smallcnn", "tta": "true", "_tuning_objective_metric": "val_auc"},  # v3: strings bare
])
def test_the_params_are_the_hyperparameters_as_sent_whichever_sdk_encoded_them(sent):
    params = tracking.run_params({"HyperParameters": sent}, metrics_json())
    assert {k: v for k, v in params.items() if not k.startswith("plan.")} == {"lr": "0.003", "model": "smallcnn",
                                                                              "tta": "true"}
    assert params["plan.epochs"] == "2" and params["plan.auto"] == '["lr"]'


def test_the_metrics_are_the_curves_by_epoch_and_the_splits_figures_with_intervals():
    metrics = metrics_json()
    logged = tracking.run_metrics(metrics)
    assert all(MLFLOW_NAME.match(name) for name, _, _ in logged)
    curve = [(step, value) for name, value, step in logged if name == "val_auc"]
    assert curve == [(h["epoch"], h["val_auc"]) for h in metrics["history"]]
    assert not any(name == "epoch" for name, _, _ in logged)
    named = {name: value for name, value, _ in logged}
    test = metrics["test"]
    assert named["test_auc"] == test["auc"] and named["best_val_auc"] == metrics["val"]["auc"]
    assert (named["test_auc_ci95_lower"], named["test_auc_ci95_upper"]) == tuple(test["ci95"]["auc"])
    assert named["test_op_sensitivity"] == test["operating_point"]["sensitivity"]
    assert named["test_op_accuracy_ci95_upper"] == test["ci95"]["op_accuracy"][1]
    findings = tracking.run_metrics(metrics_json(classes=["Pleural Effusion", "Nodule"], task="multilabel"))
    assert any(name == "test_Pleural Effusion/auc" for name, _, _ in findings)
    assert all(MLFLOW_NAME.match(name) for name, _, _ in findings)


def test_the_tags_name_the_job_and_where_its_model_is():
    tags = tracking.run_tags({"TrainingJobName": "j", "TrainingJobArn": "arn:j", "TrainingJobStatus": "Completed",
                              "ModelArtifacts": {"S3ModelArtifacts": "s3://b/j/output/model.tar.gz"},
                              "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1}},
                             {"sagemaker.tuning_job_name": "t"})
    assert tags == {"sagemaker.training_job_name": "j", "sagemaker.training_job_arn": "arn:j",
                    "sagemaker.model_data": "s3://b/j/output/model.tar.gz", "sagemaker.instance_type": "ml.g5.xlarge",
                    "sagemaker.instance_count": "1", "sagemaker.status": "Completed", "sagemaker.tuning_job_name": "t"}



def test_both_sdk_paths_offer_the_same_registry_and_pipeline_functions():
    """The notebook calls sdk.mlops(path).<name>(...) without knowing the path: same names, same parameters."""
    import inspect

    from medimg import mlops_v2, mlops_v3, sdk

    names = ("register", "deploy_package", "build_pipeline", "run_pipeline", "pipeline_session")
    for name in names:
        assert inspect.signature(getattr(mlops_v2, name)) == inspect.signature(getattr(mlops_v3, name)), name
    assert sdk.mlops("v2") is mlops_v2 and sdk.mlops("v3") is mlops_v3
    with pytest.raises(ValueError, match="path must be one of"):
        sdk.mlops("v4")
