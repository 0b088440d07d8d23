"""train.ipynb end to end, headless, under SageMaker Python SDK v2 and v3: papermill runs it in a real kernel (the
v2 client .venv, or .venv-sdk3) against SageMaker emulated on 127.0.0.1 (tests/support/sagemaker_emulator.py: moto,
with training jobs that really run through the toolkit or ModelTrainer's drivers, and endpoints that really
serve), with the smoke test, tuning, a batch transform of the test channel and deployment on. Then: what each SDK sent, what
landed in S3, what the notebook showed (a test split held out when the data had none, a readable train cell, the
new figures, predictions.csv against train.py's own test predictions, the endpoint's answers on test images), and
that the clean-up deleted what it deployed. Also the committed notebook's hygiene.

v2 runs on an .npz with train and val only (prepare_data holds a test split out) and deploys a serverless endpoint;
v3 on class folders whose images are TIFF and BMP, with the channel named "validation", and deploys an asynchronous
endpoint (requests and answers through S3). The real-time path of each SDK: test_sagemaker_requests.py and
test_sdk_v3_jobs.py; every kind under both SDKs, with large images: tests/system/test_scoring_paths.py.
"""
import ast
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import types

import nbformat
import numpy as np
import pytest
from PIL import Image

import epoch_log
import hyperparameters
from conftest import ROOT, make_dataset, make_image
from medimg.job import JobSpec, changed_hyperparameters
from mlflow_server import MlflowServer, closed_port_uri
from sagemaker_emulator import FAKE_CREDENTIALS, SageMakerEmulator

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

NOTEBOOK = os.path.join(ROOT, "train.ipynb")
PYTHON_V3 = os.path.join(ROOT, ".venv-sdk3", "bin", "python")
ROLE = "arn:aws:iam::123456789012:role/MedImgSageMakerRole"
BUCKET = "medimg-notebook-test"
PREFIX = "nbtest"
# as a user would edit them: a few values changed, the rest left at train.py's defaults
HYPERPARAMETERS = {"model": "smallcnn", "pretrained": False, "epochs": 3, "batch-size": 16, "lr": 0.003,
                   "image-size": "auto", "class-weighting": "balanced", "augment": True, "tta": True,
                   "target-sensitivity": 0.0, "ordinal": False, "seed": 7}
SENT = {"epochs": 3, "batch-size": 16, "lr": 0.003, "class-weighting": "balanced", "tta": True, "seed": 7}
MAX_TRAIN_CELL_LINES = 60
ENDPOINT_TYPES = {"v2": "serverless", "v3": "async"}


def cell_with(nb, marker):
    matches = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(matches) == 1, f"{len(matches)} code cells contain {marker!r}"
    return matches[0]


def text_of(cell):
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
        elif out.output_type == "error":
            parts.append("\n".join(out.traceback))
    return "\n".join(parts)


def images_of(cell):
    return [o for o in cell.get("outputs", []) if o.output_type == "display_data" and "image/png" in o.data]


