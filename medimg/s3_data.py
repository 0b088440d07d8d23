"""Data in S3: upload a data folder's channels once per content, and download a prefix safely.

``upload_channels`` puts a data folder (medimg.data_folders) under ``s3://BUCKET/PREFIX/<name>-<content hash>/``
with a ``manifest.json`` of every file's size and SHA-256 beside the channels: the same data is found again by its
hash and never uploaded twice, and a job's channel URIs name exactly the data it was trained on. An interrupted
upload resumes: the manifest is written last, and the files already under the prefix at their size (and with the
requested encryption) are kept. Hashing, uploading and downloading show their progress (medimg.progress).
"""
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

from medimg.data_folders import ChannelError, channels_in
from medimg.progress import progress

MANIFEST = "manifest.json"


# ==================================================================================================
# Manifest and upload
# ==================================================================================================
def file_sha256(path):
    """The SHA-256 of a file's bytes, as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(data_dir):
    """``{"files": {relative path: {"size", "sha256"}}, "version": hash of all that}`` for the channels'
    files and label_dict.json (hidden files are left out, as train.py ignores them)."""
    files = {}
    rels = [os.path.join(ch, os.path.relpath(p, os.path.join(data_dir, ch)))
            for ch in channels_in(data_dir) for p in _walk_files(os.path.join(data_dir, ch))]
    if os.path.isfile(os.path.join(data_dir, "label_dict.json")):
        rels.append("label_dict.json")
    for rel in progress(sorted(rels), desc="hashing the data", unit="file"):
        path = os.path.join(data_dir, rel)
        files[rel.replace(os.sep, "/")] = {"size": os.path.getsize(path), "sha256": file_sha256(path)}
    version = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    return {"files": files, "version": version}


def _walk_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield os.path.join(dirpath, name)


def split_s3_uri(uri):
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _remote_manifest(s3, bucket, key):
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable manifest means: upload
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "AccessDenied", "403"):
            return None
        raise
    try:
        return json.loads(body)
    except ValueError:
        return None


def _remote_sizes(s3, bucket, prefix):
    sizes = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            sizes[obj["Key"][len(prefix):]] = obj["Size"]
    return sizes


def upload_channels(s3, data_dir, s3_prefix_uri, name, *, kms_key=None, threads=16, log=print):
    """Upload ``data_dir``'s channels to ``<s3_prefix_uri>/<name>-<version>/`` unless the same content is already
    there (its manifest matches, with the same ``kms_key``, and every file is present at its size). Returns
    ``({channel: uri}, uploaded)``.

    The manifest is written last, so an interrupted upload is never mistaken for a complete one; the next call
    resumes it, keeping the files already there at their size (under a KMS key: encrypted with that key).
    """
    manifest = build_manifest(data_dir)
    bucket, base = split_s3_uri(s3_prefix_uri.rstrip("/") + f"/{name}-{manifest['version']}/")
    channels = {ch: f"s3://{bucket}/{base}{ch}/" for ch in channels_in(data_dir)}
    remote, sizes = _remote_manifest(s3, bucket, base + MANIFEST), _remote_sizes(s3, bucket, base)
    present = {rel for rel, f in manifest["files"].items() if sizes.get(rel) == f["size"]}
    if (remote is not None and remote.get("files") == manifest["files"] and remote.get("kms_key") == kms_key
            and len(present) == len(manifest["files"])):
        log(f"data already in S3 (manifest {manifest['version']} matches): s3://{bucket}/{base}")
        return channels, False
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
    if kms_key:  # kept only when encrypted as now asked
        with ThreadPoolExecutor(max_workers=threads) as pool:
            present = {rel for rel, ok in zip(sorted(present), pool.map(
                lambda rel: _encrypted_with(s3, bucket, base + rel, kms_key), sorted(present))) if ok}
    rels = sorted(set(manifest["files"]) - present)
    log(f"uploading {len(rels)} files to s3://{bucket}/{base} ..." + (
        f" (resuming: {len(present)} of {len(manifest['files'])} already there)" if present else ""))

    def put(rel):
        s3.upload_file(os.path.join(data_dir, rel), bucket, base + rel, ExtraArgs=extra or None)

    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        for _ in progress(pool.map(put, rels), total=len(rels), desc=f"uploading {name}", unit="file"):
            pass
    finally:  # a failure or Ctrl-C stops at once (what is uploaded stays, for the next call to resume)
        pool.shutdown(cancel_futures=True)
    s3.put_object(Bucket=bucket, Key=base + MANIFEST, ContentType="application/json", **extra,
                  Body=json.dumps(dict(manifest, kms_key=kms_key), indent=1).encode())
    log(f"uploaded {len(rels)} files and {MANIFEST}")
    return channels, True


def _encrypted_with(s3, bucket, key, kms_key):
    """Whether the object is encrypted with ``kms_key`` (its ARN or key id; S3 names the key by its ARN, so a file
    encrypted under an alias is uploaded again rather than trusted)."""
    head = s3.head_object(Bucket=bucket, Key=key)
    used = head.get("SSEKMSKeyId") or ""
    return head.get("ServerSideEncryption") == "aws:kms" and (used == kms_key or used.endswith(f":key/{kms_key}"))


def download_prefix(s3, uri, dest, max_files=None, suffixes=None):
    """Download the objects under an S3 prefix into ``dest`` (keeping their relative paths); returns the paths.
    Keys that would land outside ``dest`` are refused (before anything is downloaded)."""
    bucket, prefix = split_s3_uri(uri)
    root = os.path.realpath(dest)
    wanted = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):].lstrip("/")
            if not rel or rel.endswith("/") or (suffixes and not rel.lower().endswith(tuple(suffixes))):
                continue
            path = os.path.realpath(os.path.join(root, rel))
            if not path.startswith(root + os.sep):
                raise ChannelError(f"refusing S3 key {obj['Key']!r}: it would be written outside {dest}")
            wanted.append((obj["Key"], path))
            if max_files and len(wanted) >= max_files:
                break
        if max_files and len(wanted) >= max_files:
            break
    for key, path in progress(wanted, desc=f"downloading {uri}", unit="file"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, key, path)
    return [path for _, path in wanted]
