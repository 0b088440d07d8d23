"""code/weights_channel.py: what the weights channel may hold, what is checked, and every refusal as one line.

No real ImageNet weights here (they cannot be downloaded): state dicts are made with torchvision's own architectures
(shapes from a network built on the meta device, one random value per tensor) and named either as torchvision names its files or
otherwise. A file under torchvision's name whose SHA-256 does not start with the name's hex is refused, for every
file torchvision publishes for the registered architectures.
"""
import os
import pickle

import pytest
import torch

import model_def
import weights_channel
from errors import ConfigError

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6

TORCHVISION_ARCHITECTURES = sorted(n for n in model_def.TORCHVISION if n != "resnet18_small")


def state_of(name, seed=0):
    """A state dict with the shapes of ``name``'s ImageNet network: one random value per tensor, expanded to its
    shape (a file of a few kB: torch.save keeps the one-element storage), no initialisation cost."""
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in model_def.imagenet_model(name).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(1, generator=gen) if d.is_floating_point else torch.zeros(1, dtype=d)).reshape(
        [1] * len(s)).expand(s) for k, (s, d) in shapes.items()}


def keys_of(name):
    """``name``'s keys with one-element tensors: enough where the keys alone decide."""
    with torch.device("meta"):
        return {k: torch.zeros(1) for k in model_def.imagenet_model(name).state_dict()}


def save(folder, file, obj):
    os.makedirs(folder, exist_ok=True)
    torch.save(obj, os.path.join(folder, file))
    return str(folder)


def one_line(message):
    assert "\n" not in message and len(message) < 1000, message
    return message


