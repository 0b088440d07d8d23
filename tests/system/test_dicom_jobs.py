"""DICOM to an answer, through real processes: scripts/prepare_data.py --dicom converts a tree of learnable DICOM
files (rescaled, windowed, half of them MONOCHROME1) without letting a patient identifier out, scripts/local_train.py
trains on the channels through the real toolkit, and the served model answers with the CSV's class names. The
conversion rules themselves: tests/unit/client/test_dicom.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pydicom", reason="prepare_data --dicom needs pydicom (requirements.txt)")
from conftest import SCRIPTS, run_local_train  # noqa: E402
from dicom_files import read_rows, write_csv, write_dcm  # noqa: E402
from medimg import artifacts  # noqa: E402

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast


def e2e_tree(root, patients=24, per_patient=3):
    """Learnable DICOM files: 'nodule' has a bright square. Stored 4v + 100 with rescale 0.25/-25 gives v back;
    every other file is MONOCHROME1 with stored values inverted, so the converted pictures agree."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(patients):
        label = p % 2
        for k in range(per_patient):
            v = rng.normal(80, 20, (16, 16))
            if label:
                r, c = rng.integers(2, 8, 2)
                v[r:r + 5, c:c + 5] += 120
            v = v.clip(0, 255)
            mono1 = (p + k) % 2 == 1
            stored = 4 * ((255 - v) if mono1 else v) + 100
            rel = f"p{p}/s{k}.dcm"
            write_dcm(root / "dcm" / rel, np.rint(stored), photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
                      patient=f"E2E-{p:03d}", slope=0.25, intercept=-25, center=128, width=256, bits_stored=12)
            rows.append([rel, ["no finding", "nodule"][label]])
    return write_csv(root / "labels.csv", ["file", "label"], rows)


def test_dicom_to_prepared_channels_to_training_to_an_answer(tmp_path):
    csv_path = e2e_tree(tmp_path)
    data = tmp_path / "data"
    result = subprocess.run([sys.executable, os.path.join(SCRIPTS, "prepare_data.py"), "--dicom",
                             str(tmp_path / "dcm"), "--labels", csv_path, "--out", str(data), "--val-fraction",
                             "0.17", "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "E2E-" not in result.stdout + result.stderr
    sizes = {s: len(read_rows(str(data), s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 72 and min(sizes.values()) >= 9
    work = tmp_path / "work"
    run = run_local_train(data, work, ["epochs=2", "batch-size=16", "patience=0"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    metrics = json.loads((work / "output" / "data" / "metrics.json").read_text())
    assert metrics["classes"] == ["no finding", "nodule"]
    image = data / "test" / read_rows(str(data), "test")[0]["image"]
    with artifacts.LocalModel(str(work / "model")) as model:
        answer = model.invoke(image.read_bytes(), "image/png")["predictions"][0]
    assert set(answer["probabilities"]) == {"no finding", "nodule"} and answer["label"] in ("no finding", "nodule")
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-4
