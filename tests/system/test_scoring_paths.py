"""Large images through every serving path, both SDK majors, against the emulator (tests/support/emulator_scoring.py): a
16-bit 2048 px PNG (about 8 MB) and a DICOM-sized 16-bit one (3000 x 2500 px, about 15 MB) next to a small image.

- batch transform: served, MaxPayloadInMB fitted to the largest image and the serving model's container limits
  raised to match; the answers equal the model's own; a job without those limits fails as SageMaker fails it;
- real-time and serverless: refused by the client in one line naming the paths that take them (and by SageMaker,
  emulated, if sent anyway); small images answered; serverless settings as sent;
- asynchronous: served through S3 (the request an S3 object, the answer written to S3), a corrupt image's failure
  read back as one line;
- the same under SDK v3 (tests/support/scoring_probe_v3.py in .venv-sdk3).
"""
import io
import json
import os
import subprocess
import sys
import tarfile
import types

import numpy as np
import pytest
from PIL import Image

from conftest import CODE, ROOT, make_dataset
from medimg import scoring, sdk_v2, transform
from medimg.job import INFERENCE_ENVIRONMENT, JobSpec
from medimg.scoring import MB
from sagemaker_emulator import SageMakerEmulator

pytestmark = pytest.mark.slow  # real processes: a training run, model servers, the emulator

SDK3_PYTHON = os.path.join(ROOT, ".venv-sdk3", "bin", "python")
ROLE = "arn:aws:iam::123456789012:role/R"
BUCKET = "scoring-bucket"
IMAGES = ("big_16bit_2048.png", "dicom_sized.png", "small.png")  # the archive's images, in key order


def noise_png(path, shape, seed):
    """A 16-bit grey PNG of noise (it does not compress: about 2 bytes a pixel)."""
    pixels = np.random.default_rng(seed).integers(0, 65535, shape, dtype=np.uint16)
    Image.fromarray(pixels).save(path)
    return str(path)


