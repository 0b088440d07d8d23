"""medimg/artifacts.py: safe extraction refuses traversal, absolute paths, links and devices; job artefacts
are downloaded beside each other; metrics and per-sample test probabilities for the ROC curve."""
import io
import os
import tarfile

import pytest

from medimg import artifacts
from conftest import CLASSES


def make_tar(path, members):
    """``members``: [(TarInfo, bytes or None)]."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return str(path)


def file_info(name, mode=0o644):
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def link_info(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


# ---------------------------------------------------------------- safe extraction
def test_extracts_plain_files_and_folders(tmp_path):
    folder = tarfile.TarInfo("code")
    folder.type, folder.mode = tarfile.DIRTYPE, 0o755
    tar = make_tar(tmp_path / "ok.tar.gz", [(file_info("./model.pth"), b"weights"), (folder, None),
                                            (file_info("code/inference.py", 0o4755), b"print()")])
    out = artifacts.safe_extract(tar, str(tmp_path / "out"))
    assert (tmp_path / "out" / "model.pth").read_bytes() == b"weights"
    assert (tmp_path / "out" / "code" / "inference.py").read_bytes() == b"print()"
    assert not os.stat(tmp_path / "out" / "code" / "inference.py").st_mode & 0o4000  # no setuid
    assert out == str(tmp_path / "out")


@pytest.mark.parametrize("bad,why", [
    ((file_info("../escape.txt"), b"x"), "outside"),
    ((file_info("code/../../escape.txt"), b"x"), "outside"),
    ((file_info("/etc/cron.d/evil"), b"x"), "absolute path"),
    ((link_info("model.pth", "/etc/passwd"), None), "symbolic link"),
    ((link_info("code", "../.."), None), "symbolic link"),
    ((link_info("hard", "model.pth", tarfile.LNKTYPE), None), "hard link"),
])
def test_refuses_unsafe_members_and_writes_nothing(tmp_path, bad, why):
    tar = make_tar(tmp_path / "bad.tar.gz", [(file_info("model_config.json"), b"{}"), bad])
    with pytest.raises(artifacts.UnsafeArchive, match=why):
        artifacts.safe_extract(tar, str(tmp_path / "out" / "inner"))
    assert os.listdir(tmp_path / "out" / "inner") == []  # checked before anything is written
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "escape.txt").exists()


def test_refuses_devices_and_fifos(tmp_path):
    for kind in (tarfile.CHRTYPE, tarfile.FIFOTYPE):
        info = tarfile.TarInfo("dev")
        info.type = kind
        tar = make_tar(tmp_path / f"{kind!r}.tar.gz", [(info, None)])
        with pytest.raises(artifacts.UnsafeArchive, match="not a regular file"):
            artifacts.safe_extract(tar, str(tmp_path / "out"))


def test_refuses_a_path_through_an_existing_symlink(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", out / "code")  # left by something else in the target folder
    tar = make_tar(tmp_path / "t.tar.gz", [(file_info("code/inference.py"), b"x")])
    with pytest.raises(artifacts.UnsafeArchive, match="outside"):
        artifacts.safe_extract(tar, str(out))
    assert os.listdir(tmp_path / "elsewhere") == []


# ---------------------------------------------------------------- download
def tar_bytes(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_download_job_artifacts(s3, tmp_path):
    base = "p/jobs/job-1/output/"
    s3.put_object(Bucket="bkt", Key=base + "model.tar.gz", Body=tar_bytes({"model.pth": b"w"}))
    s3.put_object(Bucket="bkt", Key=base + "output.tar.gz", Body=tar_bytes({"metrics.json": b"{}"}))
    got = artifacts.download_job_artifacts(s3, f"s3://bkt/{base}model.tar.gz", str(tmp_path / "dl"))
    assert open(os.path.join(got["model"], "model.pth"), "rb").read() == b"w"
    assert open(os.path.join(got["output"], "metrics.json"), "rb").read() == b"{}"
    s3.delete_object(Bucket="bkt", Key=base + "output.tar.gz")  # a job that wrote no output data
    assert artifacts.download_job_artifacts(s3, f"s3://bkt/{base}model.tar.gz", str(tmp_path / "dl2"))["output"] is None
    with pytest.raises(ValueError, match="expected s3://"):
        artifacts.download_job_artifacts(s3, "s3://bkt/p/jobs/job-1/output/", str(tmp_path / "dl3"))


def test_download_refuses_unsafe_model_tar(s3, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(link_info("model.pth", "/etc/shadow"))
    s3.put_object(Bucket="bkt", Key="j/output/model.tar.gz", Body=buf.getvalue())
    with pytest.raises(artifacts.UnsafeArchive):
        artifacts.download_job_artifacts(s3, "s3://bkt/j/output/model.tar.gz", str(tmp_path / "dl"))


# ---------------------------------------------------------------- metrics and predictions
METRICS = {"classes": CLASSES, "best_epoch": 2,
           "val": {"n": 10, "accuracy": 0.9, "auc": 0.95, "sensitivity": 1.0, "specificity": 0.8,
                   "balanced_accuracy": 0.9, "loss": 0.3, "confusion_matrix": [[4, 1], [0, 5]]},
           "test": {"n": 4, "accuracy": 0.75, "auc": 0.75, "sensitivity": 0.5, "specificity": 1.0,
                    "balanced_accuracy": 0.75, "loss": 0.5, "confusion_matrix": [[2, 0], [1, 1]]}}


def test_metrics_rows_and_table():
    rows = artifacts.metrics_rows(METRICS)
    assert [r["split"] for r in rows] == ["val", "test"] and rows[1]["auc"] == 0.75 and rows[0]["n"] == 10
    table = artifacts.metrics_table(METRICS)
    assert list(table.index) == ["val (chose the epoch: optimistic)", "test"]
    assert table.loc["test", "specificity"] == "1.000" and table.loc["test", "images"] == 4
    with_ci = dict(METRICS, test=dict(METRICS["test"], ci95={"auc": [0.5, 1.0]}))
    assert artifacts.metrics_table(with_ci).loc["test", "AUC"] == "0.750 (0.500-1.000)"
    assert artifacts.metrics_rows({"val": METRICS["val"]})[0]["split"] == "val"


def test_test_predictions_from_metrics_json():
    saved = dict(METRICS, test_predictions={"labels": [0, 1, 1, 0], "probabilities": [[.9, .1], [.2, .8], [.6, .4],
                                                                                      [.7, .3]]})
    labels, probs, classes = artifacts.test_predictions(saved)
    assert labels.tolist() == [0, 1, 1, 0] and probs.shape == (4, 2) and classes == CLASSES
    assert artifacts.test_predictions(METRICS) is None  # nothing saved, no model to run


def test_local_model_needs_the_inference_code(tmp_path):
    with pytest.raises(FileNotFoundError, match="inference.py is missing"):
        artifacts.LocalModel(str(tmp_path))
