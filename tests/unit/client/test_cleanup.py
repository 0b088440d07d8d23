"""medimg/cleanup.py: idempotent clean-up of what the notebook deployed (also after a half-done deploy), other
errors raised, stopping a warm pool, the resource log of what the notebook created."""
import json

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from medimg import cleanup


@pytest.fixture
def sm():
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("sagemaker", region_name="us-east-1")


def deploy(sm, name):
    sm.create_model(ModelName=name, ExecutionRoleArn="arn:aws:iam::123456789012:role/R",
                    PrimaryContainer={"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312",
                                      "ModelDataUrl": "s3://b/m/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName=name + "-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name + "-config")


def test_cleanup_deletes_everything_and_is_idempotent(sm):
    deploy(sm, "ep")
    out = []
    assert cleanup.delete_endpoint_resources(sm, endpoint_name="ep", out=out.append) == {
        "endpoint": True, "endpoint_config": True, "model": True}  # config and model found from the endpoint
    assert out == ["endpoint ep: deleted", "endpoint config ep-config: deleted", "model ep: deleted"]
    assert not sm.list_endpoints()["Endpoints"] and not sm.list_endpoint_configs()["EndpointConfigs"]
    assert not sm.list_models()["Models"]
    out.clear()
    again = cleanup.delete_endpoint_resources(sm, endpoint_name="ep", endpoint_config_name="ep-config", model_name="ep",
                                           out=out.append)
    assert again == {"endpoint": False, "endpoint_config": False, "model": False}
    assert out == ["endpoint ep: already gone", "endpoint config ep-config: already gone", "model ep: already gone"]


def test_cleanup_after_a_half_done_deploy(sm):
    deploy(sm, "half")
    sm.delete_endpoint(EndpointName="half")  # the endpoint never came up; its config and model remain
    out = []
    done = cleanup.delete_endpoint_resources(sm, endpoint_name="half", endpoint_config_name="half-config",
                                          model_name="half", out=out.append)
    assert done == {"endpoint": False, "endpoint_config": True, "model": True}
    assert cleanup.delete_endpoint_resources(sm, out=out.append) == {"endpoint": False, "endpoint_config": False,
                                                                  "model": False}


def test_cleanup_raises_other_errors():
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("describe_endpoint", "AccessDeniedException", "not allowed")
        with pytest.raises(ClientError, match="not allowed"):
            cleanup.delete_endpoint_resources(client, endpoint_name="ep", out=lambda line: None)


# ---------------------------------------------------------------- warm pools
def describe(warm_status=None):
    desc = {"TrainingJobName": "j", "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/j",
            "TrainingJobStatus": "Completed", "SecondaryStatus": "Completed", "CreationTime": 0,
            "AlgorithmSpecification": {"TrainingInputMode": "File"},
            "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m"},
            "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {}}
    if warm_status:
        desc["WarmPoolStatus"] = {"Status": warm_status}
    return desc


def test_stop_warm_pool():
    client = boto3.client("sagemaker", region_name="us-east-1")
    out = []
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", describe("Available"), {"TrainingJobName": "j"})
        stub.add_response("update_training_job", {"TrainingJobArn": describe()["TrainingJobArn"]},
                          {"TrainingJobName": "j", "ResourceConfig": {"KeepAlivePeriodInSeconds": 0}})
        assert cleanup.stop_warm_pool(client, "j", out=out.append) is True
        stub.add_response("describe_training_job", describe("Terminated"), {"TrainingJobName": "j"})
        assert cleanup.stop_warm_pool(client, "j", out=out.append) is False
        stub.add_response("describe_training_job", describe(), {"TrainingJobName": "j"})
        assert cleanup.stop_warm_pool(client, "j", out=out.append) is False
        stub.add_client_error("describe_training_job", "ValidationException", "Could not find training job 'j'")
        assert cleanup.stop_warm_pool(client, "j", out=out.append) is False
        stub.assert_no_pending_responses()
    assert "asked to stop" in out[0] and "Terminated" in out[1] and "none" in out[2] and "not found" in out[3]


# ---------------------------------------------------------------- resource log
def test_resource_log(tmp_path):
    log = cleanup.ResourceLog(str(tmp_path / "sub" / "resources.json"))
    assert log.read() == {"training_jobs": [], "tuning_jobs": [], "endpoints": []}
    entry = {"endpoint": "e", "endpoint_config": "e", "model": "e"}
    log.add("endpoints", entry)
    log.add("endpoints", entry)
    log.add("training_jobs", "job-1")
    assert log.read()["endpoints"] == [entry] and log.read()["training_jobs"] == ["job-1"]
    log.remove("endpoints", entry)
    assert json.loads((tmp_path / "sub" / "resources.json").read_text())["endpoints"] == []
    (tmp_path / "sub" / "resources.json").write_text("{broken")
    assert log.read()["endpoints"] == []
