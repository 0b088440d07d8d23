"""code/inference.py on a multi-GPU serving instance: the inference toolkit starts one worker per GPU and passes
each a context whose system_properties["gpu_id"] is its GPU; model_fn loads the model there, not on GPU 0.
Checked on CPU with a fake context and torch.cuda's answers patched (what is asserted is the device chosen and
where the model was moved); without a context model_fn works as before."""
import types

import pytest
import torch

import inference
import model_config
import model_def
from model_config import ModelLoadError


def context(gpu_id):
    """What TorchServe gives a handler: ``system_properties`` with the worker's ``gpu_id`` and ``model_dir``."""
    return types.SimpleNamespace(system_properties={"gpu_id": gpu_id, "model_dir": "/opt/ml/model"})


@pytest.fixture
def gpus(monkeypatch):
    """Pretend the host has ``n`` GPUs; records torch.cuda.set_device calls."""
    calls = []

    def have(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(torch.device(device)))
        return calls

    return have


@pytest.mark.parametrize("gpu_id", [0, 1, 3, "2"])
def test_each_worker_serves_on_the_gpu_its_context_names(gpus, gpu_id):
    gpus(4)
    assert inference.serving_device(context(gpu_id)) == torch.device(f"cuda:{int(gpu_id)}")


@pytest.mark.parametrize("ctx", [None, types.SimpleNamespace(), context(None), types.SimpleNamespace(system_properties=None)])
def test_without_a_gpu_id_the_current_gpu_or_the_cpu(gpus, ctx):
    gpus(2)
    assert inference.serving_device(ctx) == torch.device("cuda")
    gpus(0)
    assert inference.serving_device(ctx) == torch.device("cpu")


def test_a_gpu_id_on_a_cpu_host_serves_on_the_cpu(gpus):
    gpus(0)
    assert inference.serving_device(context(0)) == torch.device("cpu")


@pytest.mark.parametrize("gpu_id", [4, -1, "x"])
def test_a_gpu_id_the_instance_does_not_have_is_one_line(gpus, gpu_id):
    gpus(4)
    with pytest.raises(ModelLoadError) as err:
        inference.serving_device(context(gpu_id))
    message = str(err.value)
    assert "\n" not in message and f"gpu_id={gpu_id!r}" in message and "4 GPU(s) (0..3)" in message


@pytest.fixture
def model_dir(tmp_path):
    options = model_def.architecture_options("smallcnn", 16)
    net = model_def.create_model("smallcnn", 2, 1, **options)
    torch.save(net.state_dict(), tmp_path / "model.pth")
    model_config.write(str(tmp_path), model_config.build(
        architecture="smallcnn", classes=["normal", "pneumonia"], in_channels=1, image_size=16, mean=[0.5],
        std=[0.25], tta=False, hyperparameters={}, torch_version=torch.__version__, architecture_options=options))
    return str(tmp_path)


def test_model_fn_loads_the_model_on_the_workers_gpu(gpus, model_dir, monkeypatch):
    """The weights go to cuda:<gpu_id> and the worker's CUDA context with them (set_device), for every worker."""
    moved = []
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *args, **kw: moved.append(args[0]) or self)
    for gpu_id in (0, 2, 3):
        set_device = gpus(4)
        loaded = inference.model_fn(model_dir, context(gpu_id))
        assert loaded.device == torch.device(f"cuda:{gpu_id}")
        assert moved[-1] == torch.device(f"cuda:{gpu_id}") and set_device[-1] == torch.device(f"cuda:{gpu_id}")


def test_model_fn_keeps_working_with_one_argument(model_dir):
    """Older toolkits and callers pass model_dir alone; on this CPU host the model serves on the CPU."""
    loaded = inference.model_fn(model_dir)
    assert loaded.device == torch.device("cpu" if not torch.cuda.is_available() else "cuda")
    assert next(loaded.model.parameters()).device.type == loaded.device.type
