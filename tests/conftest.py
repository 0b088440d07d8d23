"""Shared fixtures and the test environment: fake AWS settings, a tiny class-folder data set, an in-process S3.

AWS is never reached: fake credentials and AWS_EC2_METADATA_DISABLED are set here, before any test module
can import boto3 or sagemaker; tests that need an AWS API start moto's server on 127.0.0.1.

The tiers are folders: tests/unit/code (code/'s own modules, in process), tests/unit/client (medimg and scripts'
logic, in process), tests/unit/repository (the repository's own rules: architecture, documentation, security
scans), tests/system (real processes: the toolkit, SDK v3's drivers, torchrun, the emulator, the notebook, and
training runs), tests/support (what the tests import: data factories, local runs, the SageMaker emulator).
The data factories and the local runner live in tests/support; they are imported here too, so
`from conftest import make_dataset` keeps working.
"""
import os

import pytest

for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true", "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
}.items():
    os.environ[_key] = _value

# Under pytest-xdist (make test: -n 2), the workers' jobs share the cores: each process's torch gets its share of
# threads (unless OMP_NUM_THREADS is set already), as medimg.processes gives each local host its share. Threads of
# several jobs that wait for each other on an oversubscribed machine burn CPU spinning.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

from data_factories import (CLASSES, FINDINGS, make_dataset, make_finding_image, make_image,  # noqa: E402,F401
                            make_multilabel_dataset)
from local_runs import CODE, FAST_HPS, ROOT, SCRIPTS, read_failure, run_local_train  # noqa: E402,F401
from tiny_trainer import RecordingWriter, tiny_trainer  # noqa: E402,F401


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small two-class data set with train/val/test, shared read-only by the tests."""
    return make_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture
def s3():
    """An in-process moto S3 with an empty bucket "bkt"."""
    from moto import mock_aws

    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bkt")
        yield client


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (then as before): a tiny model's steps take milliseconds, where threads
    that wait for each other on a busy machine take a hundred times longer."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