def untar(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


def make_npz(path, seed=0):
    """PneumoniaMNIST-shaped: train and val only (no test split), 16 px grey, two learnable classes."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 48), ("val", 16)):
        labels = np.arange(n) % 2
        arrays[f"{split}_images"] = np.stack([np.asarray(make_image(int(y), rng)) for y in labels])
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return str(path)


def tiff_and_bmp_folders(root):
    """Class folders of TIFF (train) and BMP (val, test) images, with the channel named "validation"."""
    data = make_dataset(root / "png", counts={"train": 24, "val": 8, "test": 8})
    for dirpath, _, names in os.walk(data):
        for name in names:
            if name.endswith(".png"):
                src = os.path.join(dirpath, name)
                ext = ".tif" if f"{os.sep}train{os.sep}" in src else ".bmp"
                Image.open(src).save(os.path.splitext(src)[0] + ext)
                os.unlink(src)
    os.rename(os.path.join(data, "val"), os.path.join(data, "validation"))
    for split in ("train", "validation", "test"):
        with open(os.path.join(data, "label_dict.json")) as src, \
                open(os.path.join(data, split, "label_dict.json"), "w") as dst:
            dst.write(src.read())
    return data


def kernel_for(python, tmp):
    """A Jupyter kernelspec that starts ``python`` (the v3 client env), found through JUPYTER_PATH."""
    folder = tmp / "kernels" / "kernels" / "medimg-sdk3"
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "sdk3",
        "language": "python"}))
    return "medimg-sdk3", str(tmp / "kernels")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow server (sqlite) for the v2 run; the v3 run tracks to a closed port (one warning, no harm)."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module", params=["v2", "v3"])
def run(request, tmp_path_factory, mlflow_server):
    sdk = request.param
    tmp = tmp_path_factory.mktemp(f"notebook-{sdk}")
    source = {"npz": make_npz(tmp / "breast.npz")} if sdk == "v2" else {"data_dir": tiff_and_bmp_folders(tmp / "d")}
    params = {
        "role": ROLE, "bucket": BUCKET, "prefix": PREFIX, "region": "us-east-1", "base_job_name": f"nb{sdk}",
        "sdk": sdk, "work_dir": str(tmp / "work"), "mode": "spot", "wait": True, "poll_seconds": 1,
        "run_local_smoke_test": True, "smoke_test_images_per_class": 6, "run_tuning": True, "tuning_max_jobs": 4,
        "tuning_max_parallel_jobs": 2, "deploy": True, "hyperparameters": HYPERPARAMETERS, "input_mode": "FastFile",
        "batch_transform": True, "endpoint_type": ENDPOINT_TYPES[sdk],
        "tags": {"project": "nbtest", "owner": "ci"}, "register": True, "approval_status": "Approved",
        "model_package_group": f"nbtest-{sdk}", "mlflow_experiment": f"nbtest-{sdk}",
        "mlflow_tracking_uri": mlflow_server.uri if sdk == "v2" else closed_port_uri(), **source}
    params_file = tmp / "params.json"
    params_file.write_text(json.dumps(params))
    executed = tmp / "executed.ipynb"
    python = sys.executable if sdk == "v2" else PYTHON_V3
    with SageMakerEmulator(tmp / "emulator", python_v3=PYTHON_V3) as emu:
        env = emu.env()
        env["OMP_NUM_THREADS"] = "1"
        env.pop("MPLBACKEND", None)  # the kernel's inline backend turns figures into image/png outputs
        kernel = "python3"
        if sdk == "v3":
            kernel, env["JUPYTER_PATH"] = kernel_for(python, tmp)
        result = subprocess.run(
            [sys.executable, "-m", "papermill", NOTEBOOK, str(executed), "-f", str(params_file), "--cwd", ROOT,
             "-k", kernel, "--no-progress-bar"], env=env, capture_output=True, text=True, timeout=900)
        emu.wait_for_jobs()
        nb = nbformat.read(str(executed), as_version=4) if executed.exists() else None
        if result.returncode != 0:
            failed = [text_of(c) for c in (nb.cells if nb else []) if any(
                o.output_type == "error" for o in c.get("outputs", []))]
            pytest.fail(f"papermill ({sdk}) failed:\n{result.stderr[-4000:]}\n{''.join(failed)[-6000:]}")
        s3 = emu.client("s3")
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])]
        yield types.SimpleNamespace(sdk=sdk, emu=emu, nb=nb, keys=keys, s3=s3, sm=emu.client("sagemaker"), tmp=tmp,
                                    raw=executed.read_text(), stderr=result.stderr, python=python,
                                    mlflow=mlflow_server)


def data_access(request):
    """{data channel: (InputMode, S3DataDistributionType)} of a request (not SDK v3's code and drivers)."""
    return {c["ChannelName"]: (c.get("InputMode"), c["DataSource"]["S3DataSource"]["S3DataDistributionType"])
            for c in request["InputDataConfig"] if c["ChannelName"] not in ("code", "sm_drivers")}


def training_request(run):
    requests = [r for r in run.emu.training_requests if r["TrainingJobName"].startswith(f"nb{run.sdk}-")
                and not r.get("HyperParameters", {}).get("sagemaker_estimator_class_name")]
    assert len(requests) == 1, [r["TrainingJobName"] for r in run.emu.training_requests]
    return requests[0]


def job_output(run, name):
    job = training_request(run)["TrainingJobName"]
    key = f"{PREFIX}/jobs/{job}/output/{name}"
    return untar(run.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


# ---------------------------------------------------------------- what was sent
def test_only_the_changed_hyperparameters_are_sent(run):
    sent = training_request(run)["HyperParameters"]
    assert all(isinstance(v, str) for v in sent.values())
    ours = {k: v for k, v in sent.items() if not k.startswith("sagemaker_")}
    def decode(value):  # v2 JSON-encodes every value; v3 sends strings bare
        try:
            return json.loads(value)
        except ValueError:
            assert run.sdk == "v3", value
            return value

    assert {k: decode(v) for k, v in ours.items()} == SENT  # "auto" and the other defaults are train.py's
    assert changed_hyperparameters(HYPERPARAMETERS, hyperparameters.defaults()) == SENT
    if run.sdk == "v2":
        assert json.loads(sent["sagemaker_program"]) == "train.py"
        assert json.loads(sent["sagemaker_submit_directory"]).endswith("/source/sourcedir.tar.gz")
    else:  # v3: no toolkit; true/false and bare strings; ModelTrainer's drivers run train.py
        assert sent["tta"] == "true" and sent["class-weighting"] == "balanced"
        assert training_request(run)["AlgorithmSpecification"]["ContainerEntrypoint"] == ["/bin/bash"]


def test_channels_metrics_spot_and_placement(run):
    request = training_request(run)
    job = request["TrainingJobName"]
    assert re.fullmatch(rf"nb{run.sdk}-[0-9-]+", job)
    assert request["RoleArn"] == ROLE
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("/pytorch-training:2.8.0-gpu-py312")
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    data_channels = sorted(c for c in channels if c not in ("code", "sm_drivers"))
    assert data_channels == (["test", "train", "val"] if run.sdk == "v2" else ["test", "train", "validation"])
    assert all(f"s3://{BUCKET}/{PREFIX}/data/" in channels[c] for c in data_channels)
    if run.sdk == "v3":
        assert {"code", "sm_drivers"} <= set(channels)
    names = [d["Name"] for d in request["AlgorithmSpecification"]["MetricDefinitions"]]
    assert names == [d["Name"] for d in epoch_log.metric_definitions(test=True)]  # a test channel: test metrics
    assert data_access(request) == {c: ("FastFile", "FullyReplicated") for c in data_channels}  # one instance
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == "FastFile"
    shown = text_of(cell_with(run.nb, "JobSpec("))
    assert "data: " + "; ".join(f"{c} FastFile, FullyReplicated" for c in channels if c in data_channels) in shown
    assert "warning:" not in shown  # a known GPU type, used; spot with checkpoints
    assert request["EnableManagedSpotTraining"] is True
    stop = request["StoppingCondition"]
    assert stop["MaxRuntimeInSeconds"] == 4 * 3600 and stop["MaxWaitTimeInSeconds"] >= stop["MaxRuntimeInSeconds"]
    assert request["CheckpointConfig"]["S3Uri"].startswith(f"s3://{BUCKET}/{PREFIX}/checkpoints/nb{run.sdk}-")
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert "KeepAlivePeriodInSeconds" not in request["ResourceConfig"]  # no warm pool with spot
    assert "sagemaker_torch_distributed_enabled" not in request["HyperParameters"]  # one GPU: no torchrun
    assert {"Key": "project", "Value": "nbtest"} in request["Tags"]
    for unset in ("VpcConfig", "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption"):
        assert not request.get(unset), unset


def test_tuning_request(run):
    requests = [r for r in run.emu.tuning_requests if r["HyperParameterTuningJobName"].startswith(f"nb{run.sdk}")]
    assert len(requests) == 1
    config = requests[0]["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val_auc"}
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 4
    assert {r["Name"] for r in config["ParameterRanges"]["ContinuousParameterRanges"]} == {"lr", "weight-decay"}
    definition = requests[0]["TrainingJobDefinition"]
    assert "CheckpointConfig" not in definition  # tuning jobs must not share one checkpoint folder
    assert set(data_access(definition).values()) == {("FastFile", "FullyReplicated")}  # the trials read as the job
    assert definition["AlgorithmSpecification"]["TrainingInputMode"] == "FastFile"


# ---------------------------------------------------------------- what ran and landed in S3
def test_the_job_ran_and_left_its_artefacts(run):
    job = training_request(run)["TrainingJobName"]
    assert run.emu.jobs[job].returncode == 0, run.emu.jobs[job].log[-3000:]
    model = job_output(run, "model.tar.gz")
    assert {"model.pth", "model_config.json", "label_dict.json", "code/inference.py"} <= set(model)
    config = json.loads(model["model_config.json"])
    assert config["hyperparameters"]["lr"] == 0.003 and config["threshold"] is not None
    metrics = json.loads(job_output(run, "output.tar.gz")["metrics.json"])
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3] and metrics["test"]["n"] > 0
    assert "ci95" in metrics["test"] and "operating_point" in metrics["test"]
    checkpoints = training_request(run)["CheckpointConfig"]["S3Uri"][len(f"s3://{BUCKET}/"):]
    assert any(k.startswith(checkpoints) and k.endswith(".pt") for k in run.keys)  # spot: synced checkpoints


def test_a_test_split_is_held_out_when_the_data_has_none(run):
    data = text_of(cell_with(run.nb, "s3_data.upload_channels"))
    if run.sdk == "v2":  # the .npz had train and val only
        assert re.search(r"the source has no test split: held out \d+ of 48 training images as test", data), data
        header = next(line for line in data.splitlines() if line.split() == ["train", "val", "test"])
        assert header and re.search(r"\d+ \(\d+%\)\s+\d+ \(\d+%\)\s+\d+ \(\d+%\)", data)  # counts with shares
    assert "channels: train" in data and "no test channel" not in data
    assert re.search(r"uploading \S+: 100%\|.*\| \d+/\d+ ", data), data  # the upload's bar, in the notebook
    results = text_of(cell_with(run.nb, "artifacts.download_job_artifacts"))
    assert re.search(r"^test\s+\d+\s+[0-9.]+ \([0-9.]+-[0-9.]+\)", results, re.MULTILINE), results  # with a CI
    assert "model.tar.gz: 100%" in results and "output.tar.gz: 100%" in results  # the downloads' bars
    assert "operating point p >=" in results and "PPV" in results


# ---------------------------------------------------------------- what the notebook showed
def test_the_train_cell_shows_the_epochs_not_the_whole_log(run):
    train_cell = text_of(cell_with(run.nb, "builder.start_job("))
    lines = train_cell.strip().splitlines()
    assert len(lines) <= MAX_TRAIN_CELL_LINES, train_cell
    epochs = [epoch_log.parse_epoch(line) for line in lines if epoch_log.parse_epoch(line)]
    assert [int(e["epoch"]) for e in epochs] == [1, 2, 3]
    assert "best epoch" in train_cell and "test_loss=" in train_cell
    assert "console.aws.amazon.com/cloudwatch" in train_cell  # where the whole log is
    assert "SM_HPS" not in train_cell and "SM_TRAINING_ENV" not in train_cell
    statuses = [line for line in lines if ": Completed / Completed" in line]
    assert len(statuses) == 1
    assert "Completed" not in text_of(cell_with(run.nb, "monitor.model_data(sm, job_name)")).split("model:")[0]


def test_setup_shows_the_sdk_path_once_and_no_info_noise(run):
    setup = text_of(cell_with(run.nb, "sdks.detect(sdk)"))
    assert f"the {run.sdk} path" in setup
    for cell in run.nb.cells:
        out = text_of(cell) if cell.cell_type == "code" else ""
        for noise in ("Not applying SDK defaults", "Found credentials", "Found endpoint for", "INFO:botocore"):
            assert noise not in out, (noise, out[:300])
    if run.sdk == "v2":  # the SDK's deprecation messages: said once, in plain words
        assert setup.count("maintenance") == 1
        assert "SageMakerV2DeprecationWarning" not in run.raw


def test_the_smoke_test_says_pass_and_what_it_checked(run):
    smoke = text_of(cell_with(run.nb, "medimg.local_train"))
    assert f"smoke test PASSED ({run.sdk} launcher)" in smoke and "mean nothing" in smoke
    assert "val_auc" not in smoke


def test_the_figures_are_there(run):
    nb = run.nb
    assert len(images_of(cell_with(nb, "plots.image_grid(data_folders.sample_images"))) == 1
    assert len(images_of(cell_with(nb, "plots.learning_curves"))) == 1
    assert len(images_of(cell_with(nb, "plots.roc_curves"))) == 2  # confusion matrix and ROC with the point
    assert len(images_of(cell_with(nb, "plots.reliability_curve"))) == 1
    assert len(images_of(cell_with(nb, "plots.heatmap_grid"))) == 1
    mistakes = cell_with(nb, "artifacts.confident_mistakes")
    assert len(images_of(mistakes)) == 1 or "no mistakes to show" in text_of(mistakes)
    cloudwatch = text_of(cell_with(nb, "monitor.metric_series"))
    assert "too few CloudWatch points" in cloudwatch or len(images_of(cell_with(nb, "monitor.metric_series"))) == 1


def endpoint_calls(run):
    """``[(request body, answer bytes), ...]`` the notebook's endpoint got and gave: InvokeEndpoint's (real-time,
    serverless), or the S3 objects of the asynchronous requests and their answers."""
    if ENDPOINT_TYPES[run.sdk] != "async":
        calls = run.emu.invocations
        assert calls and all(c["status"] == 200 and c["content_type"] == "application/x-image" for c in calls)
        return [(c["body"], c["response"]) for c in calls]
    calls = run.emu.scoring.async_invocations
    assert calls and all(c["status"] == 200 and c["content_type"] == "application/x-image" for c in calls)
    assert not run.emu.invocations  # nothing went through InvokeEndpoint
    read = [s3_object(run, c["input"]) for c in calls], [s3_object(run, c["output"]) for c in calls]
    return list(zip(*read))


def s3_object(run, uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return run.s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_the_endpoint_answered_test_images(run, tmp_path):
    from medimg import artifacts

    calls = endpoint_calls(run)
    demo = cell_with(run.nb, "builder.invoke(")
    assert len(images_of(demo)) == 1
    test_dir = (run.tmp / "work" / "data" / "breast" / "test" if run.sdk == "v2" else
                run.tmp / "d" / "png" / "test")
    test_files = {open(os.path.join(d, f), "rb").read() for d, _, names in os.walk(test_dir) for f in names
                  if not f.endswith(".json")}
    assert all(body in test_files for body, _ in calls)  # test images only, never train's
    tar = tmp_path / "model.tar.gz"
    job = training_request(run)["TrainingJobName"]
    tar.write_bytes(run.s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/jobs/{job}/output/model.tar.gz")["Body"].read())
    with artifacts.LocalModel(artifacts.safe_extract(str(tar), str(tmp_path / "model"))) as model:
        for body, response in calls:
            got = json.loads(response)["predictions"][0]
            want = model.invoke(body, "application/x-image")["predictions"][0]
            assert got["label"] == want["label"] and got["decision"] == want["decision"]
            for name, p in want["probabilities"].items():
                assert abs(got["probabilities"][name] - p) < 1e-6


def test_the_endpoint_is_of_the_kind_asked_for(run):
    """v2: serverless (ServerlessConfig, no instance); v3: asynchronous (AsyncInferenceConfig: answers and failures
    under the project's prefix; requests uploaded there too)."""
    configs = [r for r in run.emu.scoring.endpoint_config_requests
               if r["EndpointConfigName"].startswith(f"nb{run.sdk}-endpoint-")]
    assert len(configs) == 1
    variant, = configs[0]["ProductionVariants"]
    deploy_cell = text_of(cell_with(run.nb, "builder.deploy("))
    if ENDPOINT_TYPES[run.sdk] == "serverless":
        assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
        assert "InstanceType" not in variant and "AsyncInferenceConfig" not in configs[0]
        assert "serverless: 2048 MB, up to 5 concurrent requests" in deploy_cell
    else:
        output = configs[0]["AsyncInferenceConfig"]["OutputConfig"]
        assert output == {"S3OutputPath": f"s3://{BUCKET}/{PREFIX}/async/outputs",
                          "S3FailurePath": f"s3://{BUCKET}/{PREFIX}/async/failures"}
        assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.large", 1)
        calls = run.emu.scoring.async_invocations
        assert all(c["input"].startswith(f"s3://{BUCKET}/{PREFIX}/async/inputs/nb{run.sdk}-endpoint-") for c in calls)
        assert all(c["output"].startswith(output["S3OutputPath"] + "/") for c in calls)
        assert f"{len(calls)} requests in s3://{BUCKET}/{PREFIX}/async/inputs/" in text_of(
            cell_with(run.nb, "builder.invoke("))
        assert "asynchronous on 1 x ml.m5.large" in deploy_cell


def test_batch_transform_scored_every_test_image_as_train_py_did(run):
    """predictions.csv: one row per test image, its S3 key, the label at the operating point and a probability
    per class equal to train.py's own test predictions within 1e-4; the job as sent and what the cell showed."""
    import pandas as pd

    requests = [r for r in run.emu.scoring.transform_requests if r["TransformJobName"].startswith(f"nb{run.sdk}-")]
    assert len(requests) == 1
    request, name = requests[0], requests[0]["TransformJobName"]
    assert run.sm.describe_transform_job(TransformJobName=name)["TransformJobStatus"] == "Completed"
    assert request["TransformInput"]["ContentType"] == "application/x-image"
    assert request["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] == "ManifestFile"
    assert request["TransformInput"].get("SplitType", "None") == "None" and request["MaxPayloadInMB"] == 6
    assert request["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/{PREFIX}/batch/{name}/output"
    metrics = json.loads(job_output(run, "output.tar.gz")["metrics.json"])
    saved = metrics["test_predictions"]
    table = pd.read_csv(run.tmp / "work" / "batch" / "predictions.csv")
    assert list(table.columns) == ["s3_key", "label"] + [f"p_{c}" for c in metrics["classes"]]
    channel = next(c for c in training_request(run)["InputDataConfig"] if c["ChannelName"] == "test")
    prefix = channel["DataSource"]["S3DataSource"]["S3Uri"][len(f"s3://{BUCKET}/"):]
    assert sorted(table["s3_key"]) == sorted(prefix + image for image in saved["images"])  # one row per image
    index = {prefix + image: i for i, image in enumerate(saved["images"])}
    for row in table.itertuples(index=False):
        want = saved["probabilities"][index[row.s3_key]]
        got = [getattr(row, f"p_{c}") for c in metrics["classes"]]
        assert np.allclose(got, want, atol=1e-4), (row.s3_key, got, want)
    shown = text_of(cell_with(run.nb, "transform.plan("))
    assert f"{len(table)} rows in" in shown and re.search(rf"\d+ of {len(table)} answers at the operating point", shown)
    assert "not images, not sent: label_dict.json" in shown  # the channel's class names were not scored


def test_cleanup_deleted_what_deploy_created(run):
    names = [e["EndpointName"] for e in run.sm.list_endpoints()["Endpoints"]]
    assert not [n for n in names if n.startswith(f"nb{run.sdk}")]
    record = json.loads((run.tmp / "work" / "resources.json").read_text())
    assert record["endpoints"] == [] and record["training_jobs"] == [training_request(run)["TrainingJobName"]]
    assert record["transform_jobs"] == []
    cleanup = text_of(cell_with(run.nb, "cleanup.delete_endpoint_resources"))
    for what in ("endpoint", "endpoint config", "model"):
        assert re.search(rf"^{what} nb{run.sdk}-endpoint-\S+: deleted$", cleanup, re.MULTILINE), cleanup
    assert re.search(rf"^transform job nb{run.sdk}-transform-\S+: Completed, nothing to stop$", cleanup, re.MULTILINE)
    assert re.search(rf"^model nb{run.sdk}-transform-\S+: deleted$", cleanup, re.MULTILINE), cleanup
    models = [m["ModelName"] for m in run.sm.list_models()["Models"]]
    assert not [m for m in models if m.startswith((f"nb{run.sdk}-endpoint-", f"nb{run.sdk}-transform-"))]


def test_no_credentials_in_outputs_or_logs(run):
    logs = "".join(r.log for r in run.emu.jobs.values())
    for secret in FAKE_CREDENTIALS.values():
        assert secret not in run.raw and secret not in logs and secret not in run.stderr


# ---------------------------------------------------------------- after the job: MLflow, Model Registry
def served(run):
    """The requests the run's endpoint answered: InvokeEndpoint's (real-time, serverless) or InvokeEndpointAsync's."""
    return run.emu.scoring.async_invocations if ENDPOINT_TYPES[run.sdk] == "async" else run.emu.invocations


def test_the_job_is_one_mlflow_run_or_one_warning_when_the_server_is_unreachable(run):
    """v2 tracks to a real MLflow server: one run with params, val_auc at every epoch, the test metrics with their
    intervals, the job's name, metrics.json and the figures; v3 to a closed port: one warning line, and every
    later cell still ran."""
    job = training_request(run)["TrainingJobName"]
    cell = text_of(cell_with(run.nb, "tracking.log_training_job("))
    if run.sdk == "v3":
        warnings = [line for line in cell.splitlines() if "WARNING" in line]
        assert len(warnings) == 1 and job in warnings[0] and "unaffected" in warnings[0], cell
        assert "Traceback" not in cell and "127.0.0.1" in warnings[0]
        assert len(images_of(cell_with(run.nb, "plots.roc_curves"))) == 2  # the results are there
        assert served(run) and "clean-up done" in text_of(cell_with(run.nb, "cleanup.delete_endpoint"))
        return
    client = run.mlflow.client()
    experiment = client.get_experiment_by_name("nbtest-v2")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`sagemaker.training_job_name` = '{job}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", cell
    data, run_id = runs[0].data, runs[0].info.run_id
    metrics = json.loads(job_output(run, "output.tar.gz")["metrics.json"])
    as_sent = {k: v if isinstance(v, str) else json.dumps(v) for k, v in SENT.items()}  # strings bare, rest JSON
    assert {k: data.params[k] for k in SENT} == as_sent  # the hyperparameters sent
    assert json.loads(data.params["plan.epochs"]) == metrics["plan"]["epochs"] == 3
    history = client.get_metric_history(run_id, "val_auc")
    assert [(m.step, round(m.value, 6)) for m in history] == [(h["epoch"], round(h["val_auc"], 6))
                                                              for h in metrics["history"]]
    assert data.metrics["test_auc"] == pytest.approx(metrics["test"]["auc"])
    low, high = metrics["test"]["ci95"]["auc"]
    assert (data.metrics["test_auc_ci95_lower"], data.metrics["test_auc_ci95_upper"]) == pytest.approx((low, high))
    assert data.metrics["test_op_sensitivity"] == pytest.approx(metrics["test"]["operating_point"]["sensitivity"])
    assert data.tags["sagemaker.training_job_name"] == job and data.tags["mlflow.runName"] == job
    assert data.tags["sagemaker.training_job_arn"].endswith(f":training-job/{job}")
    assert data.tags["sagemaker.model_data"] == f"s3://{BUCKET}/{PREFIX}/jobs/{job}/output/model.tar.gz"
    assert "metrics.json" in [a.path for a in client.list_artifacts(run_id)]
    figures = [a.path for a in client.list_artifacts(run_id, "figures")]
    assert len(figures) >= 3 and all(f.endswith(".png") for f in figures), figures
    tuning = client.search_runs([experiment.experiment_id], filter_string="tags.`sagemaker.tuning_job_name` LIKE 'nbv2%'")
    assert len(tuning) == 1 and "mlflow.parentRunId" not in tuning[0].data.tags  # the tuning job's parent run


def test_the_approved_package_holds_the_model_and_its_statistics_and_the_endpoint_serves_it(run):
    job = training_request(run)["TrainingJobName"]
    packages = run.sm.list_model_packages(ModelPackageGroupName=f"nbtest-{run.sdk}")["ModelPackageSummaryList"]
    assert len(packages) == 1 and packages[0]["ModelApprovalStatus"] == "Approved"
    package = run.sm.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["Image"].endswith("/pytorch-inference:2.6.0-cpu-py312")  # what deploy serves on (ml.m5.large)
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/{PREFIX}/jobs/{job}/output/model.tar.gz"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert "application/x-image" in package["InferenceSpecification"]["SupportedContentTypes"]
    assert package["CustomerMetadataProperties"]["training_job"] == job
    statistics = package["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["S3Uri"] == f"s3://{BUCKET}/{PREFIX}/registry/nbtest-{run.sdk}/{job}/model_quality.json"
    quality = json.loads(run.s3.get_object(Bucket=BUCKET, Key=statistics["S3Uri"][len(f"s3://{BUCKET}/"):])["Body"]
                         .read())
    metrics = json.loads(job_output(run, "output.tar.gz")["metrics.json"])
    auc = quality["binary_classification_metrics"]["auc"]
    assert auc["value"] == pytest.approx(metrics["test"]["auc"]) and auc["ci95"] == metrics["test"]["ci95"]["auc"]
    op = metrics["test"]["operating_point"]
    assert quality["binary_classification_metrics"]["true_positive_rate"]["value"] == pytest.approx(op["sensitivity"])
    assert quality["evaluation"]["split"] == "test" and quality["evaluation"]["training_job"] == job
    assert served(run) and {c["model_package"] for c in served(run)} == {package["ModelPackageArn"]}
    assert "InService" in text_of(cell_with(run.nb, "mlops.deploy_package("))


# ---------------------------------------------------------------- the committed notebook
@pytest.fixture(scope="module")
def committed():
    return nbformat.read(NOTEBOOK, as_version=4)


def parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    return cells[0]


def test_committed_notebook_has_no_outputs_and_no_credentials(committed):
    nbformat.validate(committed)
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    text = open(NOTEBOOK, encoding="utf-8").read()
    assert not re.search(r"(A3T|AKIA|ASIA)[A-Z0-9]{16}", text)
    assert not re.search(r"aws_secret_access_key|aws_session_token|SecretAccessKey", text, re.IGNORECASE)


def test_the_notebooks_hyperparameters_are_train_pys_defaults(committed):
    """The dict shows the usual knobs at train.py's own defaults, so nothing is sent unless the user changes it, and
    a default changed in train.py reaches every notebook user."""
    params = {}
    exec(parameters_cell(committed).source, {}, params)  # plain assignments only
    hps = params["hyperparameters"]
    defaults = hyperparameters.defaults()
    assert changed_hyperparameters(hps, defaults) == {}
    for name in ("model", "epochs", "batch-size", "lr", "image-size", "class-weighting", "tta", "seed"):
        assert name in hps, name
    assert (params["instance_type"], params["instance_count"], params["mode"]) == ("ml.g5.xlarge", 1, "spot")
    assert (params["framework_version"], params["py_version"], params["sdk"]) == ("2.8.0", "py312", "auto")
    assert params["role"] is None and params["bucket"] is None and not params["enable_network_isolation"]
    assert (params["input_mode"], params["data_format"]) == ("File", "images")  # the SDKs' own default, and files
    JobSpec(role="r", hyperparameters=changed_hyperparameters(hps, defaults), output_path="s3://b/o",
            code_location="s3://b/c", base_job_name="b", mode=params["mode"], input_mode=params["input_mode"],
            data_format=params["data_format"])


def test_parameters_cell_holds_only_assignments(committed):
    tree = ast.parse(parameters_cell(committed).source)
    assert all(isinstance(node, ast.Assign) for node in tree.body)


def test_no_sys_path_edits_in_the_notebook(committed):
    assert not any("sys.path" in c.source for c in committed.cells if c.cell_type == "code")