def train_tiny_model(root, data):
    """train.py for one epoch: the model dir it writes (model.pth, model_config.json, code/)."""
    model_dir = root / "model"
    cmd = [sys.executable, os.path.join(CODE, "train.py"), "--epochs", "1", "--batch-size", "16", "--ema", "0",
           "--patience", "0", "--train", os.path.join(data, "train"), "--val", os.path.join(data, "val"),
           "--model-dir", str(model_dir), "--output-data-dir", str(root / "out" / "data"),
           "--output-dir", str(root / "out"), "--checkpoint-dir", "",
           "--label-dict", os.path.join(data, "label_dict.json")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    return str(model_dir)


def tar_of(folder):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(os.listdir(folder)):
            tar.add(os.path.join(folder, name), arcname=name)
    return buf.getvalue()


def own_answers(model_dir, bodies):
    """What the model's handlers answer for each body, called here as the container calls them."""
    import inference

    saved = os.environ.get(inference.MAX_REQUEST_BYTES_ENV)
    os.environ[inference.MAX_REQUEST_BYTES_ENV] = str(64 * MB)
    try:
        model = inference.model_fn(model_dir)
        return {name: inference.predict_fn(inference.input_fn(body, "application/x-image"), model)["predictions"][0]
                for name, body in bodies.items()}
    finally:
        os.environ.pop(inference.MAX_REQUEST_BYTES_ENV) if saved is None else os.environ.update(
            {inference.MAX_REQUEST_BYTES_ENV: saved})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scoring")
    data = make_dataset(tmp / "data", counts={"train": 12, "val": 4, "test": 1})
    model_dir = train_tiny_model(tmp, data)
    files = {"big_16bit_2048.png": noise_png(tmp / "big.png", (2048, 2048), 1),
             "dicom_sized.png": noise_png(tmp / "dicom.png", (3000, 2500), 2),
             "small.png": os.path.join(data, "test", "pneumonia", "0.png")}
    bodies = {name: open(path, "rb").read() for name, path in files.items()}
    assert 6 * MB < len(bodies["big_16bit_2048.png"]) < 10 * MB and len(bodies["dicom_sized.png"]) > 14 * MB
    corrupt = tmp / "corrupt.png"
    corrupt.write_bytes(bodies["small.png"][:40])
    reference = own_answers(model_dir, bodies)
    with SageMakerEmulator(tmp / "emulator", python_v3=SDK3_PYTHON) as emu:
        saved = os.environ.get("AWS_ENDPOINT_URL")
        os.environ["AWS_ENDPOINT_URL"] = emu.url  # for the SDK's clients in this process
        try:
            import boto3

            s3 = emu.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            s3.put_object(Bucket=BUCKET, Key="p/model/model.tar.gz", Body=tar_of(model_dir))
            for name, body in bodies.items():
                s3.put_object(Bucket=BUCKET, Key=f"p/archive/{name}", Body=body)
            s3.put_object(Bucket=BUCKET, Key="p/archive/label_dict.json", Body=b'{"0": "normal", "1": "pneumonia"}')
            spec = dict(role=ROLE, hyperparameters={}, output_path=f"s3://{BUCKET}/p/jobs", source_dir=CODE,
                        code_location=f"s3://{BUCKET}/p/code", base_job_name="scoring", mode="on-demand")
            yield types.SimpleNamespace(
                emu=emu, s3=s3, sm=emu.client("sagemaker"), runtime=emu.client("sagemaker-runtime"), tmp=tmp,
                session=sdk_v2.make_session(boto3.Session(region_name="us-east-1"), default_bucket=BUCKET),
                spec_kwargs=spec, spec=JobSpec(**spec), model_data=f"s3://{BUCKET}/p/model/model.tar.gz",
                archive=f"s3://{BUCKET}/p/archive/", files=files, bodies=bodies, reference=reference,
                corrupt=str(corrupt), repack=f"s3://{BUCKET}/p/models")
        finally:
            if saved is None:
                os.environ.pop("AWS_ENDPOINT_URL", None)
            else:
                os.environ["AWS_ENDPOINT_URL"] = saved


def same_answer(got, want):
    assert (got.get("label"), got.get("decision")) == (want["label"], want["decision"])
    for name, p in want["probabilities"].items():
        assert abs(got["probabilities"][name] - p) < 1e-6, (name, got, want)


def payload_mb(world):
    return -(-len(world.bodies["dicom_sized.png"]) // MB)


# ---------------------------------------------------------------- batch transform
def test_v2_transform_serves_dicom_sized_images_as_the_model_answers_them(world):
    batch = transform.plan(world.s3, world.archive, f"s3://{BUCKET}/p/batch/v2", out=lambda m: None)
    assert batch.images == IMAGES and batch.skipped == ("label_dict.json",)
    assert batch.max_payload_mb == payload_mb(world) > 6
    _, name = sdk_v2.transform(world.spec, world.model_data, world.session, batch, job_name="v2-transform",
                               repack_location=world.repack)
    transform.wait(world.sm, name, poll=1, out=lambda m: None)
    request = next(r for r in world.emu.scoring.transform_requests if r["TransformJobName"] == name)
    assert request["MaxPayloadInMB"] == batch.max_payload_mb and request["BatchStrategy"] == "SingleRecord"
    assert request["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": batch.manifest_uri}},
        "ContentType": "application/x-image", "SplitType": "None"}
    environment = world.sm.describe_model(ModelName=name)["PrimaryContainer"]["Environment"]
    limit = str(batch.max_payload_mb * MB)
    assert (environment["INFERENCE_MAX_REQUEST_BYTES"], environment["TS_MAX_REQUEST_SIZE"]) == (limit, limit)
    table = transform.collect(world.s3, batch)
    assert list(table["s3_key"]) == [f"p/archive/{image}" for image in IMAGES]
    for row, image in zip(table.to_dict(orient="records"), IMAGES):
        want = world.reference[image]
        assert row["label"] == want["label"]
        assert all(abs(row[f"p_{c}"] - p) < 1e-6 for c, p in want["probabilities"].items())


def test_a_transform_job_fails_as_sagemaker_fails_it_on_images_above_its_limits(world):
    """A model without the container limits and MaxPayloadInMB 10: the 8 MB image is refused by TorchServe inside
    the container (413), the 15 MB one by SageMaker before it; the small one is answered, and the job fails after
    all of them, its FailureReason naming the first failure and counting them."""
    batch = transform.plan(world.s3, world.archive, f"s3://{BUCKET}/p/batch/bare", out=lambda m: None)
    world.sm.create_model(ModelName="bare", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "pytorch-inference:2.6.0-cpu-py312", "ModelDataUrl": world.model_data,
        "Environment": dict(INFERENCE_ENVIRONMENT)})
    world.sm.create_transform_job(
        TransformJobName="bare", ModelName="bare", MaxPayloadInMB=10, BatchStrategy="SingleRecord",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": batch.manifest_uri}},
                        "ContentType": "application/x-image", "SplitType": "None"},
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/p/batch/bare/output", "Accept": "application/json"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
    with pytest.raises(transform.TransformFailed) as err:
        transform.wait(world.sm, "bare", poll=1, out=lambda m: None)
    big, dicom = (len(world.bodies[name]) for name in ("big_16bit_2048.png", "dicom_sized.png"))
    assert str(err.value) == (
        f"transform job bare failed: ClientError: {BUCKET}/p/archive/big_16bit_2048.png: the model answered 413: the "
        f"request body of {big} bytes is above TorchServe's max_request_size (6553500 bytes); set TS_MAX_REQUEST_SIZE "
        "in the model's environment (2 objects failed)")
    assert world.emu.scoring.transforms["bare"].failures[1] == (
        f"ClientError: {BUCKET}/p/archive/dicom_sized.png: the object is {dicom} bytes, above MaxPayloadInMB=10 with "
        "SplitType None")
    outputs = world.s3.list_objects_v2(Bucket=BUCKET, Prefix="p/batch/bare/output/").get("Contents", [])
    assert [o["Key"].rsplit("/", 1)[-1] for o in outputs] == ["small.png.out"]  # only what succeeded


