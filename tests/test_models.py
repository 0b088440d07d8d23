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
