"""medimg/s3_data.py: the upload of a data folder to S3 that happens once per content (manifest of sizes and SHA-256,
content-addressed prefix, a lost file uploaded again), with KMS, and a safe download of a prefix."""
import os

import pytest

from medimg import data_folders, s3_data
from conftest import make_dataset


@pytest.fixture
def data(tmp_path):
    return make_dataset(tmp_path / "tiny", counts={"train": 5, "val": 2, "test": 3})


def keys(s3, prefix=""):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix=prefix).get("Contents", []))


def test_manifest_tracks_content(data):
    first = s3_data.build_manifest(data)
    assert "label_dict.json" in first["files"] and "train/normal/0.png" in first["files"]
    assert len(first["files"]) == 21 and len(first["version"]) == 12
    assert s3_data.build_manifest(data) == first
    with open(os.path.join(data, "test", "normal", "0.png"), "ab") as fh:
        fh.write(b"\0")
    assert s3_data.build_manifest(data)["version"] != first["version"]


def test_upload_once_per_content(data, s3):
    logged = []
    uris, uploaded = s3_data.upload_channels(s3, data, "s3://bkt/p/data", "tiny", log=logged.append)
    version = s3_data.build_manifest(data)["version"]
    assert uploaded and uris == {ch: f"s3://bkt/p/data/tiny-{version}/{ch}/" for ch in ("train", "val", "test")}
    stored = keys(s3, f"p/data/tiny-{version}/")
    assert len(stored) == 22 and f"p/data/tiny-{version}/manifest.json" in stored
    assert f"p/data/tiny-{version}/train/pneumonia/4.png" in stored
    body = s3.get_object(Bucket="bkt", Key=f"p/data/tiny-{version}/train/pneumonia/4.png")["Body"].read()
    assert body == open(os.path.join(data, "train", "pneumonia", "4.png"), "rb").read()

    again, uploaded = s3_data.upload_channels(s3, data, "s3://bkt/p/data", "tiny", log=logged.append)
    assert again == uris and not uploaded and "already in S3" in logged[-1]

    s3.delete_object(Bucket="bkt", Key=f"p/data/tiny-{version}/val/normal/1.png")  # a file lost: upload again
    assert s3_data.upload_channels(s3, data, "s3://bkt/p/data", "tiny", log=logged.append)[1]
    assert f"p/data/tiny-{version}/val/normal/1.png" in keys(s3)

    os.remove(os.path.join(data, "test", "normal", "2.png"))  # other content: another prefix, the old one kept
    uris2, uploaded = s3_data.upload_channels(s3, data, "s3://bkt/p/data", "tiny", log=logged.append)
    assert uploaded and uris2["test"] != uris["test"] and len(keys(s3, f"p/data/tiny-{version}/")) == 22


def test_upload_with_kms(data, s3):
    uris, _ = s3_data.upload_channels(s3, data, "s3://bkt/enc", "tiny", kms_key="alias/medimg", log=lambda m: None)
    head = s3.head_object(Bucket="bkt", Key=uris["train"][len("s3://bkt/"):] + "normal/0.png")
    assert head["ServerSideEncryption"] == "aws:kms"


def test_download_prefix(data, s3, tmp_path):
    uris, _ = s3_data.upload_channels(s3, data, "s3://bkt/p/data", "tiny", log=lambda m: None)
    got = s3_data.download_prefix(s3, uris["test"], str(tmp_path / "test"))
    assert len(got) == 6 and sorted(c for _, c in data_folders.list_images(str(tmp_path / "test"))) == (
        ["normal"] * 3 + ["pneumonia"] * 3)
    assert len(s3_data.download_prefix(s3, uris["train"], str(tmp_path / "few"), max_files=3)) == 3
    s3.put_object(Bucket="bkt", Key="evil/../../outside.png", Body=b"x")
    with pytest.raises(data_folders.ChannelError, match="outside"):
        s3_data.download_prefix(s3, "s3://bkt/evil/", str(tmp_path / "evil"))
