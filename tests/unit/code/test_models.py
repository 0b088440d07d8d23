"""The model registry: every model builds for 1 and 3 channels and gives (batch, classes) logits."""
import pytest
import torch

import model_def

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6

# torchvision's 224 px models are checked at 64 px to keep the suite fast: the shape logic is the same.
SIZES = {"smallcnn": 28, "resnet18_small": 28}


@pytest.mark.parametrize("name", sorted(model_def.MODELS))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_shape(name, in_channels):
    model = model_def.create_model(name, num_classes=3, in_channels=in_channels).eval()
    size = SIZES.get(name, 64)
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


def test_smallcnn_takes_any_input_size():
    model = model_def.create_model("smallcnn", 2, 1).eval()
    with torch.no_grad():
        for size in (28, 64, 100):
            assert model(torch.randn(1, 1, size, size)).shape == (1, 2)


@pytest.mark.parametrize("size, stride, first_stage", [(28, 1, 28), (64, 1, 64), (65, 2, 33), (96, 2, 48),
                                                       (128, 2, 64), (129, 4, 33), (224, 4, 56), (512, 4, 128)])
def test_smallcnn_stem_keeps_the_first_stage_at_64_px_or_less_up_to_256(size, stride, first_stage):
    options = model_def.architecture_options("smallcnn", size)
    assert options == {"stem_stride": stride}
    model = model_def.create_model("smallcnn", 2, 1, **options).eval()
    seen = []
    model.stages[0].register_forward_hook(lambda m, i, out: seen.append(out.shape[-1]))
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, 2)
    assert seen == [first_stage]


def test_architecture_options_are_the_architectures_own():
    assert model_def.architecture_options("resnet18", 224) == {}
    with pytest.raises(ValueError, match="resnet18 takes no option 'stem_stride'"):
        model_def.create_model("resnet18", 2, 3, stem_stride=2)
    with pytest.raises(ValueError, match="stem_stride must be 1, 2 or 4"):
        model_def.create_model("smallcnn", 2, 1, stem_stride=3)


def test_a_model_config_without_architecture_options_rebuilds_the_original_stem(tmp_path):
    """Models saved before architecture_options existed had a stride-1 stem at every size."""
    import model_config

    config = {"architecture": "smallcnn", "num_classes": 2, "in_channels": 1, "image_size": 128, "mean": [0.5],
              "std": [0.2], "classes": ["a", "b"]}
    (tmp_path / model_config.FILE).write_text(__import__("json").dumps(config))
    assert model_config.read(str(tmp_path))["architecture_options"] == {}
    old = model_def.create_model("smallcnn", 2, 1)
    assert old.state_dict().keys() == model_def.create_model("smallcnn", 2, 1, stem_stride=1).state_dict().keys()


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        model_def.create_model("vgg99", 2)
    assert "vgg99" in str(err.value) and all(name in str(err.value) for name in model_def.MODELS)


def test_one_channel_adaptation_keeps_the_grey_response():
    """Summing RGB filters: a grey 1-channel image gives what the 3-channel model gives for grey RGB."""
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    grey = model_def._adapt_conv(conv, 1)
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(grey(x), conv(x.expand(1, 3, 8, 8)))


def test_smallcnn_refuses_pretrained():
    with pytest.raises(ValueError, match="no pretrained weights"):
        model_def.create_model("smallcnn", 2, 1, pretrained=True)


@pytest.mark.parametrize("name", sorted(model_def.MODELS))
def test_an_image_size_a_model_cannot_take_is_a_clear_error_and_changes_nothing(name):
    """densenet121's pooling stages and convnext_tiny's stride-4 stem and three downsamplings shrink 28 px (MedMNIST's
    size) to nothing: one line saying what to change, found before training; a size a model takes passes, its
    weights and BatchNorm statistics untouched."""
    model = model_def.create_model(name, num_classes=2, in_channels=1, **model_def.architecture_options(name, 28))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if name in ("densenet121", "convnext_tiny"):
        with pytest.raises(ValueError, match=rf"^model={name} cannot take 28 px images \(.*\); set image-size "
                                             r"higher \(e\.g\. 64\) or pick another model$"):
            model_def.check_input_size(model, name, 1, 28)
    else:
        model_def.check_input_size(model, name, 1, 28)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model_def.check_input_size(model, name, 1, 32)  # every registered model takes 32 px


def test_strided_convolutions_on_one_pixel_maps_are_found_at_the_image_size():
    """oneDNN's bf16 backward of a strided convolution on a 1-pixel map gives NaN weight gradients at random on the
    CPU: resnet18 at 16 px has them (layer4's first block), at 64 px none; smallcnn has none at any size."""
    resnet = model_def.create_model("resnet18", 2, 1, False)
    assert "layer4.0.conv1" in model_def.strided_convs_on_one_pixel(resnet, 1, 16)
    assert model_def.strided_convs_on_one_pixel(resnet, 1, 64) == []
    for size in (16, 28, 64):
        small = model_def.create_model("smallcnn", 2, 1, False, **model_def.architecture_options("smallcnn", size))
        assert model_def.strided_convs_on_one_pixel(small, 1, size) == []
    assert resnet.training  # left as it was


def test_cpu_training_of_such_a_model_leaves_bf16_for_fp32_and_says_so(caplog):
    cpu = torch.device("cpu")
    with caplog.at_level("WARNING"):
        assert model_def.cpu_safe_autocast(torch.bfloat16, cpu, "resnet18", 1, 16) is None
    assert "amp off: at 16 px, layer4.0.conv1" in caplog.text and "training in fp32" in caplog.text
    assert model_def.cpu_safe_autocast(torch.bfloat16, cpu, "resnet18", 1, 64) == torch.bfloat16
    assert model_def.cpu_safe_autocast(torch.bfloat16, cpu, "smallcnn", 1, 16) == torch.bfloat16
    assert model_def.cpu_safe_autocast(None, cpu, "resnet18", 1, 16) is None
    assert model_def.cpu_safe_autocast(torch.float16, torch.device("cuda"), "resnet18", 1, 16) == torch.float16
