"""train.ipynb end to end, headless: papermill runs it in a real kernel against SageMaker emulated on
127.0.0.1 (tests/sagemaker_emulator.py: moto, with training jobs and endpoints that really run), in spot
mode, with the local smoke test, tuning and deployment on. Then: what the notebook sent, what landed in S3,
what it showed, and that its clean-up deleted what it deployed. Also the committed notebook's hygiene."""
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
import pytest

from medimg import job_config
import hyperparameters
from conftest import ROOT, make_dataset
from sagemaker_emulator import FAKE_CREDENTIALS, SageMakerEmulator

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

NOTEBOOK = os.path.join(ROOT, "train.ipynb")
ROLE = "arn:aws:iam::123456789012:role/MedImgSageMakerRole"
BUCKET = "medimg-notebook-test"
PREFIX = "nbtest"
HYPERPARAMETERS = {  # as a user would edit them: every value differs from train.py's default
    "model": "smallcnn", "pretrained": False, "epochs": 2, "batch-size": 16, "lr": 0.003, "weight-decay": 0.01,
    "optimizer": "adamw", "warmup-epochs": 0.5, "label-smoothing": 0.05, "class-weighting": "balanced",
    "patience": 0, "ema": 0, "image-size": 0, "augment": True, "hflip": True, "vflip": False, "tta": True,
    "amp": False, "compile": False, "seed": 7,
}


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


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notebook")
    data = make_dataset(tmp / "data" / "tiny", counts={"train": 24, "val": 8, "test": 8})
    params = {
        "role": ROLE, "bucket": BUCKET, "prefix": PREFIX, "region": "us-east-1", "base_job_name": "nbtest",
        "data_dir": data, "work_dir": str(tmp / "work"), "mode": "spot", "wait": True, "poll_seconds": 1,
        "run_local_smoke_test": True, "smoke_test_images_per_class": 6, "run_tuning": True, "tuning_max_jobs": 4,
        "tuning_max_parallel_jobs": 2, "deploy": True, "hyperparameters": HYPERPARAMETERS,
        "tags": {"project": "nbtest", "owner": "ci"},
    }
    params_file = tmp / "params.json"
    params_file.write_text(json.dumps(params))
    executed = tmp / "executed.ipynb"
    with SageMakerEmulator(tmp / "emulator") as emu:
        env = emu.env()
        env["OMP_NUM_THREADS"] = "1"
        env.pop("MPLBACKEND", None)  # the kernel's inline backend turns figures into image/png outputs
        result = subprocess.run(
            [sys.executable, "-m", "papermill", NOTEBOOK, str(executed), "-f", str(params_file), "--cwd", ROOT,
             "-k", "python3", "--no-progress-bar"],
            env=env, capture_output=True, text=True, timeout=900)
        emu.wait_for_jobs()
        nb = nbformat.read(str(executed), as_version=4) if executed.exists() else None
        if result.returncode != 0:
            failed = [text_of(c) for c in (nb.cells if nb else []) if any(
                o.output_type == "error" for o in c.get("outputs", []))]
            pytest.fail(f"papermill failed:\n{result.stderr[-4000:]}\n{''.join(failed)[-6000:]}")
        s3 = emu.client("s3")
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])]
        yield types.SimpleNamespace(emu=emu, nb=nb, keys=keys, s3=s3, sm=emu.client("sagemaker"), tmp=tmp,
                                    data=data, raw=executed.read_text(), stderr=result.stderr)


def training_request(run):
    assert len(run.emu.training_requests) == 1, [r["TrainingJobName"] for r in run.emu.training_requests]
    return run.emu.training_requests[0]


# ---------------------------------------------------------------- what was sent
def test_training_request_carries_the_edited_hyperparameters(run):
    request = training_request(run)
    sent = request["HyperParameters"]
    assert all(isinstance(v, str) for v in sent.values())  # the SDK JSON-encodes every value
    assert {k: json.loads(sent[k]) for k in HYPERPARAMETERS} == HYPERPARAMETERS
    assert json.loads(sent["sagemaker_program"]) == "train.py"
    assert json.loads(sent["sagemaker_submit_directory"]) == (
        f"s3://{BUCKET}/{PREFIX}/code/{request['TrainingJobName']}/source/sourcedir.tar.gz")
    assert "sagemaker_torch_distributed_enabled" not in sent  # one GPU, one instance: no torchrun
    # and train.py accepts them as the toolkit passes them (--key value, sorted)
    argv = [a for k in sorted(HYPERPARAMETERS) for a in (f"--{k}", str(HYPERPARAMETERS[k]))]
    args = hyperparameters.parse_args(argv, environ={})
    assert (args.lr, args.batch_size, args.label_smoothing, args.tta, args.amp) == (0.003, 16, 0.05, True, False)


