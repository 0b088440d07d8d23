"""Credentials in a developer's environment never reach a job's log or artefacts: a run through the real toolkit
(scripts/local_train.py) with AWS credentials in its environment prints and saves none of them. The static scans
(unsafe deserialisation, credentials in the repository): tests/unit/repository/test_security.py."""
import os

import pytest

from conftest import FAST_HPS, make_dataset, run_local_train

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast


def test_credentials_in_the_environment_never_reach_the_log_or_artefacts(tmp_path):
    """A job whose environment holds AWS credentials (as a developer's shell does) prints none of them."""
    data = make_dataset(tmp_path / "data", counts={"train": 12, "val": 4})
    marker_secret, marker_token = "MarkerSecretValue0123456789abcdefXYZ/+Kq", "MarkerSessionToken" + "x" * 120
    env = dict(os.environ, AWS_SECRET_ACCESS_KEY=marker_secret, AWS_SESSION_TOKEN=marker_token)
    work = tmp_path / "work"
    result = run_local_train(data, work, FAST_HPS + ["epochs=1"], env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    texts = {"stdout": result.stdout + result.stderr}
    for dirpath, _, names in os.walk(work):
        if "/code" in dirpath or "/input/data" in dirpath:
            continue
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    texts[os.path.relpath(path, work)] = fh.read().decode("utf-8", "replace")
    assert "logs/train.log" in texts and "model/model_config.json" in texts
    leaks = [where for where, text in texts.items() if marker_secret in text or marker_token in text]
    assert not leaks, leaks