def test_the_client_refuses_an_image_above_max_payload_before_any_job(world):
    before = len(world.emu.scoring.transform_requests)
    with pytest.raises(scoring.PayloadTooLarge) as err:
        transform.plan(world.s3, world.archive, f"s3://{BUCKET}/p/batch/never", max_payload_mb=10, out=lambda m: None)
    size = len(world.bodies["dicom_sized.png"])
    assert str(err.value) == (f"{world.archive}dicom_sized.png is {scoring.size_text(size)} ({size:,} bytes), above "
                              f"the 10 MB a batch transform request carries (MaxPayloadInMB; SageMaker allows up to "
                              f"100); raise max_payload_mb to {payload_mb(world)}")
    assert len(world.emu.scoring.transform_requests) == before


# ---------------------------------------------------------------- endpoints (SDK v2)
def test_v2_realtime_refuses_large_images_in_one_line_and_answers_small_ones(world):
    from botocore.exceptions import ClientError

    predictor = sdk_v2.deploy(world.spec, world.model_data, world.session, endpoint_name="v2-realtime",
                              repack_location=world.repack, poll=1)
    same_answer(sdk_v2.invoke(predictor, world.bodies["small.png"])["predictions"][0], world.reference["small.png"])
    for image in ("big_16bit_2048.png", "dicom_sized.png"):
        body = world.bodies[image]
        with pytest.raises(scoring.PayloadTooLarge) as err:
            sdk_v2.invoke(predictor, body)
        assert str(err.value) == (
            f"the request is {scoring.size_text(len(body))} ({len(body):,} bytes), above the 6 MB a real-time endpoint "
            "takes (SageMaker's limit); send it to an asynchronous endpoint (endpoint_type='async', up to 1 GB) or "
            "batch transform (up to 100 MB per image), or downscale it")
    assert all(len(call["body"]) < MB for call in world.emu.invocations)  # nothing large was sent
    with pytest.raises(ClientError, match="above the maximum of 6291456 bytes"):  # SageMaker's own refusal
        world.runtime.invoke_endpoint(EndpointName="v2-realtime", Body=world.bodies["big_16bit_2048.png"],
                                      ContentType="application/x-image")
    sdk_v2.delete(world.session, "v2-realtime", out=lambda line: None)


def test_v2_async_serves_large_images_through_s3_and_reads_failures_back(world):
    serving = scoring.Serving("async", async_path=f"s3://{BUCKET}/p/async")
    predictor = sdk_v2.deploy(world.spec, world.model_data, world.session, endpoint_name="v2-async",
                              repack_location=world.repack, serving=serving, poll=1)
    config = next(r for r in world.emu.scoring.endpoint_config_requests if r["EndpointConfigName"] == "v2-async")
    assert config["AsyncInferenceConfig"]["OutputConfig"] == {"S3OutputPath": f"s3://{BUCKET}/p/async/outputs",
                                                              "S3FailurePath": f"s3://{BUCKET}/p/async/failures"}
    environment = world.sm.describe_model(ModelName="v2-async")["PrimaryContainer"]["Environment"]
    assert environment["TS_MAX_REQUEST_SIZE"] == environment["INFERENCE_MAX_REQUEST_BYTES"] == str(1024 * MB)
    pending = {image: sdk_v2.invoke_async(predictor, scoring.upload_request(
        world.s3, world.bodies[image], f"{serving.input_path}/{image}")) for image in IMAGES}
    for image, request in pending.items():
        assert request.output_location == f"{serving.output_path}/{request.inference_id}.out"
        same_answer(scoring.wait_for_answer(world.s3, request, poll=1, timeout=120)["predictions"][0],
                    world.reference[image])
    failing = sdk_v2.invoke_async(predictor, scoring.upload_request(
        world.s3, open(world.corrupt, "rb").read(), f"{serving.input_path}/corrupt.png"))
    with pytest.raises(scoring.AsyncInferenceFailed) as err:
        scoring.wait_for_answer(world.s3, failing, poll=1, timeout=120)
    assert str(err.value).startswith(f"asynchronous request {failing.inference_id} failed: the request body is not "
                                     "a readable PNG, JPEG, TIFF, BMP, GIF or WebP image")
    assert str(err.value).endswith(f"({serving.failure_path}/{failing.inference_id}-error.out)")
    calls = [c for c in world.emu.scoring.async_invocations if c["endpoint"] == "v2-async"]
    assert [(c["content_type"], c["accept"]) for c in calls] == [("application/x-image", "application/json")] * 4
    sdk_v2.delete(world.session, "v2-async", out=lambda line: None)