def test_training_request_spot_checkpoints_metrics_and_placement(run):
    request = training_request(run)
    job = request["TrainingJobName"]
    assert re.fullmatch(r"nbtest-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{3}", job)
    assert request["RoleArn"] == ROLE
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == job_config.METRIC_DEFINITIONS
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("/pytorch-training:2.8.0-gpu-py312")
    assert request["EnableManagedSpotTraining"] is True
    stop = request["StoppingCondition"]
    assert stop["MaxRuntimeInSeconds"] == 4 * 3600 and stop["MaxWaitTimeInSeconds"] >= stop["MaxRuntimeInSeconds"]
    assert request["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/{PREFIX}/checkpoints/{job}"}
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert "KeepAlivePeriodInSeconds" not in request["ResourceConfig"]  # no warm pool with spot
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/{PREFIX}/jobs"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert sorted(channels) == ["test", "train", "val"]
    assert all(re.fullmatch(rf"s3://{BUCKET}/{PREFIX}/data/tiny-[0-9a-f]{{12}}/{ch}/", uri)
               for ch, uri in channels.items()), channels
    assert {"Key": "project", "Value": "nbtest"} in request["Tags"]
    for unset in ("VpcConfig", "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption"):
        assert not request.get(unset), unset  # security settings are sent only when set


def test_tuning_request_maximises_val_auc_over_lr_weight_decay_and_batch_size(run):
    assert len(run.emu.tuning_requests) == 1
    request = run.emu.tuning_requests[0]
    config = request["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val_auc"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2}
    ranges = config["ParameterRanges"]
    assert {r["Name"]: r["ScalingType"] for r in ranges["ContinuousParameterRanges"]} == {
        "lr": "Logarithmic", "weight-decay": "Logarithmic"}
    # framework estimators send categorical values JSON-encoded, as every hyperparameter value
    assert [(r["Name"], [json.loads(v) for v in r["Values"]]) for r in ranges["CategoricalParameterRanges"]] == [
        ("batch-size", ["64", "128", "256"])]
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == job_config.METRIC_DEFINITIONS
    assert "CheckpointConfig" not in definition  # tuning jobs must not share one checkpoint folder
    static = definition["StaticHyperParameters"]
    assert json.loads(static["epochs"]) == 2 and "lr" not in static and "batch-size" not in static


# ---------------------------------------------------------------- what ran and landed in S3
def test_job_ran_for_real_and_left_its_artefacts(run):
    job = training_request(run)["TrainingJobName"]
    assert run.emu.jobs[job].returncode == 0, run.emu.jobs[job].log[-3000:]
    base = f"{PREFIX}/jobs/{job}/output/"
    model = untar(run.s3.get_object(Bucket=BUCKET, Key=base + "model.tar.gz")["Body"].read())
    assert {"model.pth", "model_config.json", "label_dict.json", "code/inference.py"} <= set(model)
    config = json.loads(model["model_config.json"])
    assert config["hyperparameters"]["lr"] == 0.003 and config["hyperparameters"]["seed"] == 7
    output = untar(run.s3.get_object(Bucket=BUCKET, Key=base + "output.tar.gz")["Body"].read())
    metrics = json.loads(output["metrics.json"])
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and metrics["test"]["n"] == 16
    assert any(k.startswith(f"{PREFIX}/checkpoints/{job}/") for k in run.keys)  # spot: synced checkpoints
    assert sum(k.startswith(f"{PREFIX}/data/tiny-") and k.endswith(".png") for k in run.keys) == 80
    assert any(k.startswith(f"{PREFIX}/data/tiny-") and k.endswith("/manifest.json") for k in run.keys)
    assert any(k.startswith(f"{PREFIX}/models/") and k.endswith("model.tar.gz") for k in run.keys)  # repacked