# ---------------------------------------------------------------- what is accepted
def test_a_state_dict_under_another_name_loads_by_keys_and_shapes(tmp_path):
    state = state_of("resnet18")
    backbone, info = weights_channel.load(save(tmp_path, "resnet18-radimagenet.pth", state), "resnet18")
    assert set(backbone) == {k for k in state if not k.startswith("fc.")}  # the head is replaced
    assert torch.equal(backbone["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert info["source"] == "weights channel" and info["file"] == "resnet18-radimagenet.pth"
    assert info["checked"] == "keys and shapes" and info["prefixes_stripped"] == [] and len(info["sha256"]) == 64


@pytest.mark.parametrize("wrap, prefixes", [
    (lambda s: {f"module.{k}": v for k, v in s.items()}, ["module."]),  # DistributedDataParallel
    (lambda s: {"state_dict": {f"model.{k}": v for k, v in s.items()}}, ["model."]),  # a Lightning checkpoint
    (lambda s: {"model": {f"backbone.{k}": v for k, v in s.items()}}, ["backbone."]),
    (lambda s: {f"module.encoder.{k}": v for k, v in s.items()}, ["module.", "encoder."]),  # nested, in order
])
def test_the_prefix_rule_strips_a_prefix_every_key_shares(tmp_path, wrap, prefixes):
    state = state_of("resnet18")
    backbone, info = weights_channel.load(save(tmp_path, "w.pth", wrap(state)), "resnet18")
    assert info["prefixes_stripped"] == prefixes
    assert torch.equal(backbone["conv1.weight"], state["conv1.weight"])


def test_a_prefix_only_some_keys_have_is_not_stripped_and_the_keys_do_not_fit(tmp_path):
    state = state_of("resnet18")
    state = {(f"module.{k}" if k.startswith("layer1") else k): v for k, v in state.items()}
    with pytest.raises(ConfigError, match=r"does not fit resnet18: \d+ of its tensors are missing .*module\.layer1"):
        weights_channel.load(save(tmp_path, "w.pth", state), "resnet18")


def test_the_head_may_have_any_shape_or_be_absent(tmp_path):
    state = state_of("efficientnet_b0")
    state["classifier.1.weight"], state["classifier.1.bias"] = torch.zeros(2, 1280), torch.zeros(2)
    backbone, _ = weights_channel.load(save(tmp_path / "a", "mine.pth", state), "efficientnet_b0")
    assert not any(k.startswith("classifier.") for k in backbone)
    without = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    assert set(weights_channel.load(save(tmp_path / "b", "mine.pth", without), "efficientnet_b0")[0]) == set(backbone)


def test_batchnorm_counters_may_be_absent_as_in_torchvisions_older_files(tmp_path):
    state = {k: v for k, v in state_of("resnet18").items() if not k.endswith("num_batches_tracked")}
    backbone, _ = weights_channel.load(save(tmp_path, "w.pth", state), "resnet18")
    model = model_def.create_model("resnet18", 2, 3, pretrained=backbone)
    assert torch.equal(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


def test_densenets_old_key_names_are_renamed_as_torchvision_does(tmp_path):
    state = state_of("densenet121")
    old = {k.replace("denselayer1.norm1.", "denselayer1.norm.1.").replace("denselayer1.conv2.", "denselayer1.conv.2."):
           v for k, v in state.items()}
    assert any(".norm.1." in k for k in old)
    backbone, _ = weights_channel.load(save(tmp_path, "densenet.pth", old), "densenet121")
    assert torch.equal(backbone["features.denseblock1.denselayer1.norm1.weight"],
                       state["features.denseblock1.denselayer1.norm1.weight"])


def test_a_file_named_as_torchvision_names_it_is_checked_by_the_hash_in_its_name(tmp_path, monkeypatch):
    """torch.hub's rule: the hex after the last '-' is the start of the file's SHA-256. The real file cannot be made
    here, so the name torchvision would give this very file stands in for it."""
    folder = save(tmp_path, "tmp.pth", state_of("resnet18"))
    digest = weights_channel.sha256(os.path.join(folder, "tmp.pth"))
    name = f"resnet18-{digest[:8]}.pth"
    os.rename(os.path.join(folder, "tmp.pth"), os.path.join(folder, name))
    monkeypatch.setattr(weights_channel, "torchvision_files", lambda: {name: "resnet18"})
    monkeypatch.setattr(model_def, "weights_file_name", lambda arch: name)
    _, info = weights_channel.load(folder, "resnet18")
    assert info["checked"] == "SHA-256 starts with the hex in torchvision's file name, keys and shapes"


def test_torchvisions_file_is_chosen_among_others_and_the_others_are_named(tmp_path, caplog):
    expected = model_def.weights_file_name("resnet18")
    save(tmp_path, "notes.pth", {"x": torch.zeros(1)})
    save(tmp_path, expected, state_of("resnet18"))
    with pytest.raises(ConfigError, match=f"not the file torchvision publishes under that name"):
        weights_channel.load(str(tmp_path), "resnet18")  # chosen: torchvision's name, then its hash checked
    assert weights_channel.find(str(tmp_path), "resnet18").endswith(expected)
    assert "notes.pth" in caplog.text and "not" in caplog.text


def test_the_files_torchvision_publishes_are_known_by_name():
    files = weights_channel.torchvision_files()
    assert files["resnet18-f37072fd.pth"] == "resnet18" and files["resnet50-0676ba61.pth"] == "resnet50"
    assert files["convnext_tiny-983f1562.pth"] == "convnext_tiny"
    assert files["efficientnet_v2_s-dd5fe13b.pth"] == "efficientnet_v2_s"
    for name in model_def.TORCHVISION:
        assert model_def.weights_file_name(name) in files


# ---------------------------------------------------------------- what is refused, one line each
@pytest.mark.parametrize("file", sorted(weights_channel.torchvision_files()))
def test_a_wrong_file_under_torchvisions_name_is_refused(tmp_path, file):
    """Every file torchvision publishes for the registry: the right name with other content (a corrupt download, a
    renamed file) is refused before it is loaded."""
    owner = weights_channel.torchvision_files()[file]
    save(tmp_path, file, {"conv1.weight": torch.zeros(1)})  # checked by its hash before it is read
    with pytest.raises(ConfigError) as err:
        weights_channel.load(str(tmp_path), owner)
    prefix = weights_channel.HASH_REGEX.search(file).group(1)
    assert one_line(str(err.value)).startswith(f"the weights channel's {file} is not the file torchvision publishes")
    assert f"the name says {prefix}" in str(err.value)


@pytest.mark.parametrize("architecture, file", [
    ("resnet18", "resnet50-11ad3fa6.pth"), ("resnet50", "resnet18-f37072fd.pth"),
    ("efficientnet_b0", "efficientnet_v2_s-dd5fe13b.pth"), ("convnext_tiny", "densenet121-a639ec97.pth"),
    ("resnet18_small", "convnext_tiny-983f1562.pth")])
def test_torchvisions_file_of_another_architecture_is_refused_by_its_name(tmp_path, architecture, file):
    owner = weights_channel.torchvision_files()[file]
    with pytest.raises(ConfigError) as err:
        weights_channel.load(save(tmp_path, file, {"x": torch.zeros(1)}), architecture)
    assert one_line(str(err.value)) == (
        f"the weights channel's {file} is torchvision's {owner} file, not {architecture}'s; put "
        f"{model_def.weights_file_name(architecture)} there, or set model={owner}")


@pytest.mark.parametrize("architecture, other", [
    ("resnet18", "resnet50"), ("resnet50", "resnet18"), ("efficientnet_b0", "efficientnet_v2_s"),
    ("efficientnet_v2_s", "efficientnet_b0"), ("convnext_tiny", "resnet18"), ("densenet121", "efficientnet_b0"),
    ("resnet18_small", "densenet121")])
def test_weights_of_another_architecture_under_any_name_are_refused(tmp_path, architecture, other):
    with pytest.raises(ConfigError) as err:
        weights_channel.load(save(tmp_path, "backbone.pth", keys_of(other)), architecture)
    message = one_line(str(err.value))
    assert message.startswith(f"the weights file backbone.pth does not fit {architecture}: ")
    assert "set model to the architecture they are for" in message


def test_same_keys_other_shapes_are_refused(tmp_path):
    state = state_of("resnet18")
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    with pytest.raises(ConfigError, match=r"1 tensors have other shapes \(e\.g\. layer2\.0\.conv1\.weight "
                                          r"\(128, 64, 5, 5\), resnet18 has \(128, 64, 3, 3\)\)"):
        weights_channel.load(save(tmp_path, "w.pth", state), "resnet18")


def test_a_grey_first_convolution_is_not_an_imagenet_backbone(tmp_path):
    state = state_of("resnet18")
    state["conv1.weight"] = state["conv1.weight"].sum(1, keepdim=True)  # an earlier grey model of this project
    with pytest.raises(ConfigError, match="first convolution takes 1 channel.*give it as the model channel"):
        weights_channel.load(save(tmp_path, "model.pth", state), "resnet18")


class RunsCode:
    """Unpickling this calls os.system: what torch.load(weights_only=True) must refuse to do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("make", ["whole model", "code on load", "numpy object"])
def test_a_pickled_object_is_refused_and_never_run(tmp_path, make):
    marker = tmp_path / "ran"
    folder = tmp_path / "channel"
    folder.mkdir()
    path = folder / "weights.pth"
    if make == "whole model":
        torch.save(model_def.imagenet_model("resnet18"), path)  # torch.save(model): the module pickled, not tensors
    elif make == "code on load":
        path.write_bytes(pickle.dumps({"conv1.weight": RunsCode(marker)}))
    else:
        import numpy as np

        torch.save({"conv1.weight": np.zeros((64, 3, 7, 7), dtype=object)}, path)
    with pytest.raises(ConfigError) as err:
        weights_channel.load(str(folder), "resnet18")
    message = one_line(str(err.value))
    assert message.startswith("the weights file weights.pth is refused: torch.load(weights_only=True) reads tensors "
                              "only and this file holds something else (")
    assert "a file that would run code when loaded is never unpickled" in message
    assert "Re-running" not in message and not marker.exists()  # torch's advice to load it unsafely is not passed on


@pytest.mark.parametrize("content, match", [
    (b"not a torch file", r"is refused: torch\.load\(weights_only=True\) reads tensors only and this file holds "
                          r"something else \(.+\)"),
    (None, r"does not hold a state dict"),
])
def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path, content, match):
    path = tmp_path / "w.pth"
    if content is None:
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        weights_channel.load(str(tmp_path), "resnet18")


def test_what_the_channel_holds(tmp_path):
    with pytest.raises(ConfigError, match=r"holds no file; put the resnet18 weights there \(torchvision's "
                                          r"resnet18-f37072fd\.pth\)"):
        weights_channel.load(str(tmp_path), "resnet18")
    (tmp_path / "a.pth").write_bytes(b"x")
    (tmp_path / "b.pth").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"holds 2 files \(a\.pth, b\.pth\) and none is torchvision's"):
        weights_channel.load(str(tmp_path), "resnet18")
    other = tmp_path / "st"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError, match="safetensors file, which the training image cannot read"):
        weights_channel.load(str(other), "resnet18")
    tarball = tmp_path / "tar"
    tarball.mkdir()
    (tarball / "model.tar.gz").write_bytes(b"x")
    with pytest.raises(ConfigError, match="model.tar.gz is a tarball; an earlier job's model.tar.gz goes in the model "
                                          "channel"):
        weights_channel.load(str(tarball), "resnet18")


# ---------------------------------------------------------------- the model built from the channel's backbone
@pytest.mark.parametrize("name", sorted(model_def.TORCHVISION))
def test_every_backbone_starts_from_the_file_with_a_grey_first_convolution_summed_and_a_new_head(name):
    """What initialisation.build does with the channel's state dict, for every architecture with ImageNet weights:
    every loaded tensor is the file's, a 1-channel first convolution is the sum of the file's RGB kernels (timm's
    adapt_input_conv), the head is new; resnet18_small's 3x3 stem is new too (ImageNet's is 7x7)."""
    import initialisation

    state = state_of(name)
    stem, head = model_def.TORCHVISION[name][2:]
    backbone = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    model = model_def.create_model(name, 3, 1, pretrained=backbone)
    loaded = dict(model.state_dict())
    first_conv, new = initialisation.imagenet_layers(name, 1)
    assert new == ([stem, head] if name == "resnet18_small" else [head])
    if name == "resnet18_small":
        assert loaded["conv1.weight"].shape == (64, 1, 3, 3) and first_conv.startswith("new")
    else:
        torch.testing.assert_close(loaded[stem + ".weight"], state[stem + ".weight"].sum(dim=1, keepdim=True))
        assert first_conv == initialisation.GREY_FIRST_CONV
    deep = [k for k in backbone if not k.startswith(stem + ".") and backbone[k].is_floating_point()]
    assert all(torch.equal(loaded[k], backbone[k]) for k in deep)
    assert next(v for k, v in loaded.items() if k.startswith(head + ".") and v.ndim == 2).shape[0] == 3
