"""Shared fixtures: synthetic class-folder data sets, a runner for scripts/local_train.py, fake AWS settings.

AWS is never reached: fake credentials and AWS_EC2_METADATA_DISABLED are set here, before any test module
can import boto3 or sagemaker; tests that need an AWS API start moto's server on 127.0.0.1.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true", "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
}.items():
    os.environ[_key] = _value

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = os.path.join(ROOT, "code")  # on sys.path through pyproject.toml's pytest settings, as in the container
SCRIPTS = os.path.join(ROOT, "scripts")

CLASSES = ["normal", "pneumonia"]


def make_image(label, rng, size=16, mode="L"):
    """A grey image with noise; class 1 ('pneumonia') has a bright square, so a tiny model learns it fast."""
    arr = rng.normal(80, 20, (size, size)).clip(0, 255)
    if label == 1:
        r, c = rng.integers(2, size // 2, 2)
        arr[r:r + size // 3, c:c + size // 3] += 120
    arr = arr.clip(0, 255).astype(np.uint8)
    if mode == "L":
        return Image.fromarray(arr, "L")
    if mode == "I;16":
        return Image.fromarray(arr.astype(np.uint16) * 257)  # 16-bit grayscale PNG
    if mode == "RGB":
        return Image.fromarray(np.stack([arr] * 3, -1), "RGB")
    if mode == "RGBA":
        return Image.fromarray(np.stack([arr] * 3 + [np.full_like(arr, 255)], -1), "RGBA")
    raise ValueError(mode)


def make_dataset(root, counts=None, size=16, seed=0, mixed=False):
    """Write root/<split>/<class>/<i>.png. ``counts``: {split: per-class count}. ``mixed``: vary formats."""
    counts = counts or {"train": 40, "val": 12, "test": 12}
    rng = np.random.default_rng(seed)
    modes = ["L", "I;16", "RGB", "RGBA"] if mixed else ["L"]
    for split, n in counts.items():
        for label, name in enumerate(CLASSES):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                mode = modes[i % len(modes)]
                ext = ".jpg" if mixed and mode == "RGB" and i % 3 == 0 else ".png"
                make_image(label, rng, size, mode).save(os.path.join(folder, f"{i}{ext}"))
    with open(os.path.join(root, "label_dict.json"), "w") as fh:
        json.dump({"0": "normal", "1": "pneumonia"}, fh)
    return str(root)


FINDINGS = ["Pleural Effusion", "Nodule", "Cardiomegaly"]


def make_finding_image(target, rng, size=24):
    """A grey image holding the findings ``target`` (0/1 per FINDINGS) as shapes a small CNN learns quickly: a
    bright band at the bottom (effusion), a small bright square somewhere in the top half (nodule), a wide
    central blob (cardiomegaly)."""
    arr = rng.normal(70, 15, (size, size))
    if target[0]:
        arr[-size // 5:, :] += 110
    if target[1]:
        r, c = rng.integers(1, size // 2 - 3), rng.integers(1, size - 4)
        arr[r:r + 3, c:c + 3] += 140
    if target[2]:
        arr[size // 3:2 * size // 3, size // 5:4 * size // 5] += 70
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "L")


def make_multilabel_dataset(root, counts=None, images_per_patient=3, size=24, seed=0, findings=FINDINGS):
    """Manifest channels root/<split>/images/<i>.png + labels.csv (image, one 0/1 column per finding, patient_id);
    each finding present in about 40% of the images, independently; ``images_per_patient`` images per patient."""
    import layout

    counts = counts or {"train": 60, "val": 20}
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        folder = os.path.join(root, split)
        os.makedirs(os.path.join(folder, "images"), exist_ok=True)
        targets = [tuple(int(v) for v in rng.random(len(findings)) < 0.4) for _ in range(n)]
        names = [f"images/{i}.png" for i in range(n)]
        for name, target in zip(names, targets):
            make_finding_image(target, rng, size).save(os.path.join(folder, *name.split("/")))
        patients = [f"{split}-p{i // images_per_patient}" for i in range(n)]
        layout.write_manifest(os.path.join(folder, "labels.csv"), names, findings=findings, values=targets,
                              patients=patients)
    return str(root)


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


# Fast, deterministic settings for runs on the tiny data set.
FAST_HPS = ["epochs=2", "batch-size=16", "ema=0", "patience=0"]


def run_local_train(data, work, hps=(), extra=(), timeout=300, **popen):
    """Run scripts/local_train.py (the real toolkit) and return the CompletedProcess."""
    cmd = [sys.executable, os.path.join(SCRIPTS, "local_train.py"), "--data", str(data), "--out", str(work)]
    cmd += list(extra)
    if hps:
        cmd += ["--hp", *hps]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **popen)


def read_failure(work):
    path = os.path.join(work, "output", "failure")
    with open(path, encoding="utf-8") as fh:
        return fh.read()


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (then as before): a tiny model's steps take milliseconds, where threads
    that wait for each other on a busy machine take a hundred times longer."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordingWriter:
    """What engine.Trainer needs of train.ModelWriter (``save``, ``exists``), keeping copies of what it saved."""

    def __init__(self):
        self.saved = []

    def exists(self):
        return bool(self.saved)

    def save(self, weights):
        self.saved.append({k: v.clone() for k, v in weights.items()})


def tiny_trainer(tmp_path, *flags, n=16, size=8, width=4, seed=0, writer=None, predict=None, callbacks=()):
    """An engine.Trainer in this process, on the CPU, of a tiny CNN (``width`` channels, with BatchNorm, so buffers
    too) on ``n`` random ``size``-pixel grey images of two classes (the same images serve as val): code/'s training
    machinery in milliseconds. ``flags``: train.py's (``--ema``, ``--patience`` ...); checkpoints go to tmp_path/ck.
    ``predict``: in place of the evaluation.SplitPredictor (scripted validation figures)."""
    import torch

    import distributed
    import engine
    import evaluation
    import hyperparameters
    import loaders
    import safeguards
    import schedule
    from channels import ClassNames
    from data import Data

    args = hyperparameters.parse_args(["--model-dir", str(tmp_path / "model"), "--checkpoint-dir", str(tmp_path / "ck"),
                                       "--output-data-dir", str(tmp_path / "out"), "--seed", str(seed), *flags],
                                      environ={})
    images = torch.randint(0, 256, (n, 1, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    split = loaders.CachedSplit(images, torch.arange(n) % 2)
    data = Data(split, split, None, channels=1, size=size, mean=[0.5], std=[0.25], streamed=False,
                classes=ClassNames(CLASSES, "a test"))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, 2))
    dist, device = distributed.DistInfo(), torch.device("cpu")
    plan = schedule.make_plan(args, n)
    return engine.Trainer(args, data, model, model, plan=plan,
                          predict=predict or evaluation.SplitPredictor(args, data, plan, device, dist), device=device,
                          amp_dtype=None, dist_info=dist, writer=writer or RecordingWriter(),
                          stop=safeguards.StopRequest(install_handler=False), callbacks=callbacks)
