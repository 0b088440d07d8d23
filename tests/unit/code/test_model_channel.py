"""code/model_channel.py: an earlier model as a tarball or extracted files; every unsafe archive refused whole, with
nothing written; continue, new head or one refusal line from the earlier model_config.json."""
import io
import json
import os
import tarfile

import pytest
import torch

import model_channel
import model_config
import model_def
from errors import ConfigError

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6

CLASSES = ["normal", "pneumonia"]


def earlier_files(architecture="smallcnn", classes=CLASSES, in_channels=1, image_size=28, task="multiclass"):
    """model.pth and model_config.json as train.py writes them, of a randomly initialised model."""
    options = model_def.architecture_options(architecture, image_size)
    torch.manual_seed(0)
    model = model_def.create_model(architecture, len(classes), in_channels, **options)
    config = model_config.build(architecture=architecture, classes=classes, in_channels=in_channels,
                                architecture_options=options, image_size=image_size, mean=[0.5] * in_channels,
                                std=[0.25] * in_channels, tta=False, hyperparameters={}, torch_version="2.6.0",
                                task=task)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return {"model.pth": buffer.getvalue(), "model_config.json": json.dumps(config).encode(),
            "code/inference.py": b"# the endpoint\n"}, model.state_dict()


def add(tar, name, data=b"", **info):
    member = tarfile.TarInfo(name)
    member.size = len(data)
    for key, value in info.items():
        setattr(member, key, value)
    tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


