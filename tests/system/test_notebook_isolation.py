"""train.ipynb with ``enable_network_isolation=True`` and ``pretrained=True``, under SDK v2 and v3, against the
emulator (tests/sagemaker_emulator.py), up to and including the cell that starts the job: the notebook stages the
weights file in S3 once, under the project prefix, the job it sends has a ``weights`` channel with that object
and network isolation on, and the job (run by the emulator through the toolkit or SDK v3's drivers, with an empty
torch.hub cache and, in CI, the loopback guard) starts from that very file.

How the weights are had here, honestly: there is no internet, so torchvision's file cannot be fetched, and a file
made here cannot carry the hash torchvision's name promises (the notebook, as the job, checks it). So the notebook
gets a state dict of torchvision's resnet18 architecture (random values) through its ``weights_file`` parameter:
the same cell and the same path after the fetch (the job's checks, the upload once per content, the channel). The
fetch through torch.hub's cache is tested with torch.hub's downloader replaced (tests/unit/client).
"""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import types

import nbformat
import pytest
import torch

import model_def
from conftest import ROOT, make_dataset
from sagemaker_emulator import SageMakerEmulator

pytestmark = pytest.mark.slow  # papermill, a kernel, the emulator and its jobs

NOTEBOOK = os.path.join(ROOT, "train.ipynb")
PYTHON_V3 = os.path.join(ROOT, ".venv-sdk3", "bin", "python")
ROLE = "arn:aws:iam::123456789012:role/MedImgSageMakerRole"
BUCKET, PREFIX = "medimg-isolated", "locked"
LAST_CELL = "builder.start_job("  # the notebook up to the cell that starts the job
HYPERPARAMETERS = {"model": "resnet18", "pretrained": True, "epochs": 1, "max-steps-per-epoch": 1,
                   "batch-size": 16, "bootstrap": 0}


def up_to_the_job(path):
    """train.ipynb without the cells after the one that starts the job (wait = False: it returns at once)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    last = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and LAST_CELL in c.source)
    nb.cells = nb.cells[:last + 1]
    nbformat.write(nb, str(path))
    return str(path)


def kernel_for(python, tmp):
    folder = tmp / "kernels" / "kernels" / "medimg-sdk3"
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "sdk3",
        "language": "python"}))
    return "medimg-sdk3", str(tmp / "kernels")


def outputs(nb, marker):
    cell = next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)
    return "\n".join(o.get("text", "") or "\n".join(o.get("traceback", [])) for o in cell.get("outputs", []))


@pytest.fixture(scope="module", params=["v2", "v3"])
def run(request, tmp_path_factory):
    sdk = request.param
    tmp = tmp_path_factory.mktemp(f"isolated-{sdk}")
    torch.manual_seed(11)
    weights_file = tmp / "resnet18-our-own.pth"
    torch.save(model_def.imagenet_model("resnet18").state_dict(), weights_file)
    params = {"role": ROLE, "bucket": BUCKET, "prefix": PREFIX, "region": "us-east-1", "base_job_name": f"iso{sdk}",
              "sdk": sdk, "work_dir": str(tmp / "work"), "mode": "on-demand", "wait": False,
              "run_local_smoke_test": False, "data_dir": make_dataset(tmp / "d", counts={"train": 16, "val": 8}),
              "hyperparameters": HYPERPARAMETERS, "enable_network_isolation": True, "weights_file": str(weights_file)}
    (tmp / "params.json").write_text(json.dumps(params))
    executed = tmp / "executed.ipynb"
    saved_home = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp / "empty-torch-home")  # the emulator's jobs inherit it: nothing cached
    try:
        with SageMakerEmulator(tmp / "emulator", python_v3=PYTHON_V3) as emu:
            env = emu.env()
            env["OMP_NUM_THREADS"] = "1"
            kernel = "python3"
            if sdk == "v3":
                kernel, env["JUPYTER_PATH"] = kernel_for(PYTHON_V3, tmp)
            result = subprocess.run(
                [sys.executable, "-m", "papermill", up_to_the_job(tmp / "nb.ipynb"), str(executed), "-f",
                 str(tmp / "params.json"), "--cwd", ROOT, "-k", kernel, "--no-progress-bar"], env=env,
                capture_output=True, text=True, timeout=900)
            emu.wait_for_jobs()
            nb = nbformat.read(str(executed), as_version=4) if executed.exists() else None
            if result.returncode != 0:
                pytest.fail(f"papermill ({sdk}) failed:\n{result.stderr[-4000:]}")
            requests = [r for r in emu.training_requests if r["TrainingJobName"].startswith(f"iso{sdk}-")]
            s3 = emu.client("s3")
            yield types.SimpleNamespace(sdk=sdk, emu=emu, nb=nb, requests=requests, s3=s3, weights_file=weights_file)
    finally:
        if saved_home is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = saved_home


def object_bytes(s3, uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_the_job_is_isolated_and_its_channels_include_the_weights(run):
    (request,) = run.requests
    assert request["EnableNetworkIsolation"] is True
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    digest = hashlib.sha256(run.weights_file.read_bytes()).hexdigest()
    assert channels["weights"] == f"s3://{BUCKET}/{PREFIX}/weights/{digest[:16]}/resnet18-our-own.pth"
    assert object_bytes(run.s3, channels["weights"]) == run.weights_file.read_bytes()
    assert request["HyperParameters"]["pretrained"] == ("true" if run.sdk == "v3" else "true")  # v2: JSON true
    assert "model" not in channels  # no earlier model: no model channel


def test_the_notebook_says_where_the_model_starts(run):
    said = outputs(run.nb, "weights.should_stage(")
    assert "uploaded resnet18-our-own.pth" in said
    assert "resnet18 starts from resnet18-our-own.pth (the weights channel)" in said


def test_the_isolated_job_started_from_the_staged_file(run):
    (request,) = run.requests
    job = run.emu.jobs[request["TrainingJobName"]]
    assert job.returncode == 0, (job.error, job.log[-6000:])
    key = f"{PREFIX}/jobs/{request['TrainingJobName']}/output/model.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(run.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())) as tar:
        config = json.load(tar.extractfile("model_config.json"))
        weights = torch.load(io.BytesIO(tar.extractfile("model.pth").read()), weights_only=True)
    start = config["initialised_from"]
    assert (start["source"], start["file"]) == ("weights channel", "resnet18-our-own.pth")
    assert start["sha256"] == hashlib.sha256(run.weights_file.read_bytes()).hexdigest()
    staged = torch.load(run.weights_file, weights_only=True)
    torch.testing.assert_close(weights["layer3.1.conv1.weight"], staged["layer3.1.conv1.weight"], rtol=0, atol=1e-3)
    assert "download.pytorch.org" not in job.log
