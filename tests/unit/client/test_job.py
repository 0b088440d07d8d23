"""medimg.job (one description of a training job, its rules and derived values), medimg.sdk (which SDK path runs),
and the two builders: medimg.sdk_v2 with the real SDK v2 of this environment, medimg.sdk_v3 with the real SDK v3
of .venv-sdk3 (tests/support/sdk3_probe.py builds the ModelTrainer there on a session that refuses every AWS call
and prints the CreateTrainingJob request it would send). No AWS call is made and nothing is started here; what the
SDKs send to a server is tested against the emulator (test_sagemaker_requests.py, test_sdk_v3_jobs.py)."""
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from medimg import local_train, sdk, sdk_v2
from medimg.container import epoch_log
from medimg.job import (INFERENCE_ENVIRONMENT, TORCH_DISTRIBUTED, JobSpec, TuningSpec, distribution_for,
                        gpus_per_instance, inference_version, tuning_ranges, unique_name)
from conftest import CODE, ROOT

ROLE = "arn:aws:iam::123456789012:role/R"
BASE = dict(role=ROLE, hyperparameters={"epochs": 3, "lr": 0.01}, output_path="s3://b/p/jobs",
            code_location="s3://b/p/code", base_job_name="medimg")
SDK3_PYTHON = os.path.join(ROOT, ".venv-sdk3", "bin", "python")
KEY = "arn:aws:kms:us-east-1:123456789012:key/"


def spec(**overrides):
    return JobSpec(**dict(BASE, **overrides))


def kwargs(**overrides):
    """What SDK v2's Estimator gets for the spec."""
    return sdk_v2.estimator_kwargs(spec(**overrides))


def names(definitions):
    return [d["Name"] for d in definitions]


@pytest.fixture(scope="module")
def session():
    import boto3

    return sdk_v2.make_session(boto3.Session(region_name="us-east-1"), default_bucket="b")


# ---------------------------------------------------------------- modes
def test_spot_mode():
    s = spec(mode="spot", max_run=3600, checkpoint_s3_uri="s3://b/p/checkpoints/job-1")
    assert (s.spot, s.max_wait_seconds, s.keep_alive) == (True, 7200, None)
    k = sdk_v2.estimator_kwargs(s)
    assert k["use_spot_instances"] is True and k["max_run"] == 3600 and k["max_wait"] == 7200
    assert k["checkpoint_s3_uri"] == "s3://b/p/checkpoints/job-1"
    assert "keep_alive_period_in_seconds" not in k
    assert spec(mode="spot", max_run=3600, max_wait=3600).max_wait_seconds == 3600
    with pytest.raises(ValueError, match=r"max_wait \(1800 s\) must be at least max_run \(3600 s\)"):
        spec(mode="spot", max_run=3600, max_wait=1800)


def test_warm_mode():
    s = spec(mode="warm", keep_alive_seconds=900, max_wait=10)  # max_wait is a spot setting: ignored here
    assert (s.keep_alive, s.max_wait_seconds, s.spot) == (900, None, False)
    k = sdk_v2.estimator_kwargs(s)
    assert k["keep_alive_period_in_seconds"] == 900
    assert "use_spot_instances" not in k and "max_wait" not in k and "checkpoint_s3_uri" not in k
    assert spec(mode="warm", keep_alive_seconds=3600).keep_alive == 3600
    for bad in (0, 3601):
        with pytest.raises(ValueError, match="keep_alive_seconds must be 1..3600"):
            spec(mode="warm", keep_alive_seconds=bad)
    assert spec(mode="spot", keep_alive_seconds=0).keep_alive is None  # checked in warm mode only


def test_on_demand_and_unknown_modes():
    k = kwargs(mode="on-demand", checkpoint_s3_uri="s3://b/c")
    assert not {"use_spot_instances", "max_wait", "keep_alive_period_in_seconds"} & set(k)
    assert k["checkpoint_s3_uri"] == "s3://b/c"
    with pytest.raises(ValueError, match="mode must be one of"):
        spec(mode="cheap")
    with pytest.raises(ValueError, match="instance_count must be at least 1, got 0"):
        spec(instance_count=0)