def model_tar(folder, files, extra=()):
    """``folder``/model.tar.gz with ``files`` (as the toolkit tars the model dir), then ``extra`` members."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            add(tar, name, data)
        for name, info in extra:
            add(tar, name, **info)
    return str(folder)


def test_a_model_tarball_is_read_without_extracting_anything(tmp_path):
    files, state = earlier_files()
    folder = model_tar(tmp_path / "channel", files)
    before = sorted(os.listdir(folder))
    earlier = model_channel.read(folder)
    assert earlier.config["architecture"] == "smallcnn" and earlier.config["classes"] == CLASSES
    assert earlier.file == "model.tar.gz" and all(torch.equal(earlier.state[k], v) for k, v in state.items())
    assert sorted(os.listdir(folder)) == before  # read in memory


def test_extracted_files_are_read_too(tmp_path):
    files, state = earlier_files()
    for name, data in files.items():
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(data)
    earlier = model_channel.read(str(tmp_path))
    assert torch.equal(earlier.state["fc.weight"], state["fc.weight"])


@pytest.mark.parametrize("name, info, why", [
    ("/etc/cron.d/evil", dict(type=tarfile.REGTYPE), "has an absolute name"),
    ("../evil.txt", dict(type=tarfile.REGTYPE), "would land outside its folder"),
    ("code/../../evil.txt", dict(type=tarfile.REGTYPE), "would land outside its folder"),
    ("code/link", dict(type=tarfile.SYMTYPE, linkname="/etc/passwd"), "is a symbolic link (to '/etc/passwd')"),
    ("code/hard", dict(type=tarfile.LNKTYPE, linkname="model.pth"), "is a hard link (to 'model.pth')"),
    ("dev/null", dict(type=tarfile.CHRTYPE, devmajor=1, devminor=3), "is not a plain file or folder (a device, fifo or other)"),
    ("fifo", dict(type=tarfile.FIFOTYPE), "is not a plain file or folder (a device, fifo or other)"),
])
def test_an_unsafe_member_refuses_the_whole_archive_and_nothing_is_written(tmp_path, name, info, why):
    files, _ = earlier_files()
    folder = model_tar(tmp_path / "a" / "channel", files, extra=[(name, info)])
    before = sorted(p for p, _, _ in os.walk(tmp_path))
    with pytest.raises(ConfigError) as err:
        model_channel.read(folder)
    assert str(err.value) == (f"the model channel's model.tar.gz is refused: its member {name!r} {why}; give the "
                              "model.tar.gz an earlier training job wrote (nothing of it was extracted)")
    assert sorted(p for p, _, _ in os.walk(tmp_path)) == before and not (tmp_path / "a" / "evil.txt").exists()


@pytest.mark.parametrize("change, match", [
    (lambda f: f.pop("model_config.json"), "it has no model_config.json, so it is not a model train.py wrote"),
    (lambda f: f.pop("model.pth"), "it has no model.pth, the weights its model_config.json names"),
    (lambda f: f.update({"model_config.json": b"{not json"}), r"cannot read model\.tar\.gz"),
    (lambda f: f.update({"model_config.json": json.dumps({**json.loads(f["model_config.json"]),
                                                          "weights": "../x.pth"}).encode()}),
     r"names the weights file '\.\./x\.pth', not a file beside it"),
])
def test_an_archive_that_is_not_a_model_is_refused(tmp_path, change, match):
    files, _ = earlier_files()
    change(files)
    with pytest.raises(ConfigError, match=match):
        model_channel.read(model_tar(tmp_path, files))


def test_a_pickled_model_is_refused_and_never_run(tmp_path):
    files, _ = earlier_files()
    buffer = io.BytesIO()
    torch.save(model_def.create_model("smallcnn", 2, 1), buffer)  # the module itself, not its state dict
    files["model.pth"] = buffer.getvalue()
    with pytest.raises(ConfigError, match=r"^the model channel's model\.pth is refused: torch\.load\(weights_only=True\)"
                                          r" reads tensors only and it holds something else \(.*SmallCNN"):
        model_channel.read(model_tar(tmp_path, files))


def test_what_the_channel_must_hold(tmp_path):
    with pytest.raises(ConfigError, match="holds no model.tar.gz or model_config.json"):
        model_channel.read(str(tmp_path))
    (tmp_path / "a.tar.gz").write_bytes(b"x")
    (tmp_path / "b.tar.gz").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"holds 2 tarballs \(a\.tar\.gz, b\.tar\.gz\)"):
        model_channel.read(str(tmp_path))
    os.unlink(tmp_path / "b.tar.gz")
    with pytest.raises(ConfigError, match=r"a\.tar\.gz is refused: it is not a readable tar archive"):
        model_channel.read(str(tmp_path))


# ---------------------------------------------------------------- continue, new head, refuse
def config(**kw):
    return json.loads(earlier_files(**kw)[0]["model_config.json"])


RUN = dict(architecture="smallcnn", options={"stem_stride": 1}, in_channels=1, classes=CLASSES, task="multiclass")


@pytest.mark.parametrize("run, mode", [
    ({}, model_channel.CONTINUE),
    (dict(classes=["normal", "pneumonia", "covid"]), model_channel.NEW_HEAD),
    (dict(classes=["pneumonia", "normal"]), model_channel.NEW_HEAD),  # another order: the outputs mean other things
    (dict(classes=["benign", "malignant"]), model_channel.NEW_HEAD),
    (dict(task="multilabel"), model_channel.NEW_HEAD),
])
def test_same_classes_continue_other_classes_get_a_new_head(run, mode):
    assert model_channel.compare(config(), **dict(RUN, **run)) == mode


@pytest.mark.parametrize("run, message", [
    (dict(architecture="resnet18_small", options={}),
     "the model channel holds a smallcnn model and this job trains model=resnet18_small; set model=smallcnn to "
     "start from it, or leave the model channel out"),
    (dict(options={"stem_stride": 2}),
     "the model channel's smallcnn model was built for 28 px ({'stem_stride': 1}), this run's image size needs "
     "{'stem_stride': 2}; set image-size=28"),
    (dict(in_channels=3),
     "the model channel's model takes 1 colour channel(s) and this run's images 3; set in-channels=1"),
])
def test_another_architecture_first_stage_or_channel_count_is_one_line(run, message):
    with pytest.raises(ConfigError) as err:
        model_channel.compare(config(), **dict(RUN, **run))
    assert str(err.value) == message


def test_continue_loads_every_weight_and_a_new_head_keeps_only_the_backbone(tmp_path):
    files, state = earlier_files(architecture="resnet18_small")
    earlier = model_channel.read(model_tar(tmp_path, files))
    torch.manual_seed(1)
    same = model_def.create_model("resnet18_small", 2, 1)
    assert model_channel.apply(same, earlier, model_channel.CONTINUE, "resnet18_small") == []
    assert all(torch.equal(v, state[k]) for k, v in same.state_dict().items())
    more = model_def.create_model("resnet18_small", 3, 1)
    fresh_head = more.fc.weight.detach().clone()
    assert model_channel.apply(more, earlier, model_channel.NEW_HEAD, "resnet18_small") == ["fc"]
    assert torch.equal(more.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(more.fc.weight, fresh_head) and more.fc.weight.shape == (3, 512)
    info = model_channel.describe(earlier, model_channel.NEW_HEAD, ["a", "b", "c"], 64)
    assert info["head"] == "new: 3 outputs for ['a', 'b', 'c'] (the earlier model's classes were ['normal', " \
                           "'pneumonia'])"
    assert info["note"] == "the earlier model was trained at 28 px, this run trains at 64"


def test_weights_that_do_not_fit_the_architecture_are_one_line(tmp_path):
    files, _ = earlier_files()
    buffer = io.BytesIO()
    torch.save(model_def.create_model("smallcnn", 2, 1, stem_stride=4).state_dict(), buffer)  # another stem
    files["model.pth"] = buffer.getvalue()
    earlier = model_channel.read(model_tar(tmp_path, files))
    with pytest.raises(ConfigError, match=r"^the model channel's weights do not fit this smallcnn model"):
        model_channel.apply(model_def.create_model("smallcnn", 2, 1), earlier, model_channel.CONTINUE, "smallcnn")
