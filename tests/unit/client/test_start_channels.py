"""The client side of where a job's model starts: JobSpec's rule for network isolation with pretrained weights,
the model channel (model_uri) in SDK v2's request, and medimg.weights: torchvision's file through torch.hub's cache
(no download here: torch.hub's downloader is replaced, or the cache is seeded), the job's own checks before the
upload, the upload once per content, an earlier job's model.tar.gz."""
import os

import pytest
import torch

from medimg import container, sdk_v2, weights
from medimg.job import JobSpec
from conftest import CODE

ROLE = "arn:aws:iam::123456789012:role/R"
BASE = dict(role=ROLE, hyperparameters={"model": "resnet18", "pretrained": True}, output_path="s3://b/p/jobs",
            code_location="s3://b/p/code", base_job_name="medimg", channels={"train": "s3://b/d/train/"})
WEIGHTS_URI = "s3://b/p/weights/0123456789abcdef/resnet18-f37072fd.pth"


def spec(**overrides):
    return JobSpec(**dict(BASE, **overrides))


# ---------------------------------------------------------------- JobSpec
def test_network_isolation_with_pretrained_needs_a_weights_channel_or_an_earlier_model():
    with pytest.raises(ValueError) as err:
        spec(enable_network_isolation=True)
    assert str(err.value).startswith("pretrained=True without a weights channel downloads the ImageNet weights when "
                                     "the job starts, which a network-isolated job cannot do; add the weights channel")
    with pytest.raises(ValueError, match="network-isolated job cannot"):
        spec(enable_network_isolation=True, channels=None)  # channels given later: nothing says they hold weights
    isolated = spec(enable_network_isolation=True, channels={"train": "s3://b/d/train/", "weights": WEIGHTS_URI})
    assert isolated.has_weights_channel and isolated.security["enable_network_isolation"] is True
    assert spec(enable_network_isolation=True, model_uri="s3://b/p/jobs/j/output/model.tar.gz").model_uri
    assert not spec().has_weights_channel


def test_the_model_channel_is_model_uri():
    with pytest.raises(ValueError, match=r"channel 'model': give the earlier model as JobSpec\(model_uri="):
        spec(channels={"train": "s3://b/d/train/", "model": "s3://b/m/model.tar.gz"})
    with pytest.raises(ValueError, match="model_uri: expected the s3:// URI of an earlier job's model.tar.gz"):
        spec(model_uri="/local/model.tar.gz")


def test_sdk_v2_makes_the_model_channel_from_model_uri_with_its_content_type():
    import boto3
    from sagemaker.job import _Job

    session = sdk_v2.make_session(boto3.Session(region_name="us-east-1"), default_bucket="b")
    s = spec(source_dir=CODE, enable_network_isolation=True, model_uri="s3://b/p/jobs/j/output/model.tar.gz",
             channels={"train": "s3://b/d/train/", "weights": WEIGHTS_URI})
    kwargs = sdk_v2.estimator_kwargs(s)
    assert kwargs["model_uri"] == s.model_uri and kwargs["enable_network_isolation"] is True
    assert "model_uri" not in sdk_v2.estimator_kwargs(spec())
    estimator = sdk_v2.build_estimator(s, session)
    config = _Job._load_config(dict(s.channels), estimator, expand_role=False)["input_config"]
    channels = {c["ChannelName"]: c for c in config}
    assert sorted(channels) == ["model", "train", "weights"]
    assert channels["model"]["DataSource"]["S3DataSource"]["S3Uri"] == s.model_uri
    assert channels["model"]["ContentType"] == "application/x-sagemaker-model"
    assert channels["weights"]["DataSource"]["S3DataSource"]["S3Uri"] == WEIGHTS_URI


# ---------------------------------------------------------------- medimg.weights
def test_torchvisions_file_comes_from_torch_hubs_cache_when_it_is_there(tmp_path, monkeypatch):
    import torch.hub

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although the cache holds the file")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    cached = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir()
    cached.write_bytes(b"cached")
    assert weights.fetch("resnet18", hub_dir=str(tmp_path)) == str(cached)