def test_common_settings():
    s = spec(tags={"project": "x", "cost-center": 42})
    k = sdk_v2.estimator_kwargs(s)
    assert (k["entry_point"], k["source_dir"], k["framework_version"], k["py_version"]) == (
        "train.py", "code", "2.8.0", "py312")
    assert (k["instance_type"], k["instance_count"], k["volume_size"]) == ("ml.g5.xlarge", 1, 30)
    assert k["metric_definitions"] == s.metric_definitions == epoch_log.metric_definitions(test=True)
    k["metric_definitions"][0]["Name"] = "changed"  # a copy: the spec's definitions stay as they are
    assert s.metric_definitions[0]["Name"] == "epoch"
    assert k["tags"] == [{"Key": "project", "Value": "x"}, {"Key": "cost-center", "Value": "42"}] == s.tag_list
    assert k["hyperparameters"] == {"epochs": 3, "lr": 0.01} and k["hyperparameters"] is not BASE["hyperparameters"]
    assert k["disable_profiler"] is True and k["debugger_hook_config"] is False


def test_the_spec_is_a_validated_value():
    s = spec()
    with pytest.raises(AttributeError):
        s.mode = "warm"  # frozen: change it with replace, which checks again
    assert s.replace(mode="warm").keep_alive == 1800 and s.mode == "spot"
    with pytest.raises(ValueError, match="keep_alive_seconds"):
        s.replace(mode="warm", keep_alive_seconds=0)
    hps = {"epochs": 1}
    t = spec(hyperparameters=hps)
    hps["epochs"] = 99
    assert t.hyperparameters == {"epochs": 1}  # a copy of the caller's dict
    assert spec(checkpoint_s3_uri="s3://b/c").for_tuning().checkpoint_s3_uri is None


# ---------------------------------------------------------------- distribution
@pytest.mark.parametrize("instance_type,count,distributed,expected,processes", [
    ("ml.g5.xlarge", 1, "auto", None, 1),
    ("ml.g5.12xlarge", 1, "auto", TORCH_DISTRIBUTED, 4),  # 4 GPUs on one instance
    ("ml.g5.xlarge", 2, "auto", TORCH_DISTRIBUTED, 1),  # 2 instances
    ("ml.p4d.24xlarge", 2, "auto", TORCH_DISTRIBUTED, 8),
    ("ml.g5.xlarge", 1, True, TORCH_DISTRIBUTED, 1),
    ("ml.g5.12xlarge", 1, False, None, 1),  # one process on one of the 4 GPUs, if you insist
    ("ml.x9.future", 1, "auto", None, 1),  # unknown type, one instance: as SageMaker runs it
    ("ml.x9.future", 2, "auto", TORCH_DISTRIBUTED, None),  # unknown GPUs: the launcher counts them
])
def test_distribution(instance_type, count, distributed, expected, processes):
    assert distribution_for(instance_type, count, distributed) == expected
    s = spec(instance_type=instance_type, instance_count=count, distributed=distributed)
    assert (s.distribution, s.torchrun, s.processes_per_host) == (expected, expected is not None, processes)
    assert sdk_v2.estimator_kwargs(s).get("distribution") == expected


def test_distribution_refusals():
    with pytest.raises(ValueError, match="ml.m5.xlarge has no GPU"):
        distribution_for("ml.m5.xlarge", 2)
    with pytest.raises(ValueError, match="instance_count=2 without distribution"):
        distribution_for("ml.g5.xlarge", 2, distributed=False)
    with pytest.raises(ValueError, match="distributed must be"):
        distribution_for("ml.g5.xlarge", 1, distributed="yes")
    with pytest.raises(ValueError, match="ml.c5.2xlarge has no GPU"):  # the spec refuses what the rule refuses
        spec(instance_type="ml.c5.2xlarge", distributed=True)
    assert gpus_per_instance("ml.g5.48xlarge") == 8
    assert gpus_per_instance("ml.c5.2xlarge") == 0
    assert gpus_per_instance("ml.trn1.2xlarge") is None
    distribution = distribution_for("ml.g5.xlarge", 2)
    distribution["torch_distributed"]["enabled"] = False
    assert TORCH_DISTRIBUTED["torch_distributed"]["enabled"] is True  # a fresh copy each time


