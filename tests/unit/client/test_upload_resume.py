"""medimg.s3_data.upload_channels resumes an interrupted upload (moto's S3 in this process): the files already under
the content-hashed prefix at their size are kept, the rest uploaded, the manifest written last; under a KMS key only
files encrypted with that key are kept, and data uploaded without it is not taken as done."""
import pytest

from medimg import s3_data
from conftest import make_dataset


@pytest.fixture
def data(tmp_path):
    return make_dataset(tmp_path / "data", counts={"train": 5, "val": 2})  # 14 images + label_dict.json


def keys(s3, prefix):
    return {o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix=prefix).get("Contents", [])}


def interrupt_after(s3, monkeypatch, n):
    """Make the n+1-th upload_file fail, as a dropped connection would; returns the list of uploaded keys."""
    real, done = s3.upload_file, []

    def upload_file(path, bucket, key, **kwargs):
        if len(done) >= n:
            raise ConnectionError("connection dropped")
        real(path, bucket, key, **kwargs)
        done.append(key)

    monkeypatch.setattr(s3, "upload_file", upload_file)
    return done


def test_an_interrupted_upload_resumes_with_the_missing_files(data, s3, monkeypatch):
    version = s3_data.build_manifest(data)["version"]
    base = f"p/data/d-{version}/"
    first = interrupt_after(s3, monkeypatch, 6)
    with pytest.raises(ConnectionError):
        s3_data.upload_channels(s3, data, "s3://bkt/p/data", "d", threads=1, log=lambda m: None)
    assert len(first) == 6 and f"{base}manifest.json" not in keys(s3, base)  # not mistaken for complete
    monkeypatch.undo()
    second, logged = interrupt_after(s3, monkeypatch, 100), []
    uris, uploaded = s3_data.upload_channels(s3, data, "s3://bkt/p/data", "d", threads=1, log=logged.append)
    assert uploaded and sorted(second) == sorted(f"{base}{rel}" for rel in s3_data.build_manifest(data)["files"]
                                                 if f"{base}{rel}" not in first)
    assert logged[0].endswith("(resuming: 6 of 15 already there)") and logged[0].startswith("uploading 9 files")
    assert len(keys(s3, base)) == 16 and uris["train"] == f"s3://bkt/{base}train/"
    third = interrupt_after(s3, monkeypatch, 100)
    assert s3_data.upload_channels(s3, data, "s3://bkt/p/data", "d", log=logged.append) == (uris, False)
    assert third == [] and "already in S3" in logged[-1]


def test_a_file_cut_short_is_uploaded_again(data, s3):
    uris, _ = s3_data.upload_channels(s3, data, "s3://bkt/p/data", "d", log=lambda m: None)
    key = uris["train"][len("s3://bkt/"):] + "normal/0.png"
    s3.put_object(Bucket="bkt", Key=key, Body=b"short")
    _, uploaded = s3_data.upload_channels(s3, data, "s3://bkt/p/data", "d", log=lambda m: None)
    assert uploaded
    with open(f"{data}/train/normal/0.png", "rb") as fh:
        assert s3.get_object(Bucket="bkt", Key=key)["Body"].read() == fh.read()


def test_a_kms_key_keeps_only_files_encrypted_with_it(data, s3, monkeypatch):
    first = interrupt_after(s3, monkeypatch, 5)
    with pytest.raises(ConnectionError):  # the first try without a key
        s3_data.upload_channels(s3, data, "s3://bkt/p/data", "d", threads=1, log=lambda m: None)
    monkeypatch.undo()
    uploaded = interrupt_after(s3, monkeypatch, 100)
    uris, _ = s3_data.upload_channels(s3, data, "s3://bkt/p/data", "d", kms_key="key-1", log=lambda m: None)
    assert set(first) <= set(uploaded) and len(uploaded) == 15  # every file again, now encrypted
    base = uris["train"][len("s3://bkt/"):-len("train/")]
    for key in keys(s3, base):
        head = s3.head_object(Bucket="bkt", Key=key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", "key-1"), key


def test_data_uploaded_without_the_key_is_not_taken_as_done(data, s3):
    s3_data.upload_channels(s3, data, "s3://bkt/p/data", "d", log=lambda m: None)
    logged = []
    _, uploaded = s3_data.upload_channels(s3, data, "s3://bkt/p/data", "d", kms_key="key-1", log=logged.append)
    assert uploaded and logged[0].startswith("uploading 15 files")
    _, uploaded = s3_data.upload_channels(s3, data, "s3://bkt/p/data", "d", kms_key="key-1", log=logged.append)
    assert not uploaded and "already in S3" in logged[-1]