def test_metric_definitions_capture_the_numbers_train_py_logged(run):
    """SageMaker's view of the job (the emulator applies the sent regexes to the real log, as SageMaker does)
    agrees with metrics.json: each definition captured its own number."""
    job = training_request(run)["TrainingJobName"]
    final = {m["MetricName"]: m["Value"] for m in
             run.sm.describe_training_job(TrainingJobName=job)["FinalMetricDataList"]}
    assert set(final) == {d["Name"] for d in job_config.METRIC_DEFINITIONS}
    output = untar(run.s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/jobs/{job}/output/output.tar.gz")["Body"].read())
    metrics = json.loads(output["metrics.json"])
    last, best = metrics["history"][-1], metrics["history"][metrics["best_epoch"] - 1]
    assert final["epoch"] == 2
    assert (final["train_loss"], final["val_loss"]) == (round(last["train_loss"], 4), round(last["val_loss"], 4))
    assert final["lr"] == pytest.approx(last["lr"], rel=1e-5)
    assert final["images_per_sec"] == round(last["images_per_sec"], 1)
    # the last val_auc/val_acc SageMaker sees (the tuner's objective) is the saved best epoch's
    assert (final["val_auc"], final["val_acc"]) == (round(best["val_auc"], 4), round(best["val_acc"], 4))
    assert (final["test_auc"], final["test_acc"]) == (round(metrics["test"]["auc"], 4),
                                                      round(metrics["test"]["accuracy"], 4))


def test_endpoint_ran_the_trained_model(run, tmp_path):
    from medimg import artifacts

    calls = run.emu.invocations
    assert len(calls) == 6 and all(c["status"] == 200 and c["content_type"] == "application/x-image" for c in calls)
    job = training_request(run)["TrainingJobName"]
    tar = tmp_path / "model.tar.gz"
    tar.write_bytes(run.s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/jobs/{job}/output/model.tar.gz")["Body"].read())
    model = artifacts.LocalModel(artifacts.safe_extract(str(tar), str(tmp_path / "model")))
    for call in calls:
        answer = json.loads(call["response"])
        assert len(answer["predictions"]) == 1
        got, want = answer["predictions"][0], model.invoke(call["body"], "image/png")["predictions"][0]
        assert got["label"] == want["label"] and got["index"] == want["index"]
        for name, p in want["probabilities"].items():
            assert abs(got["probabilities"][name] - p) < 1e-6
    assert len({json.loads(c["response"])["predictions"][0]["probabilities"]["pneumonia"] for c in calls}) > 1


def test_cleanup_deleted_what_deploy_created(run):
    assert run.emu.invocations  # something was deployed
    assert run.sm.list_endpoints()["Endpoints"] == []
    assert run.sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert run.sm.list_models()["Models"] == []
    record = json.loads((run.tmp / "work" / "resources.json").read_text())
    assert record["endpoints"] == [] and record["training_jobs"] == [training_request(run)["TrainingJobName"]]
    cleanup = text_of(cell_with(run.nb, "jobs.delete_endpoint_resources"))
    for what in ("endpoint", "endpoint config", "model"):
        assert re.search(rf"^{what} nbtest-endpoint-\S+: deleted$", cleanup, re.MULTILINE), cleanup


# ---------------------------------------------------------------- what the notebook showed
def test_outputs_show_data_log_metrics_and_figures(run):
    nb = run.nb
    assert len(images_of(cell_with(nb, "plots.image_grid(channels.sample_images(sample_dir"))) == 1
    smoke = text_of(cell_with(nb, "medimg.local_train"))
    assert "epoch=1 train_loss=" in smoke and "local_train: job succeeded" in smoke
    assert "accuracy" in smoke and "auc" in smoke
    log = text_of(cell_with(nb, "estimator.fit(inputs"))
    assert re.search(r"epoch=2 train_loss=[0-9.]+ val_loss=[0-9.]+ val_auc=[0-9.]+", log)
    assert "Completed / Completed" in log and "Reporting training SUCCESS" in log
    results = text_of(cell_with(nb, "artifacts.download_job_artifacts"))
    assert "best epoch" in results and re.search(r"^test\s+16\s+[0-9.]+", results, re.MULTILINE), results
    assert len(images_of(cell_with(nb, "plots.learning_curves"))) == 1
    assert len(images_of(cell_with(nb, "plots.roc_curves"))) == 2  # confusion matrix and ROC
    cloudwatch = cell_with(nb, "TrainingJobAnalytics")
    assert "val_auc" in text_of(cloudwatch) and len(images_of(cloudwatch)) == 1
    tuning = text_of(cell_with(nb, "HyperparameterTuner("))
    assert "best job:" in tuning
    predictions = cell_with(nb, "predictor.predict(")
    assert "predicted" in text_of(predictions) and len(images_of(predictions)) == 1


def test_no_credentials_in_outputs_or_logs(run):
    logs = "".join(r.log for r in run.emu.jobs.values())
    for secret in FAKE_CREDENTIALS.values():
        assert secret not in run.raw and secret not in logs and secret not in run.stderr


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


def test_parameters_cell_defaults(committed):
    params = {}
    exec(parameters_cell(committed).source, {}, params)  # plain assignments only
    assert (params["instance_type"], params["instance_count"]) == ("ml.g5.xlarge", 1)
    assert (params["framework_version"], params["py_version"], params["mode"]) == ("2.8.0", "py312", "spot")
    assert params["role"] is None and params["bucket"] is None
    assert not params["enable_network_isolation"] and params["subnets"] is None
    # every hyperparameter is a train.py flag, and train.py parses the defaults as the toolkit passes them
    hps = params["hyperparameters"]
    flags = {o[2:] for a in hyperparameters.build_parser({})._actions for o in a.option_strings}
    assert set(hps) <= flags
    for name in ("model", "epochs", "batch-size", "lr", "weight-decay", "image-size", "pretrained", "patience",
                 "label-smoothing", "class-weighting", "amp", "ema", "augment", "tta", "seed"):
        assert name in hps, name
    argv = [a for k in sorted(hps) for a in (f"--{k}", str(hps[k]))]
    hyperparameters.parse_args(argv, environ={})
    job_config.estimator_kwargs(role="r", hyperparameters=hps, output_path="s3://b/o", code_location="s3://b/c",
                                base_job_name="b", mode=params["mode"])


def test_parameters_cell_holds_only_assignments(committed):
    tree = ast.parse(parameters_cell(committed).source)
    assert all(isinstance(node, ast.Assign) for node in tree.body)