# ---------------------------------------------------------------- security
def test_security_settings_only_when_set():
    assert spec().security == {}
    assert not {"volume_kms_key", "output_kms_key", "subnets", "security_group_ids", "enable_network_isolation",
                "encrypt_inter_container_traffic"} & set(kwargs())
    k = kwargs(volume_kms_key=KEY + "v", output_kms_key=KEY + "o", subnets=["subnet-1"], security_group_ids=["sg-1"],
               enable_network_isolation=True, encrypt_inter_container_traffic=True)
    assert k["volume_kms_key"].endswith("key/v") and k["output_kms_key"].endswith("key/o")
    assert (k["subnets"], k["security_group_ids"]) == (["subnet-1"], ["sg-1"])
    assert k["enable_network_isolation"] is True and k["encrypt_inter_container_traffic"] is True


def test_security_refusals():
    with pytest.raises(ValueError, match="needs both subnets and security_group_ids"):
        spec(subnets=["subnet-1"])
    with pytest.raises(ValueError, match="needs both subnets and security_group_ids"):
        spec(security_group_ids=["sg-1"])
    for pretrained in (True, "true", "True"):
        with pytest.raises(ValueError, match="network-isolated job cannot"):
            spec(hyperparameters={"pretrained": pretrained}, enable_network_isolation=True)
    assert spec(hyperparameters={"pretrained": False}, enable_network_isolation=True).enable_network_isolation
    assert spec(hyperparameters={"pretrained": True}).hyperparameters["pretrained"] is True  # with network: fine


def test_model_security_settings():
    assert sdk_v2.model_security_kwargs(**spec().security) == {}
    s = spec(output_kms_key="k", volume_kms_key="v", subnets=["s"], security_group_ids=["g"],
             enable_network_isolation=True, encrypt_inter_container_traffic=True)
    assert sdk_v2.model_security_kwargs(**s.security) == {
        "model_kms_key": "k", "vpc_config": {"Subnets": ["s"], "SecurityGroupIds": ["g"]},
        "enable_network_isolation": True}
    with pytest.raises(ValueError, match="subnets and security_group_ids"):
        sdk_v2.model_security_kwargs(security_group_ids=["g"])


# ---------------------------------------------------------------- channels and metric definitions
def test_channels_are_s3_data_channels():
    s = spec(channels={"train": "s3://b/d/train/", "validation": "s3://b/d/val/"})
    assert s.channels == {"train": "s3://b/d/train/", "validation": "s3://b/d/val/"}
    for launcher in ("code", "sm_drivers", "Code"):
        with pytest.raises(ValueError, match=f"channel '{launcher}' is a name SDK v3's ModelTrainer uses"):
            spec(channels={"train": "s3://b/t/", launcher: "s3://b/c/"})
    with pytest.raises(ValueError, match=r"channel 'train': expected an s3:// URI, got '/data/train'"):
        spec(channels={"train": "/data/train"})
    with pytest.raises(ValueError, match="the job needs its channels"):
        sdk_v2.start_job(spec(), session=None)


@pytest.mark.parametrize("channels,hyperparameters,test,ordinal", [
    (None, {}, True, False),  # not known yet: a job that may well have a test channel
    ({"train": "s3://b/t/", "val": "s3://b/v/"}, {}, False, False),
    ({"train": "s3://b/t/", "testing": "s3://b/x/"}, {}, True, False),  # an alias of test
    ({"train": "s3://b/t/"}, {"ordinal": "true"}, False, True),
    ({"train": "s3://b/t/", "test": "s3://b/x/"}, {"ordinal": True}, True, True),
    ({"train": "s3://b/t/"}, {"ordinal": False}, False, False),
])
def test_metric_definitions_follow_the_channels_and_ordinal(channels, hyperparameters, test, ordinal):
    s = spec(channels=channels, hyperparameters=hyperparameters)
    assert s.metric_definitions == epoch_log.metric_definitions(test=test, ordinal=ordinal)
    assert ("test_auc" in names(s.metric_definitions)) is test
    assert ("val_kappa" in names(s.metric_definitions)) is ordinal


