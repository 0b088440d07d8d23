"""The SDK's own defaults give predictions, not only the notebook's choices: ``estimator.deploy()`` on the notebook's
Estimator (train.py as the entry point, the inference image chosen for a 2.8 training job) and a
``PyTorchModel(...).deploy()`` predictor without serializers (numpy in, numpy out). SDK v2, against the emulator,
with a job that really trained."""
import glob
import io
import os

import numpy as np
import pytest
from PIL import Image

from conftest import CODE, make_dataset
from medimg import artifacts, s3_data
from medimg.job import JobSpec
from sagemaker_emulator import SageMakerEmulator

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

ROLE = "arn:aws:iam::123456789012:role/R"
BUCKET = "defaults-bucket"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("defaults")
    data = make_dataset(tmp / "data", counts={"train": 16, "val": 6, "test": 4})
    with SageMakerEmulator(tmp / "emulator") as emu:
        saved = os.environ.get("AWS_ENDPOINT_URL")
        os.environ["AWS_ENDPOINT_URL"] = emu.url  # for the SDK's clients in this process
        try:
            import boto3
            import sagemaker

            from medimg.sdk_v2 import Estimator

            session = sagemaker.Session(
                boto_session=boto3.Session(region_name="us-east-1"), default_bucket=BUCKET,
                sagemaker_config={"SchemaVersion": "1.0",
                                  "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}})
            session.default_bucket()
            inputs, _ = s3_data.upload_channels(emu.client("s3"), data, f"s3://{BUCKET}/p/data", "d", log=lambda m: 0)
            from medimg import sdk_v2

            spec = JobSpec(role=ROLE, hyperparameters={"epochs": 2, "batch-size": 16},
                           output_path=f"s3://{BUCKET}/p/jobs", code_location=f"s3://{BUCKET}/p/code",
                           base_job_name="dflt", source_dir=CODE, mode="on-demand")
            estimator = sdk_v2.build_estimator(spec, session)
            assert isinstance(estimator, Estimator)
            estimator.fit(inputs, job_name="dflt-job", wait=False)
            emu.wait_for_jobs()
            assert emu.jobs["dflt-job"].returncode == 0, emu.jobs["dflt-job"].log[-3000:]
            local = artifacts.download_job_artifacts(emu.client("s3"), estimator.model_data, str(tmp / "artifacts"))
            yield emu, session, estimator, data, local["model"]
        finally:
            if saved is None:
                os.environ.pop("AWS_ENDPOINT_URL", None)
            else:
                os.environ["AWS_ENDPOINT_URL"] = saved


def held_out_images(data):
    paths = sorted(glob.glob(os.path.join(data, "test", "*", "*.png")))
    return paths, np.stack([np.asarray(Image.open(p)) for p in paths])


def expected_probabilities(model_dir, paths):
    with artifacts.LocalModel(model_dir) as model:
        return model.predict_files(paths)


def test_estimator_deploy_with_the_sdk_defaults(job):
    emu, session, estimator, data, model_dir = job
    # wait=False only because the SDK's waiter sleeps 30 s before its first look; the emulated endpoint is ready
    predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.m5.large", wait=False)
    paths, pixels = held_out_images(data)
    got = predictor.predict(pixels)  # PyTorchPredictor: NumpySerializer in, NumpyDeserializer out
    assert isinstance(got, np.ndarray) and got.shape == (len(paths), 2)
    np.testing.assert_allclose(got, expected_probabilities(model_dir, paths), atol=1e-5)
    call = emu.invocations[-1]
    assert (call["content_type"], call["accept"], call["status"]) == ("application/x-npy", "application/x-npy", 200)
    container = session.sagemaker_client.describe_model(ModelName=predictor.endpoint_name)["PrimaryContainer"]
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "train.py"  # the SDK's default: the training script
    assert container["Image"].endswith("/pytorch-inference:2.6.0-cpu-py312")  # not the missing 2.8.0 image
    predictor.delete_endpoint()


def test_a_pytorch_model_predictor_without_serializers(job):
    from sagemaker.pytorch import PyTorchModel

    emu, session, estimator, data, model_dir = job
    model = PyTorchModel(model_data=estimator.model_data, role=ROLE, entry_point="inference.py", source_dir=CODE,
                         framework_version="2.6.0", py_version="py312", sagemaker_session=session)
    predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large", wait=False)
    paths, pixels = held_out_images(data)
    got = predictor.predict(pixels[0])  # one (H, W) image
    assert got.shape == (1, 2) and abs(float(got.sum()) - 1) < 1e-5
    np.testing.assert_allclose(got, expected_probabilities(model_dir, paths[:1]), atol=1e-5)
    predictor.delete_endpoint()


def test_the_notebook_sends_any_training_format_as_raw_image_bytes(job, tmp_path):
    """A TIFF data set's own test images, sent as the notebook's deploy cell sends them (application/x-image)."""
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import IdentitySerializer

    emu, session, estimator, data, model_dir = job
    predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                 serializer=IdentitySerializer("application/x-image"), deserializer=JSONDeserializer(),
                                 wait=False)
    paths, _ = held_out_images(data)
    tiff = tmp_path / "x.tif"
    Image.open(paths[0]).save(tiff)
    buf = io.BytesIO()
    Image.open(paths[0]).save(buf, format="BMP")
    for body in (tiff.read_bytes(), buf.getvalue()):
        answer = predictor.predict(body)["predictions"][0]
        assert answer["label"] in ("normal", "pneumonia")
        np.testing.assert_allclose([answer["probabilities"]["normal"], answer["probabilities"]["pneumonia"]],
                                   expected_probabilities(model_dir, paths[:1])[0], atol=1e-5)
    predictor.delete_endpoint()
