"""code/ on the containers' own torch: `make test-torch26` runs every test marked torch26 (this module and code/'s
unit tests) in .venv-torch26, with torch 2.6.0 and torchvision 0.21.0, the oldest training image the package
supports and the inference image's version. Here: the hyperparameters as the toolkit passes them, a 2-epoch run on a
tiny set, a stop inside an epoch resumed to the same model, and the saved model loaded and served by
code/inference.py."""
import io
import json
import os

import numpy as np
import pytest
import torch

import engine
import hyperparameters
import inference
import train
from conftest import make_dataset

pytestmark = pytest.mark.torch26
slow = pytest.mark.slow  # trains: left out of make test-fast, run by make test and make test-torch26


def test_the_torch_this_runs_on(record_property):
    """make test-torch26 sets MEDIMG_EXPECT_TORCH=2.6.0 after installing requirements.txt into that environment:
    the torch a Studio image (or the container) has must still be the one that runs."""
    record_property("torch", str(torch.__version__))
    expected = os.environ.get("MEDIMG_EXPECT_TORCH")
    assert torch.__version__.split("+")[0] == expected if expected else torch.__version__.startswith("2.")


def test_toolkit_style_arguments_parse():
    args = hyperparameters.parse_args(["--amp", "False", "--batch-size", "16", "--epochs", "2", "--lr", "auto",
                                       "--model", "smallcnn", "--tta", "true"], environ={})
    assert (args.amp, args.batch_size, args.epochs, args.lr, args.tta) == (False, 16, 2, "auto", True)


def job(data, work, *extra):
    return ["--train", os.path.join(data, "train"), "--val", os.path.join(data, "val"), "--test",
            os.path.join(data, "test"), "--model-dir", str(work / "model"), "--output-data-dir",
            str(work / "out"), "--output-dir", str(work / "out"), "--checkpoint-dir", str(work / "ck"),
            "--batch-size", "8", "--patience", "0", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch26")
    data = make_dataset(root / "data", counts={"train": 16, "val": 6, "test": 6})
    assert train.main(job(data, root / "run", "--epochs", "2", "--tta", "true")) == 0
    return data, root / "run"


@slow
def test_a_two_epoch_run_trains_and_saves(trained):
    _, work = trained
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and metrics["test"]["n"] == 12
    assert metrics["decisions"]["threshold"] is not None and "ci95" in metrics["test"]
    assert sorted(os.listdir(work / "model" / "code")) == sorted(train.INFERENCE_FILES)


@slow
def test_a_stop_inside_an_epoch_resumes_to_the_same_model(trained, tmp_path):
    data, reference = trained

    class StopAtStep2OfEpoch2(engine.Callback):
        def on_step_end(self, trainer, epoch, step):
            if (epoch, step) == (2, 2):
                trainer.stop.request("SIGTERM")

    work = tmp_path / "run"
    assert train.main(job(data, work, "--epochs", "2", "--tta", "true"),
                      callbacks=[StopAtStep2OfEpoch2()]) == train.SIGTERM_EXIT_CODE
    assert train.main(job(data, work, "--epochs", "2", "--tta", "true")) == 0
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    torch.testing.assert_close(load(work / "model" / "model.pth"), load(reference / "model" / "model.pth"),
                               rtol=1e-5, atol=1e-6)


@slow
def test_the_saved_model_is_served_by_inference_py(trained):
    data, work = trained
    model = inference.model_fn(str(work / "model"))
    png = open(os.path.join(data, "test", "pneumonia", "0.png"), "rb").read()
    body, media = inference.output_fn(inference.predict_fn(inference.input_fn(png, "image/png"), model),
                                      "application/json")
    answer = json.loads(body)["predictions"][0]
    assert media == "application/json" and set(answer["probabilities"]) == {"normal", "pneumonia"}
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 16, 16), np.uint8))
    body, media = inference.output_fn(inference.predict_fn(inference.input_fn(buf.getvalue(), "application/x-npy"),
                                                           model), "application/x-npy")
    assert media == "application/x-npy" and np.load(io.BytesIO(body)).shape == (2, 2)


@slow
def test_a_k_fold_ensemble_loads_and_serves_its_members_on_this_torch(trained, tmp_path):
    """The model.tar.gz of a 2-member ensemble, unpacked as the inference image does: model_fn loads every member
    with weights_only=True and the endpoint answers the test probabilities train.py reported."""
    import tarfile

    data, _ = trained
    work = tmp_path / "run"
    assert train.main(job(data, work, "--epochs", "1", "--ensemble", "on", "--folds", "2")) == 0
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        tar.add(work / "model", arcname=".")
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        tar.extractall(tmp_path / "served", filter="data")
    model = inference.model_fn(str(tmp_path / "served"))
    assert len(model.members) == 2 and os.path.isfile(tmp_path / "served" / "members" / "model-1.pth")
    reported = json.loads((work / "out" / "metrics.json").read_text())["test_predictions"]
    for name, expected in zip(reported["images"], reported["probabilities"]):
        png = open(os.path.join(data, "test", name), "rb").read()
        answer = inference.predict_fn(inference.input_fn(png, "image/png"), model)["predictions"][0]
        np.testing.assert_allclose(list(answer["probabilities"].values()), expected, atol=1e-5)
