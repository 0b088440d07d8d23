"""Where a job's model starts, through the real SageMaker training toolkit (scripts/local_train.py: every top-level
folder of the data folder is a channel, so ``weights/`` and ``model/`` are the job's weights and model channels),
under the loopback guard: with a weights channel nothing reaches for the network and the model starts from the
file; without it the job fails fast with one line naming the channel; an earlier model continues, gets a new head, or
is refused with one line, and an unsafe archive has nothing of it written.

The weights are made here with torchvision's architecture (random values): real ImageNet weights cannot be
downloaded, and the point is that the job's weights are the file's.
"""
import io
import json
import os
import socket
import tarfile

import pytest
import torch

import model_config
import model_def
from conftest import make_dataset, read_failure, run_local_train

pytestmark = pytest.mark.slow  # the toolkit's processes

ONE_TINY_STEP = ["epochs=1", "max-steps-per-epoch=1", "lr=1e-12", "ema=0", "batch-size=16", "patience=0",
                 "bootstrap=0"]


def guard_active():
    """Whether the loopback guard (sitecustomize on PYTHONPATH, as CI runs the tests) is in this process."""
    return getattr(socket.getaddrinfo, "__name__", "") == "_guarded_getaddrinfo"


def isolated_env(tmp_path):
    """The job's environment: an empty torch.hub cache, the guard's log of this test's own; without the guard (a run
    outside CI) a proxy on a closed loopback port stands in for a network that answers nothing."""
    env = dict(os.environ, TORCH_HOME=str(tmp_path / "torch-home"), LOOPBACK_GUARD_LOG=str(tmp_path / "guard.log"))
    if not guard_active():
        env.update(https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    return env


def guard_log(tmp_path):
    path = tmp_path / "guard.log"
    return path.read_text() if path.exists() else ""


def data_with(tmp_path, size=16):
    return make_dataset(tmp_path / "d", counts={"train": 16, "val": 8}, size=size)


def saved(work, name="model.pth"):
    return torch.load(os.path.join(work, "model", name), map_location="cpu", weights_only=True)


def config_of(work):
    with open(os.path.join(work, "model", "model_config.json")) as fh:
        return json.load(fh)


def metrics_of(work):
    with open(os.path.join(work, "output", "data", "metrics.json")) as fh:
        return json.load(fh)


# ---------------------------------------------------------------- the weights channel
def test_pretrained_takes_the_weights_channels_file_and_never_the_network(tmp_path):
    data = data_with(tmp_path)
    torch.manual_seed(3)
    imagenet = model_def.imagenet_model("resnet18").state_dict()  # a stand-in for ImageNet's, random
    os.makedirs(os.path.join(data, "weights"))
    torch.save(imagenet, os.path.join(data, "weights", "resnet18-pretrained-elsewhere.pth"))
    work = tmp_path / "work"
    result = run_local_train(data, work, ["model=resnet18", "pretrained=true", *ONE_TINY_STEP],
                             env=isolated_env(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    model = saved(work)
    torch.testing.assert_close(model["layer4.1.conv2.weight"], imagenet["layer4.1.conv2.weight"], rtol=0, atol=1e-8)
    torch.testing.assert_close(model["conv1.weight"], imagenet["conv1.weight"].sum(dim=1, keepdim=True), rtol=0,
                               atol=1e-8)  # the grey data's first convolution: the sum of the RGB kernels
    assert model["fc.weight"].shape == (2, 512)
    start = config_of(work)["initialised_from"]
    assert start["source"] == "weights channel" and start["file"] == "resnet18-pretrained-elsewhere.pth"
    assert start["checked"] == "keys and shapes" and start["new_layers"] == ["fc"]
    assert start["first_conv"].startswith("ImageNet's RGB kernels summed")
    assert metrics_of(work)["initialised_from"] == start
    assert "initialised from the weights channel: file: resnet18-pretrained-elsewhere.pth" in result.stdout
    assert "for loaded ones (fine-tuning)" in result.stdout  # the fine-tuning plan
    assert guard_log(tmp_path) == ""
    assert not os.path.exists(tmp_path / "torch-home" / "hub")  # torchvision's download path was never taken


def test_pretrained_without_the_channel_or_the_network_is_one_line_naming_it(tmp_path):
    data = data_with(tmp_path)
    work = tmp_path / "work"
    result = run_local_train(data, work, ["model=resnet18", "pretrained=true", *ONE_TINY_STEP],
                             env=isolated_env(tmp_path))
    assert result.returncode != 0
    (line,) = read_failure(work).splitlines()
    assert line.startswith("pretrained=true: could not get torchvision's resnet18 weights resnet18-f37072fd.pth from "
                           "the cache or the internet (")
    assert line.endswith("a job without internet access takes them from a 'weights' channel: upload "
                         "resnet18-f37072fd.pth to S3 and add the channel weights=s3://.../resnet18-f37072fd.pth (the "
                         "notebook's stage_weights does this), or set pretrained=false")
    assert "Traceback" not in result.stdout + result.stderr
    if guard_active():  # it tried torchvision's own path, and only that
        assert guard_log(tmp_path) and all("download.pytorch.org" in entry for entry in
                                           guard_log(tmp_path).strip().splitlines())


@pytest.mark.parametrize("make, fragment", [
    ("another architecture", "does not fit resnet18: "),
    ("pickled object", "is refused: torch.load(weights_only=True) reads tensors only"),
    ("wrong hash", "is not the file torchvision publishes under that name"),
])
def test_refused_weights_are_one_line_in_the_failure_file(tmp_path, make, fragment):
    """train.py's own main(), in this process: the line a job's FailureReason shows."""
    import train

    data = data_with(tmp_path)
    weights = tmp_path / "weights"
    weights.mkdir()
    if make == "another architecture":
        torch.save(model_def.imagenet_model("resnet50").state_dict(), weights / "backbone.pth")
    elif make == "pickled object":
        torch.save(model_def.imagenet_model("resnet18"), weights / "backbone.pth")
    else:
        torch.save(model_def.imagenet_model("resnet18").state_dict(), weights / "resnet18-f37072fd.pth")
    out = tmp_path / "out"
    code = train.main(["--train", os.path.join(data, "train"), "--val", os.path.join(data, "val"), "--model",
                       "resnet18", "--pretrained", "true", "--weights", str(weights), "--model-dir",
                       str(tmp_path / "model"), "--output-data-dir", str(out / "data"), "--output-dir", str(out),
                       "--checkpoint-dir", ""])
    assert code == 2
    (line,) = (out / "failure").read_text().splitlines()
    assert fragment in line and line.startswith("the weights ")
    assert not os.path.exists(tmp_path / "model" / "model.pth")


# ---------------------------------------------------------------- the model channel
def earlier_model(folder, classes, architecture="smallcnn", size=16, extra_members=()):
    """``folder``/model.tar.gz as a job leaves it: train.py's ModelWriter's files, tarred as the toolkit does."""
    import train

    torch.manual_seed(5)
    options = model_def.architecture_options(architecture, size)
    model = model_def.create_model(architecture, len(classes), 1, **options)
    config = model_config.build(architecture=architecture, classes=classes, in_channels=1,
                                architecture_options=options, image_size=size, mean=[0.31], std=[0.17], tta=False,
                                hyperparameters={}, torch_version=torch.__version__.split("+")[0])
    model_dir = folder.parent.parent / "earlier"  # beside the data folder, whose every folder is a channel
    model_dir.mkdir()
    train.ModelWriter(str(model_dir), config).save(model.state_dict())
    folder.mkdir(parents=True)
    with tarfile.open(folder / "model.tar.gz", "w:gz") as tar:
        for name in sorted(os.listdir(model_dir)):
            tar.add(model_dir / name, arcname=name)
        for name, data in extra_members:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return model.state_dict()


def test_the_same_classes_continue_from_every_weight(tmp_path):
    data = data_with(tmp_path)
    earlier = earlier_model(tmp_path / "d" / "model", ["normal", "pneumonia"])
    work = tmp_path / "work"
    result = run_local_train(data, work, ["model=smallcnn", *ONE_TINY_STEP])
    assert result.returncode == 0, result.stdout[-3000:]
    model = saved(work)
    for key in ("fc.weight", "fc.bias", "stages.2.conv2.0.weight"):
        torch.testing.assert_close(model[key], earlier[key], rtol=0, atol=1e-8)
    config = config_of(work)
    assert config["initialised_from"]["mode"] == "continue" and config["initialised_from"]["new_layers"] == []
    assert (config["mean"], config["std"]) == ([0.31], [0.17])  # the earlier model's normalisation, as it learnt
    assert "initialised from the model channel: file: model.tar.gz" in result.stdout


def test_other_classes_keep_the_backbone_under_a_new_head(tmp_path):
    data = data_with(tmp_path)
    earlier = earlier_model(tmp_path / "d" / "model", ["normal", "pneumonia", "covid-19"])
    work = tmp_path / "work"
    result = run_local_train(data, work, ["model=smallcnn", *ONE_TINY_STEP])
    assert result.returncode == 0, result.stdout[-3000:]
    model = saved(work)
    torch.testing.assert_close(model["stages.2.conv2.0.weight"], earlier["stages.2.conv2.0.weight"], rtol=0,
                               atol=1e-8)
    assert model["fc.weight"].shape == (2, 96) and earlier["fc.weight"].shape == (3, 96)
    start = config_of(work)["initialised_from"]
    assert start["mode"] == "new head" and start["new_layers"] == ["fc"]
    assert "head: new: 2 outputs for ['normal', 'pneumonia'] (the earlier model's classes were ['normal', " \
           "'pneumonia', 'covid-19'])" in result.stdout


def test_an_earlier_model_of_another_architecture_is_one_line(tmp_path):
    data = data_with(tmp_path)
    earlier_model(tmp_path / "d" / "model", ["normal", "pneumonia"])
    work = tmp_path / "work"
    result = run_local_train(data, work, ["model=resnet18_small", *ONE_TINY_STEP])
    assert result.returncode != 0
    assert read_failure(work).splitlines() == [
        "the model channel holds a smallcnn model and this job trains model=resnet18_small; set model=smallcnn to "
        "start from it, or leave the model channel out"]
    assert not os.path.exists(work / "model" / "model.pth")


def test_an_unsafe_archive_is_one_line_and_nothing_of_it_is_written(tmp_path):
    data = data_with(tmp_path)
    earlier_model(tmp_path / "d" / "model", ["normal", "pneumonia"],
                  extra_members=[("../../escaped.txt", b"written outside the channel")])
    work = tmp_path / "work"
    result = run_local_train(data, work, ["model=smallcnn", *ONE_TINY_STEP])
    assert result.returncode != 0
    assert read_failure(work).splitlines() == [
        "the model channel's model.tar.gz is refused: its member '../../escaped.txt' would land outside its folder; "
        "give the model.tar.gz an earlier training job wrote (nothing of it was extracted)"]
    escaped = [os.path.join(d, f) for d, _, names in os.walk(tmp_path) for f in names if f == "escaped.txt"]
    assert escaped == [] and not os.path.exists("/opt/ml/escaped.txt")