def test_v2_serverless_endpoint_has_its_settings_and_its_4_mb(world):
    """(Its answers: test_notebook.py's v2 run, and SDK v3's serverless endpoint below.)"""
    from botocore.exceptions import ClientError

    predictor = sdk_v2.deploy(world.spec, world.model_data, world.session, endpoint_name="v2-serverless",
                              repack_location=world.repack, serving=scoring.Serving("serverless", 3072, 7), poll=1)
    config = next(r for r in world.emu.scoring.endpoint_config_requests if r["EndpointConfigName"] == "v2-serverless")
    assert config["ProductionVariants"][0]["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 7}
    assert "InstanceType" not in config["ProductionVariants"][0]
    assert world.sm.describe_model(ModelName="v2-serverless")["PrimaryContainer"]["Image"].endswith(
        "/pytorch-inference:2.6.0-cpu-py312")  # serverless runs on CPU
    with pytest.raises(scoring.PayloadTooLarge, match="above the 4 MB a serverless endpoint takes"):
        sdk_v2.invoke(predictor, world.bodies["big_16bit_2048.png"], endpoint_type="serverless")
    with pytest.raises(ClientError, match="MaxConcurrency 201 is not between 1 and 200"):
        world.sm.create_endpoint_config(EndpointConfigName="too-many", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "v2-serverless",
            "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 201}}])
    sdk_v2.delete(world.session, "v2-serverless", out=lambda line: None)


# ---------------------------------------------------------------- SDK v3
def test_v3_serverless_async_and_transform(world):
    assert os.path.exists(SDK3_PYTHON), f"{SDK3_PYTHON} is missing: make install builds .venv-sdk3"
    params = {"bucket": BUCKET, "model_data": world.model_data, "archive": world.archive,
              "work": f"s3://{BUCKET}/p/v3", "spec": dict(world.spec_kwargs), "corrupt": world.corrupt,
              "small": world.files["small.png"], "big": world.files["dicom_sized.png"]}
    probe = subprocess.run([SDK3_PYTHON, os.path.join(ROOT, "tests", "support", "scoring_probe_v3.py")], cwd=ROOT,
                           input=json.dumps(params), env=world.emu.env(), capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr[-5000:]
    out = json.loads(probe.stdout)
    serverless, answered = out["serverless"], world.reference["small.png"]
    same_answer(serverless["answer"]["predictions"][0], answered)
    assert "above the 4 MB a serverless endpoint takes" in serverless["refused"]
    assert serverless["model"]["Image"].endswith("/pytorch-inference:2.6.0-cpu-py312")
    config = next(r for r in world.emu.scoring.endpoint_config_requests if r["EndpointConfigName"] == "v3-serverless")
    assert config["ProductionVariants"][0]["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 7}
    asynchronous = out["async"]
    for answer, image in zip(asynchronous["answers"], ("dicom_sized.png", "small.png")):
        same_answer(answer["predictions"][0], world.reference[image])
    assert "the request body is not a readable" in asynchronous["failed"]
    assert "above the 6 MB a real-time endpoint takes" in asynchronous["realtime_refused"]
    assert asynchronous["model"]["Environment"]["TS_MAX_REQUEST_SIZE"] == str(1024 * MB)
    assert asynchronous["model"]["ModelDataUrl"] == world.model_data  # as it is: v3 does not repack
    config = next(r for r in world.emu.scoring.endpoint_config_requests if r["EndpointConfigName"] == "v3-async")
    assert config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == f"s3://{BUCKET}/p/v3/async/outputs"
    assert serverless["deleted"] == asynchronous["deleted"] == {"endpoint": True, "endpoint_config": True,
                                                                "model": True}
    batch = out["transform"]
    assert batch["max_payload_mb"] == payload_mb(world)
    assert batch["model"]["Environment"]["TS_MAX_REQUEST_SIZE"] == str(payload_mb(world) * MB)
    request = next(r for r in world.emu.scoring.transform_requests if r["TransformJobName"] == batch["job"])
    assert request["TransformInput"]["ContentType"] == "application/x-image"
    assert [row["s3_key"] for row in batch["rows"]] == [f"p/archive/{image}" for image in IMAGES]
    for row, image in zip(batch["rows"], IMAGES):
        assert row["label"] == world.reference[image]["label"]
        assert all(abs(row[f"p_{c}"] - p) < 1e-6 for c, p in world.reference[image]["probabilities"].items())