def test_a_missing_file_is_downloaded_into_the_cache_with_the_hash_of_its_name(tmp_path, monkeypatch):
    import torch.hub

    calls = []

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        with open(dst, "wb") as fh:
            fh.write(b"downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    path = weights.fetch("convnext_tiny", hub_dir=str(tmp_path))
    assert calls == [("https://download.pytorch.org/models/convnext_tiny-983f1562.pth", path, "983f1562")]
    assert path == str(tmp_path / "checkpoints" / "convnext_tiny-983f1562.pth")


def test_a_cached_file_that_is_not_torchvisions_is_refused_before_the_upload(tmp_path):
    """torch.hub checks a download's hash but not a cached file's: the notebook runs the job's own check."""
    cached = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir()
    torch.save({"conv1.weight": torch.zeros(1)}, cached)
    errors = container.load("weights_channel").ConfigError
    with pytest.raises(errors) as err:
        weights.local_weights("resnet18", hub_dir=str(tmp_path))
    assert str(err.value).startswith("the weights channel's resnet18-f37072fd.pth is not the file torchvision "
                                     "publishes under that name")


def test_a_weights_file_of_ones_own_is_checked_as_the_job_checks_it(tmp_path):
    model_def = container.load("model_def")
    own = tmp_path / "my-backbone.pth"
    torch.save({f"module.{k}": v for k, v in model_def.imagenet_model("resnet18").state_dict().items()}, own)
    assert weights.local_weights("resnet18", str(own)) == str(own)
    with pytest.raises(container.load("weights_channel").ConfigError, match="does not fit efficientnet_b0"):
        weights.local_weights("efficientnet_b0", str(own))
    with pytest.raises(FileNotFoundError, match="weights_file .*missing.pth: no such file"):
        weights.local_weights("resnet18", str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="model=smallcnn has no ImageNet weights"):
        weights.torchvision_weights("smallcnn")


def test_the_weights_are_uploaded_once_per_content(s3, tmp_path):
    path = tmp_path / "resnet18-f37072fd.pth"
    path.write_bytes(b"weights" * 1000)
    said = []
    uri = weights.upload_once(s3, str(path), "s3://bkt/proj/weights", log=said.append)
    digest = weights.file_sha256(str(path))
    assert uri == f"s3://bkt/proj/weights/{digest[:16]}/resnet18-f37072fd.pth"
    head = s3.head_object(Bucket="bkt", Key=uri[len("s3://bkt/"):])
    assert head["ContentLength"] == 7000 and head["Metadata"]["sha256"] == digest
    assert weights.upload_once(s3, str(path), "s3://bkt/proj/weights/", log=said.append) == uri
    assert said[0].startswith("uploaded resnet18-f37072fd.pth") and said[1] == f"weights already in S3: {uri}"
    path.write_bytes(b"other weights")  # other content under the same name: another key, never overwritten
    assert weights.upload_once(s3, str(path), "s3://bkt/proj/weights", log=said.append) != uri


@pytest.mark.parametrize("stage, hps, initial, expected", [
    ("auto", {"pretrained": True}, None, True), ("auto", {"pretrained": "true"}, None, True),
    ("auto", {"pretrained": False}, None, False), ("auto", {}, None, False),
    ("auto", {"pretrained": True}, "earlier-job", False),  # the earlier model holds the backbone
    (False, {"pretrained": True}, None, False),
])
def test_when_the_notebook_stages_the_weights(stage, hps, initial, expected):
    assert weights.should_stage(stage, hps, initial) is expected


def test_stage_weights_takes_auto_or_false():
    with pytest.raises(ValueError, match=r"stage_weights must be one of \('auto', False\), got True"):
        weights.should_stage(True, {"pretrained": True})


class FakeSageMaker:
    def __init__(self, status):
        self.status = status

    def describe_training_job(self, TrainingJobName):
        return {"TrainingJobStatus": self.status,
                "ModelArtifacts": {"S3ModelArtifacts": f"s3://b/p/jobs/{TrainingJobName}/output/model.tar.gz"}}


def test_an_earlier_model_by_job_name_or_uri():
    assert weights.initial_model_uri(FakeSageMaker("Completed"), "medimg-1") == \
        "s3://b/p/jobs/medimg-1/output/model.tar.gz"
    assert weights.initial_model_uri(None, "s3://x/model.tar.gz") == "s3://x/model.tar.gz"
    with pytest.raises(ValueError, match="the training job medimg-2 is Failed, not Completed"):
        weights.initial_model_uri(FakeSageMaker("Failed"), "medimg-2")


def test_the_smoke_tests_data_gets_the_start_channels_as_folders(tmp_path):
    w = tmp_path / "resnet18-f37072fd.pth"
    w.write_bytes(b"w")
    m = tmp_path / "initial-model.tar.gz"
    m.write_bytes(b"m")
    data = tmp_path / "data"
    weights.add_to_local_data(str(data), weights_path=str(w), model_tar=str(m))
    assert (data / "weights" / "resnet18-f37072fd.pth").read_bytes() == b"w"
    assert (data / "model" / "initial-model.tar.gz").read_bytes() == b"m"
    bare = tmp_path / "bare"
    bare.mkdir()
    weights.add_to_local_data(str(bare))  # nothing to add: no empty channel folders (each would be a channel)
    assert os.listdir(bare) == []
