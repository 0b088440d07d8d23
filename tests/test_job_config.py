"""scripts/job_config.py: the Estimator and tuner settings the notebook sends, by mode, instance and security
choice, and that the real SageMaker SDK accepts them (no AWS call is made: nothing is started here)."""
import json
import os

import pytest

from medimg import job_config
from medimg import local_train
from conftest import CODE

BASE = dict(role="arn:aws:iam::123456789012:role/R", hyperparameters={"epochs": 3, "lr": 0.01},
            output_path="s3://b/p/jobs", code_location="s3://b/p/code", base_job_name="medimg")


def kwargs(**overrides):
    return job_config.estimator_kwargs(**dict(BASE, **overrides))


@pytest.fixture(scope="module")
def session():
    import boto3
    import sagemaker

    return sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket="b",
                             sagemaker_config={"SchemaVersion": "1.0",
                                               "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}})


# ---------------------------------------------------------------- modes
def test_spot_mode():
    k = kwargs(mode="spot", max_run=3600, checkpoint_s3_uri="s3://b/p/checkpoints/job-1")
    assert k["use_spot_instances"] is True and k["max_run"] == 3600 and k["max_wait"] == 7200
    assert k["checkpoint_s3_uri"] == "s3://b/p/checkpoints/job-1"
    assert "keep_alive_period_in_seconds" not in k
    assert kwargs(mode="spot", max_run=3600, max_wait=3600)["max_wait"] == 3600
    with pytest.raises(ValueError, match=r"max_wait \(1800 s\) must be at least max_run \(3600 s\)"):
        kwargs(mode="spot", max_run=3600, max_wait=1800)


def test_warm_mode():
    k = kwargs(mode="warm", keep_alive_seconds=900)
    assert k["keep_alive_period_in_seconds"] == 900
    assert "use_spot_instances" not in k and "max_wait" not in k and "checkpoint_s3_uri" not in k
    assert kwargs(mode="warm", keep_alive_seconds=3600)["keep_alive_period_in_seconds"] == 3600
    for bad in (0, 3601):
        with pytest.raises(ValueError, match="keep_alive_seconds must be 1..3600"):
            kwargs(mode="warm", keep_alive_seconds=bad)


def test_on_demand_and_unknown_modes():
    k = kwargs(mode="on-demand", checkpoint_s3_uri="s3://b/c")
    assert not {"use_spot_instances", "max_wait", "keep_alive_period_in_seconds"} & set(k)
    assert k["checkpoint_s3_uri"] == "s3://b/c"
    with pytest.raises(ValueError, match="mode must be one of"):
        kwargs(mode="cheap")


def test_common_settings():
    k = kwargs(tags={"project": "x", "cost-center": 42})
    assert (k["entry_point"], k["source_dir"], k["framework_version"], k["py_version"]) == (
        "train.py", "code", "2.8.0", "py312")
    assert (k["instance_type"], k["instance_count"]) == ("ml.g5.xlarge", 1)
    assert k["metric_definitions"] == job_config.METRIC_DEFINITIONS
    k["metric_definitions"][0]["Name"] = "changed"  # a copy: the shared definitions stay as they are
    assert job_config.METRIC_DEFINITIONS[0]["Name"] == "epoch"
    assert k["tags"] == [{"Key": "project", "Value": "x"}, {"Key": "cost-center", "Value": "42"}]
    assert k["hyperparameters"] == {"epochs": 3, "lr": 0.01} and k["hyperparameters"] is not BASE["hyperparameters"]


# ---------------------------------------------------------------- distribution
@pytest.mark.parametrize("instance_type,count,distributed,expected", [
    ("ml.g5.xlarge", 1, "auto", None),
    ("ml.g5.12xlarge", 1, "auto", job_config.TORCH_DISTRIBUTED),  # 4 GPUs on one instance
    ("ml.g5.xlarge", 2, "auto", job_config.TORCH_DISTRIBUTED),  # 2 instances
    ("ml.p4d.24xlarge", 2, "auto", job_config.TORCH_DISTRIBUTED),
    ("ml.g5.xlarge", 1, True, job_config.TORCH_DISTRIBUTED),
    ("ml.g5.12xlarge", 1, False, None),  # one process on one of the 4 GPUs, if you insist
    ("ml.x9.future", 1, "auto", None),  # unknown type, one instance: as SageMaker runs it
    ("ml.x9.future", 2, "auto", job_config.TORCH_DISTRIBUTED),
])
def test_distribution(instance_type, count, distributed, expected):
    assert job_config.distribution_for(instance_type, count, distributed) == expected
    k = kwargs(instance_type=instance_type, instance_count=count, distributed=distributed)
    assert k.get("distribution") == expected


def test_distribution_refusals():
    with pytest.raises(ValueError, match="ml.m5.xlarge has no GPU"):
        job_config.distribution_for("ml.m5.xlarge", 2)
    with pytest.raises(ValueError, match="instance_count=2 without distribution"):
        job_config.distribution_for("ml.g5.xlarge", 2, distributed=False)
    with pytest.raises(ValueError, match="distributed must be"):
        job_config.distribution_for("ml.g5.xlarge", 1, distributed="yes")
    assert job_config.gpus_per_instance("ml.g5.48xlarge") == 8
    assert job_config.gpus_per_instance("ml.c5.2xlarge") == 0
    assert job_config.gpus_per_instance("ml.trn1.2xlarge") is None


# ---------------------------------------------------------------- security
def test_security_settings_only_when_set():
    assert not {"volume_kms_key", "output_kms_key", "subnets", "security_group_ids", "enable_network_isolation",
                "encrypt_inter_container_traffic"} & set(kwargs())
    k = kwargs(volume_kms_key="arn:aws:kms:us-east-1:123456789012:key/v",
               output_kms_key="arn:aws:kms:us-east-1:123456789012:key/o", subnets=["subnet-1"],
               security_group_ids=["sg-1"], enable_network_isolation=True, encrypt_inter_container_traffic=True)
    assert k["volume_kms_key"].endswith("key/v") and k["output_kms_key"].endswith("key/o")
    assert (k["subnets"], k["security_group_ids"]) == (["subnet-1"], ["sg-1"])
    assert k["enable_network_isolation"] is True and k["encrypt_inter_container_traffic"] is True


def test_security_refusals():
    with pytest.raises(ValueError, match="needs both subnets and security_group_ids"):
        kwargs(subnets=["subnet-1"])
    for pretrained in (True, "true", "True"):
        with pytest.raises(ValueError, match="network-isolated job cannot"):
            kwargs(hyperparameters={"pretrained": pretrained}, enable_network_isolation=True)
    assert kwargs(hyperparameters={"pretrained": False}, enable_network_isolation=True)["enable_network_isolation"]


def test_model_security_settings():
    assert job_config.model_security_kwargs() == {}
    assert job_config.model_security_kwargs(
        output_kms_key="k", volume_kms_key="ignored", subnets=["s"], security_group_ids=["g"],
        enable_network_isolation=True, encrypt_inter_container_traffic=True) == {
        "model_kms_key": "k", "vpc_config": {"Subnets": ["s"], "SecurityGroupIds": ["g"]},
        "enable_network_isolation": True}
    with pytest.raises(ValueError, match="subnets and security_group_ids"):
        job_config.model_security_kwargs(security_group_ids=["g"])


# ---------------------------------------------------------------- the SDK accepts them
@pytest.mark.parametrize("overrides", [
    dict(mode="spot", checkpoint_s3_uri="s3://b/p/checkpoints/j"),
    dict(mode="warm", keep_alive_seconds=1200),
    dict(mode="on-demand", instance_type="ml.g5.12xlarge", instance_count=2, subnets=["subnet-1"],
         security_group_ids=["sg-1"], enable_network_isolation=True, encrypt_inter_container_traffic=True,
         volume_kms_key="vk", output_kms_key="ok"),
])
def test_real_estimator_takes_the_settings(session, overrides):
    from sagemaker.pytorch import PyTorch

    k = kwargs(source_dir=CODE, **overrides)
    est = PyTorch(sagemaker_session=session, **k)
    assert est.metric_definitions == job_config.METRIC_DEFINITIONS
    assert est.use_spot_instances is (k.get("use_spot_instances") is True)
    assert est.keep_alive_period_in_seconds == k.get("keep_alive_period_in_seconds")
    assert est.distribution == k.get("distribution", {})
    assert est.training_image_uri().endswith("/pytorch-training:2.8.0-gpu-py312")


def test_tuner(session):
    from sagemaker.pytorch import PyTorch
    from sagemaker.tuner import HyperparameterTuner

    k = job_config.tuning_estimator_kwargs(kwargs(source_dir=CODE, checkpoint_s3_uri="s3://b/p/checkpoints/j"))
    assert "checkpoint_s3_uri" not in k and k["use_spot_instances"] is True
    tuner = HyperparameterTuner(PyTorch(sagemaker_session=session, **k),
                                **job_config.tuner_kwargs(max_jobs=5, max_parallel_jobs=2))
    assert (tuner.objective_metric_name, tuner.objective_type) == ("val_auc", "Maximize")
    assert (tuner.max_jobs, tuner.max_parallel_jobs, tuner.strategy) == (5, 2, "Bayesian")
    ranges = tuner.hyperparameter_ranges()
    assert sorted(r["Name"] for r in ranges["ContinuousParameterRanges"]) == ["lr", "weight-decay"]
    assert all(r["ScalingType"] == "Logarithmic" for r in ranges["ContinuousParameterRanges"])
    assert float(next(r for r in ranges["ContinuousParameterRanges"] if r["Name"] == "lr")["MinValue"]) == 1e-4
    assert [r["Name"] for r in ranges["CategoricalParameterRanges"]] == ["batch-size"]
    assert "val_auc" in [d["Name"] for d in tuner.metric_definitions]
    with pytest.raises(ValueError, match="max_parallel_jobs"):
        job_config.tuner_kwargs(max_jobs=2, max_parallel_jobs=3)


# ---------------------------------------------------------------- source dir and smoke test
def test_smoke_test_hyperparameters_round_trip_through_local_train():
    hps = {"model": "smallcnn", "epochs": 40, "lr": 0.002, "pretrained": False, "class-weighting": "none",
           "compile": True}
    pairs = job_config.smoke_test_hyperparameters(hps)
    assert local_train.parse_hp(pairs) == dict(hps, epochs=1, compile=False)
    assert hps["epochs"] == 40