# ---------------------------------------------------------------- tuning, inference image, names
def test_tuning_spec():
    t = TuningSpec()
    assert (t.max_jobs, t.max_parallel_jobs, t.early_stopping, t.strategy) == (6, 2, "Auto", "Bayesian")
    assert (t.objective_metric_name, t.objective_type) == ("val_auc", "Maximize")
    assert t.ranges == tuning_ranges() == {"lr": ("continuous", 1e-4, 1e-2, "Logarithmic"),
                                           "weight-decay": ("continuous", 1e-5, 0.1, "Logarithmic"),
                                           "batch-size": ("categorical", [64, 128, 256])}
    for bad in (dict(max_jobs=2, max_parallel_jobs=3), dict(max_parallel_jobs=0)):
        with pytest.raises(ValueError, match="max_parallel_jobs"):
            TuningSpec(**bad)
    with pytest.raises(ValueError, match="range 'x'"):
        TuningSpec(ranges={"x": ("integer", 1, 2)})


def test_inference_image_version_and_environment():
    assert inference_version("2.8.0") == "2.6.0" and inference_version("2.7.1") == "2.6.0"
    assert inference_version("2.6.0") == "2.6.0"
    assert inference_version("2.5.1") == "2.5.1"  # older than every listed one: its own
    assert INFERENCE_ENVIRONMENT["SAGEMAKER_PROGRAM"] == "inference.py"
    assert INFERENCE_ENVIRONMENT["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert os.path.isfile(os.path.join(CODE, INFERENCE_ENVIRONMENT["SAGEMAKER_PROGRAM"]))
    assert sdk_v2.inference_version is inference_version


def test_unique_names_have_the_sdk_v2_format():
    assert unique_name("nbtest", datetime(2026, 1, 2, 3, 4, 5, 678999, timezone.utc)) == "nbtest-2026-01-02-03-04-05-678"
    import sagemaker

    ours, theirs = unique_name("medimg"), sagemaker.utils.name_from_base("medimg")
    assert re.fullmatch(r"medimg-\d{4}(-\d\d){5}-\d{3}", ours) and len(ours) == len(theirs)
    assert len(unique_name("x" * 80)) == 63


# ---------------------------------------------------------------- which SDK path runs
@pytest.mark.parametrize("version,path", [("2.257.7", "v2"), ("2.245.0", "v2"), ("3.12.0", "v3"), ("3.27.0", "v3")])
def test_detect_by_installed_major(version, path):
    assert sdk.detect(version=version) == path
    assert sdk.detect(path, version=version) == path
    assert sdk.describe(path, version).startswith(f"SageMaker Python SDK {version}: the {path} path (")


def test_detect_refuses_what_cannot_run(monkeypatch):
    with pytest.raises(ValueError, match=r"sdk='v3' needs SageMaker Python SDK v3, but 2.257.7 is installed"):
        sdk.detect("v3", version="2.257.7")
    with pytest.raises(ValueError, match="sdk='v2' needs SageMaker Python SDK v2.*'sagemaker>=2.257,<3'"):
        sdk.detect("v2", version="3.27.0")
    with pytest.raises(ValueError, match="sdk must be 'auto', 'v2' or 'v3'"):
        sdk.detect("v4")
    monkeypatch.setattr(sdk, "installed_version", lambda: None)
    with pytest.raises(RuntimeError, match="the SageMaker Python SDK is not installed"):
        sdk.detect()


def test_detect_in_this_environment():
    import sagemaker

    assert sdk.installed_version() == sagemaker.__version__
    assert sdk.detect() == "v2" and sdk.module("v2") is sdk_v2
    assert "Estimator" in sdk.describe("v2") and sagemaker.__version__ in sdk.describe("v2")


def test_the_job_modules_import_without_any_sdk():
    """``import medimg.job`` (and the builders, whose SDK imports wait until used) with no sagemaker at all."""
    code = ("import sys; sys.modules['sagemaker'] = None\n"
            "import medimg.job, medimg.sdk, medimg.sdk_v2, medimg.sdk_v3\n"
            "spec = medimg.job.JobSpec(role='r', hyperparameters={}, output_path='s3://b/o', code_location='s3://b/c',"
            " base_job_name='b')\n"
            "print(medimg.sdk_v2.estimator_kwargs(spec)['max_run'])\n"
            "try:\n    medimg.sdk_v2.Estimator\nexcept ImportError as e:\n    print('no Estimator:', e.name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["86400", "no Estimator: sagemaker.pytorch"]


def test_smoke_test_hyperparameters_round_trip_through_local_train():
    hps = {"model": "smallcnn", "epochs": 40, "lr": 0.002, "pretrained": False, "class-weighting": "none",
           "compile": True}
    pairs = local_train.smoke_test_hyperparameters(hps)
    assert local_train.parse_hp(pairs) == dict(hps, epochs=1, compile=False)
    assert hps["epochs"] == 40


# ---------------------------------------------------------------- SDK v2: the real Estimator and tuner take them
@pytest.mark.parametrize("overrides", [
    dict(mode="spot", checkpoint_s3_uri="s3://b/p/checkpoints/j"),
    dict(mode="warm", keep_alive_seconds=1200),
    dict(mode="on-demand", instance_type="ml.g5.12xlarge", instance_count=2, subnets=["subnet-1"],
         security_group_ids=["sg-1"], enable_network_isolation=True, encrypt_inter_container_traffic=True,
         volume_kms_key="vk", output_kms_key="ok"),
])
def test_real_estimator_takes_the_settings(session, overrides):
    s = spec(source_dir=CODE, **overrides)
    est = sdk_v2.build_estimator(s, session)
    assert isinstance(est, sdk_v2.Estimator)
    assert est.metric_definitions == s.metric_definitions
    assert est.use_spot_instances is s.spot
    assert est.keep_alive_period_in_seconds == s.keep_alive
    assert est.distribution == (s.distribution or {})
    assert est.checkpoint_s3_uri == s.checkpoint_s3_uri
    assert est.training_image_uri().endswith("/pytorch-training:2.8.0-gpu-py312")


def test_sdk_v2_tuner(session):
    s = spec(source_dir=CODE, checkpoint_s3_uri="s3://b/p/checkpoints/j", channels={"train": "s3://b/t/"})
    tuner = sdk_v2.tuner(s, session, TuningSpec(max_jobs=5, max_parallel_jobs=2))
    assert tuner.estimator.checkpoint_s3_uri is None and tuner.estimator.use_spot_instances is True
    assert (tuner.objective_metric_name, tuner.objective_type) == ("val_auc", "Maximize")
    assert (tuner.max_jobs, tuner.max_parallel_jobs, tuner.strategy, tuner.early_stopping_type) == (
        5, 2, "Bayesian", "Auto")
    ranges = tuner.hyperparameter_ranges()
    assert sorted(r["Name"] for r in ranges["ContinuousParameterRanges"]) == ["lr", "weight-decay"]
    assert all(r["ScalingType"] == "Logarithmic" for r in ranges["ContinuousParameterRanges"])
    assert float(next(r for r in ranges["ContinuousParameterRanges"] if r["Name"] == "lr")["MinValue"]) == 1e-4
    assert [r["Name"] for r in ranges["CategoricalParameterRanges"]] == ["batch-size"]
    assert tuner.metric_definitions == s.metric_definitions and "test_auc" not in names(tuner.metric_definitions)


# ---------------------------------------------------------------- SDK v3: ModelTrainer's request, built in .venv-sdk3
JOBS = {
    "spot": dict(BASE, code_location="s3://probe-bucket/p/code", output_path="s3://probe-bucket/p/jobs",
                 source_dir=CODE, hyperparameters={"epochs": 3, "lr": 0.01, "amp": True, "model": "smallcnn"},
                 channels={"train": "s3://probe-bucket/d/train/", "test": "s3://probe-bucket/d/test/"},
                 max_run=3600, checkpoint_s3_uri="s3://probe-bucket/p/checkpoints/j", tags={"project": "x"}),
    "warm": dict(BASE, code_location="s3://probe-bucket/p/code", source_dir=CODE, mode="warm",
                 keep_alive_seconds=1200, channels={"train": "s3://probe-bucket/d/train/"}),
    "secure": dict(BASE, code_location="s3://probe-bucket/code", source_dir=CODE, mode="on-demand",
                   instance_type="ml.g5.12xlarge", instance_count=2, volume_size=100, volume_kms_key=KEY + "vol",
                   output_kms_key=KEY + "out", subnets=["subnet-1"], security_group_ids=["sg-1"],
                   enable_network_isolation=True, encrypt_inter_container_traffic=True,
                   channels={"train": "s3://probe-bucket/d/train/"}),
    "other_bucket": dict(BASE, code_location="s3://elsewhere/code", source_dir=CODE, channels={"train": "s3://b/t/"}),
    "quote": dict(BASE, code_location="s3://probe-bucket/code", source_dir=CODE, channels={"train": "s3://b/t/"},
                  hyperparameters={"model": "it's"}),
    "isolated_pretrained": dict(BASE, code_location="s3://probe-bucket/code", source_dir=CODE, mode="on-demand",
                                enable_network_isolation=True, hyperparameters={"model": "resnet18", "pretrained": True},
                                channels={"train": "s3://b/t/", "weights": "s3://b/w/0123/resnet18-f37072fd.pth"},
                                model_uri="s3://b/jobs/earlier/output/model.tar.gz"),
}
TUNERS = {
    "default": [JOBS["spot"], {"max_jobs": 5, "base_tuning_job_name": "medimg-hpo"}],
    "isolated": [dict(JOBS["spot"], enable_network_isolation=True), {}],
}


@pytest.fixture(scope="module")
def v3():
    """tests/support/sdk3_probe.py's answers for JOBS and TUNERS, from .venv-sdk3's SDK v3."""
    assert os.path.exists(SDK3_PYTHON), f"{SDK3_PYTHON} is missing: make install builds .venv-sdk3"
    env = dict(os.environ, SAGEMAKER_VALIDATE_ROLE="false")  # the probe's session refuses IAM as everything else
    out = subprocess.run([SDK3_PYTHON, os.path.join(ROOT, "tests", "support", "sdk3_probe.py"), "build"], cwd=ROOT,
                         env=env, input=json.dumps({"jobs": JOBS, "tuners": TUNERS}), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout)


def channel_uris(request):
    return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}


def test_v3_detect_and_description(v3):
    assert v3["detect"] == "v3"
    assert re.match(r"SageMaker Python SDK 3\.\d+\.\d+: the v3 path \(sagemaker\.train\.ModelTrainer", v3["describe"])


def test_v3_spot_request(v3):
    got = v3["jobs"]["spot"]
    request, s = got["request"], JobSpec(**JOBS["spot"])
    job = request["TrainingJobName"]
    assert re.fullmatch(r"medimg-\d{14}", job)  # the SDK's own <base>-YYYYMMDDHHMMSS
    algorithm = request["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"
    assert algorithm["MetricDefinitions"] == s.metric_definitions and "test_auc" in names(s.metric_definitions)
    assert algorithm["ContainerEntrypoint"] == ["/bin/bash"]
    assert "/opt/ml/input/data/sm_drivers/sm_train.sh" in algorithm["ContainerArguments"][-1]
    assert request["HyperParameters"] == {"epochs": "3", "lr": "0.01", "amp": "true", "model": "smallcnn"}
    assert request["RoleArn"] == ROLE
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["CheckpointConfig"] == {"S3Uri": "s3://probe-bucket/p/checkpoints/j",
                                           "LocalPath": "/opt/ml/checkpoints"}
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://probe-bucket/p/jobs", "CompressionType": "GZIP"}
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert request["Tags"] == [{"Key": "project", "Value": "x"}]
    for unset in ("VpcConfig", "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption"):
        assert unset not in request, unset
    # the data channels as given, then the code and the drivers under code_location's key, per job
    assert channel_uris(request) == {"train": "s3://probe-bucket/d/train/", "test": "s3://probe-bucket/d/test/",
                                     "code": f"s3://probe-bucket/p/code/{job}/input/code",
                                     "sm_drivers": f"s3://probe-bucket/p/code/{job}/input/sm_drivers"}


def test_v3_uploads_the_code_and_its_basic_driver(v3):
    got = v3["jobs"]["spot"]
    assert [u["key_prefix"].rsplit("/", 1)[-1] for u in got["uploads"]] == ["code", "sm_drivers"]
    assert "train.py" in got["code_files"] and "inference.py" in got["code_files"]
    assert "__pycache__" not in got["code_files"]
    drivers = got["drivers"]
    assert "basic_script_driver.py" in drivers["sm_train.sh"] and "torchrun_driver.py" not in drivers["sm_train.sh"]
    assert json.loads(drivers["distributed.json"]) == {}
    assert json.loads(drivers["sourcecode.json"])["entry_script"] == "train.py"
    assert json.loads(drivers["sourcecode.json"])["requirements"] is None  # code/ needs nothing installed
    assert "scripts/environment.py" in drivers["files"]


def test_v3_warm_pool_request(v3):
    request = v3["jobs"]["warm"]["request"]
    assert request["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 1200
    assert not request.get("EnableManagedSpotTraining") and "CheckpointConfig" not in request
    assert "MaxWaitTimeInSeconds" not in request["StoppingCondition"]
    assert "test_auc" not in names(request["AlgorithmSpecification"]["MetricDefinitions"])  # no test channel


def test_v3_security_and_torchrun_request(v3):
    got = v3["jobs"]["secure"]
    request = got["request"]
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.12xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100,
                                         "VolumeKmsKeyId": KEY + "vol"}
    assert request["OutputDataConfig"]["KmsKeyId"] == KEY + "out"
    assert request["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    assert request["EnableNetworkIsolation"] is True and request["EnableInterContainerTrafficEncryption"] is True
    assert all(u["extra_args"] == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KEY + "out"}
               for u in got["uploads"])  # the code is encrypted with the output key, as v2 does
    assert channel_uris(request)["code"].startswith("s3://probe-bucket/code/medimg-")
    drivers = got["drivers"]
    assert "torchrun_driver.py" in drivers["sm_train.sh"]
    assert json.loads(drivers["distributed.json"])["process_count_per_node"] == 4  # the 4 GPUs of a g5.12xlarge


def test_v3_refusals(v3):
    assert v3["jobs"]["other_bucket"] == {"error": "ValueError: code_location 's3://elsewhere/code': SDK v3 uploads "
                                          "the code to the session's default bucket (probe-bucket); put code_location "
                                          "in it"}
    assert v3["jobs"]["quote"]["error"].startswith("ValueError: hyperparameter 'model': SDK v3's drivers cannot pass")
    assert v3["tuners"]["isolated"]["error"].startswith(
        "ValueError: SDK v3's HyperparameterTuner leaves enable_network_isolation out of the trials' definition")


def test_v3_tuner(v3):
    t = v3["tuners"]["default"]
    assert t["objective"] == ["val_auc", "Maximize"]
    assert (t["strategy"], t["max_jobs"], t["max_parallel_jobs"], t["early_stopping"], t["base"]) == (
        "Bayesian", 5, 2, "Auto", "medimg-hpo")
    assert t["metric_definitions"] == JobSpec(**JOBS["spot"]).metric_definitions
    assert t["ranges"] == {
        "lr": {"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.01", "ScalingType": "Logarithmic"},
        "weight-decay": {"Name": "weight-decay", "MinValue": "1e-05", "MaxValue": "0.1", "ScalingType": "Logarithmic"},
        "batch-size": {"Name": "batch-size", "Values": ["64", "128", "256"]}}
    assert t["checkpoint_config"] is False  # the trials do not share the job's checkpoint location
    assert t["tags"] == [{"Key": "project", "Value": "x"}]


def test_v3_sends_the_weights_and_model_channels_of_an_isolated_pretrained_job(v3):
    """The weights channel as given; model_uri as the model channel SDK v2's model_uri makes, with its content
    type (test_start_channels.py checks SDK v2's)."""
    request = v3["jobs"]["isolated_pretrained"]["request"]
    assert request["EnableNetworkIsolation"] is True
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert channel_uris(request)["weights"] == "s3://b/w/0123/resnet18-f37072fd.pth"
    assert channels["model"]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://b/jobs/earlier/output/model.tar.gz"
    assert channels["model"]["ContentType"] == "application/x-sagemaker-model"
    assert "ContentType" not in channels["weights"]
