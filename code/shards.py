"""Shards: a channel of a few large tar files holding the images already decoded and resized to the training size,
written once on the client (``python -m medimg.prepare_data --folder DIR --shards``) with this very module and read
by train.py (channels.py lists them, loaders.py reads their pixels). Standard library and NumPy only, so the client
loads this file by path (medimg/container.py) and writes what train.py reads.

The layout is WebDataset's (a plain POSIX tar; ``tarfile``, ``tar tf`` and ``webdataset`` read it): samples are
consecutive members sharing a key, ``<key>.npy`` (the uint8 pixels, H x W x C, a standard .npy file) and
``<key>.json`` (name, target, patient id). Because SageMaker's ``ShardedByS3Key`` may hand any object to any host,
every shard describes itself: its first member, ``__shard__.json``, holds the format and version, the task, the
class (finding) names and where they came from, the image size and channels, and one record per sample (key, name,
target, patient, the SHA-1 of the original file, where its pixels are in the tar, their shape and CRC-32), so a host
lists its images from the first few hundred kilobytes of each shard. A sample the client could not decode has a
record with ``skip`` (the reason, as train.py would give it) and no pixels: it is counted under max-bad-fraction
and named in metrics.json exactly as the image file would be. ``index.json`` (beside the shards) lists every shard
with its image count, size and SHA-256, for whole-channel readers and the client.

Shard files are named ``shard-000000.tar``, ``shard-000001.tar``, ... so that their S3 keys sort in order.
Members are written in the USTAR format with fixed metadata (mtime 0): the same images give the same bytes, so an
upload is once per content.
"""
import hashlib
import io
import json
import math
import os
import re
import tarfile
import zlib
from typing import NamedTuple

import numpy as np

FORMAT = "medimg-shards"
VERSION = 1
HEADER_MEMBER = "__shard__.json"
INDEX_FILE = "index.json"
SHARD_FILE = re.compile(r"^shard-(\d{6,})\.tar$")
DEFAULT_SHARD_MB = 128  # ~100-200 MB: few objects to list and fetch, many per host when sharded by S3 key
MAX_SAMPLES = 10000     # per shard, so that a header stays small for tiny images
BLOCK = 512             # a tar block
DAMAGED = "in a damaged shard"  # a sample's skip reason when its shard is cut short or its bytes changed


class ShardError(ValueError):
    """A shard or a shard channel that cannot be read as written: what is wrong, on one line."""


class ShardRef(NamedTuple):
    """Where one sample's pixels are: the shard file, the absolute offset of the raw bytes, their shape
    (H, W, C), their CRC-32, the SHA-1 of the original image file (bytes, or None for an empty one) and ``skip``
    (the reason it has no pixels, or None)."""
    shard: str
    offset: int
    shape: tuple
    crc32: int
    digest: bytes = None
    skip: str = None

    @property
    def nbytes(self):
        return math.prod(self.shape) if self.shape else 0


def shard_name(number):
    return f"shard-{number:06d}.tar"


def _padded(n):
    return (n + BLOCK - 1) // BLOCK * BLOCK


def _member(name, data):
    """One tar member (USTAR header with fixed metadata, then the data padded to a block)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict") + data + \
        b"\0" * (_padded(len(data)) - len(data))


def npy_bytes(pixels):
    """A uint8 array as a standard .npy file's bytes, and the length of its .npy header (where the pixels start)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, pixels, version=(1, 0), allow_pickle=False)
    data = buf.getvalue()
    return data, len(data) - pixels.nbytes


# ==================================================================================================
# Writing (the client: medimg/shard_data.py)
# ==================================================================================================
class ShardWriter:
    """Writes one channel's shards into ``folder``, in the order samples are added. ``meta``: ``task``,
    ``classes``, ``classes_from``, ``image_size``, ``channels`` (and anything else every header should carry).
    ``close()`` writes index.json and returns it. Each shard is written to ``.partial`` and renamed."""

    def __init__(self, folder, meta, shard_bytes=DEFAULT_SHARD_MB * 1_000_000, max_samples=MAX_SAMPLES):
        self.folder, self.meta = folder, dict(meta)
        self.shard_bytes, self.max_samples = shard_bytes, max_samples
        self.pending, self.pending_bytes, self.shards, self.count = [], 0, [], 0
        os.makedirs(folder, exist_ok=True)

    def add(self, name, target, patient=None, digest=None, pixels=None, skip=None):
        """One sample: its name (path in the channel), target (class index or 0/1 per finding), patient id, the
        SHA-1 of its file (bytes or None), and its pixels (uint8 H x W x C) or ``skip`` (why there are none)."""
        record = {"key": f"{self.count:09d}", "name": name,
                  "target": list(target) if isinstance(target, (list, tuple)) else int(target),
                  "patient": patient, "digest": digest.hex() if digest else None}
        data = None
        if skip is not None:
            record["skip"] = skip
        else:
            data, header = npy_bytes(pixels)
            record.update(shape=list(pixels.shape), crc32=zlib.crc32(data[header:]), npy_header=header)
        self.count += 1
        self.pending.append((record, data))
        self.pending_bytes += len(data or b"") + 2 * BLOCK
        if self.pending_bytes >= self.shard_bytes or len(self.pending) >= self.max_samples:
            self.flush()

    def flush(self):
        if not self.pending:
            return
        members, at = [], 0  # at: offset from the end of the header member
        for record, data in self.pending:
            text = json.dumps({k: record[k] for k in ("name", "target", "patient")}, ensure_ascii=False).encode()
            if data is not None:
                record["offset"] = at + BLOCK + record.pop("npy_header")
                members.append(_member(f"{record['key']}.npy", data))
                at += BLOCK + _padded(len(data))
            members.append(_member(f"{record['key']}.json", text))
            at += BLOCK + _padded(len(text))
        name = shard_name(len(self.shards))
        header = dict(self.meta, format=FORMAT, version=VERSION, shard=name, count=len(self.pending),
                      samples=[r for r, _ in self.pending])
        path = os.path.join(self.folder, name)
        digest, size = hashlib.sha256(), 0
        with open(path + ".partial", "wb") as fh:
            for part in [_member(HEADER_MEMBER, json.dumps(header, ensure_ascii=False).encode()), *members,
                         b"\0" * 2 * BLOCK]:
                fh.write(part)
                digest.update(part)
                size += len(part)
        os.replace(path + ".partial", path)
        self.shards.append({"file": name, "count": len(self.pending), "bytes": size, "sha256": digest.hexdigest(),
                            "skipped": sum(1 for r, _ in self.pending if "skip" in r)})
        self.pending, self.pending_bytes = [], 0

    def close(self, skipped=None):
        """Write the last shard and index.json (``skipped``: ``{name: reason}`` of images the channel names but
        that are in no shard, e.g. a labels.csv row without a file); returns the index."""
        self.flush()
        index = dict(self.meta, format=FORMAT, version=VERSION, count=self.count, shards=self.shards,
                     skipped=dict(skipped or {}))
        with open(os.path.join(self.folder, INDEX_FILE + ".partial"), "w", encoding="utf-8") as fh:
            json.dump(index, fh, indent=1, ensure_ascii=False)
        os.replace(os.path.join(self.folder, INDEX_FILE + ".partial"), os.path.join(self.folder, INDEX_FILE))
        return index


# ==================================================================================================
# Reading (train.py)
# ==================================================================================================
def shard_files(root):
    """The shard files of a channel folder, in key order."""
    try:
        entries = os.listdir(root)
    except OSError:
        return []
    return sorted(os.path.join(root, e) for e in entries if SHARD_FILE.match(e))


def holds_shards(root):
    """Whether a channel folder holds shards (shard-*.tar files or this format's index.json)."""
    return bool(root and os.path.isdir(root) and (shard_files(root) or read_index(root) is not None))


def read_index(root):
    """The channel's index.json when it has one of this format, else None."""
    path = os.path.join(root, INDEX_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            index = json.load(fh)
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and index.get("format") == FORMAT else None


def read_header(path):
    """A shard's ``__shard__.json`` (its first member), with ``data_start`` (where its other members start) and
    ``file_bytes``; ShardError when it cannot be read or is not this format."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as fh:
            block = fh.read(BLOCK)
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            if info.name != HEADER_MEMBER:
                raise ShardError(f"{name}: its first member is {info.name!r}, not {HEADER_MEMBER}")
            body = fh.read(info.size)
            if len(body) < info.size:
                raise ShardError(f"{name}: cut short inside its header")
            header = json.loads(body)
    except (tarfile.TarError, UnicodeDecodeError, ValueError) as exc:
        raise ShardError(exc if isinstance(exc, ShardError) else f"{name}: its header cannot be read "
                                                                 f"({type(exc).__name__}: {exc})") from exc
    except OSError as exc:
        raise ShardError(f"{name}: cannot be read ({exc.strerror or exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ShardError(f"{name}: not a {FORMAT} shard")
    if header.get("version") != VERSION:
        raise ShardError(f"{name}: {FORMAT} version {header.get('version')}, this train.py reads version {VERSION}; "
                         "write the shards again with this repository's prepare_data")
    header["data_start"] = BLOCK + _padded(info.size)
    header["file_bytes"] = os.path.getsize(path)
    return header


def refs_of(path, header):
    """The ShardRef of each sample of a shard; samples whose bytes lie beyond the file's end (a shard cut short)
    get ``skip=DAMAGED``."""
    refs, start, end = [], header["data_start"], header["file_bytes"]
    for s in header["samples"]:
        digest = bytes.fromhex(s["digest"]) if s.get("digest") else None
        if s.get("skip"):
            refs.append(ShardRef(path, 0, (), 0, digest, s["skip"]))
            continue
        ref = ShardRef(path, start + s["offset"], tuple(s["shape"]), s["crc32"], digest)
        refs.append(ref if ref.offset + ref.nbytes <= end else ref._replace(skip=DAMAGED))
    return refs


def read_shard(path):
    """A whole shard's bytes as a uint8 array (one sequential read), for reading many of its samples."""
    return np.fromfile(path, dtype=np.uint8)


def pixels_in(ref, data):
    """One sample's pixels (H, W, C) as a view of ``data`` (``read_shard``'s array of its shard); ShardError when
    they lie beyond its end or their bytes changed."""
    view = data[ref.offset:ref.offset + ref.nbytes]
    if len(view) != ref.nbytes:
        raise ShardError(f"{os.path.basename(ref.shard)} is cut short")
    if zlib.crc32(view) != ref.crc32:
        raise ShardError(f"its bytes in {os.path.basename(ref.shard)} changed since it was written (CRC-32)")
    return view.reshape(ref.shape)


def read_pixels(ref):
    """One sample's uint8 pixels (H, W, C), writable; ShardError when the bytes are short or changed."""
    buf = bytearray(ref.nbytes)
    with open(ref.shard, "rb") as fh:
        fh.seek(ref.offset)
        got = fh.readinto(buf)
    if got != len(buf):
        raise ShardError(f"{os.path.basename(ref.shard)} is cut short")
    if zlib.crc32(buf) != ref.crc32:
        raise ShardError(f"its bytes in {os.path.basename(ref.shard)} changed since it was written (CRC-32)")
    return np.frombuffer(buf, dtype=np.uint8).reshape(ref.shape)


class ShardChannel:
    """A channel of shards as train.py lists it: the header fields every shard agrees on (``task``, ``classes``,
    ``classes_from``, ``image_size``, ``channels``), each sample's ShardRef, name, target and patient, ``skipped``
    (index.json's images that are in no shard), and ``damaged``: ``[(shard, why, images lost or None)]`` for
    shards whose header cannot be read (their images cannot be listed) or that are cut short."""

    KEYS = ("task", "classes", "image_size", "channels")

    def __init__(self, root):
        self.root, self.refs, self.names, self.targets, self.patients = root, [], [], [], []
        self.damaged, self.meta, self.files = [], None, shard_files(root)
        index = read_index(root) or {}
        self.skipped = dict(index.get("skipped") or {})
        counts = {s.get("file"): s.get("count") for s in index.get("shards") or () if isinstance(s, dict)}
        for path in self.files:
            self._add(path, counts.get(os.path.basename(path)))

    def _add(self, path, indexed_count):
        try:
            header = read_header(path)
        except ShardError as exc:
            self.damaged.append((os.path.basename(path), str(exc), indexed_count))
            return
        meta = {k: header.get(k) for k in self.KEYS}
        if self.meta is None:
            self.meta, self.classes_from = meta, header.get("classes_from")
            self.sorted_names = bool(header.get("sorted_names"))
        elif meta != self.meta:
            differ = [k for k in self.KEYS if meta[k] != self.meta[k]]
            raise ShardError(f"{os.path.basename(path)} has {differ[0]} {meta[differ[0]]!r} but the channel's other "
                             f"shards {self.meta[differ[0]]!r}: they were written by different prepare_data runs; "
                             "write the channel's shards again in one run")
        refs = refs_of(path, header)
        cut = sum(1 for r in refs if r.skip == DAMAGED)
        if cut:
            self.damaged.append((os.path.basename(path), f"cut short at {header['file_bytes']} bytes: {cut} of its "
                                                         f"{len(refs)} images lie beyond its end", None))
        for ref, s in zip(refs, header["samples"]):
            self.refs.append(ref)
            self.names.append(s["name"])
            self.targets.append(tuple(s["target"]) if isinstance(s["target"], list) else s["target"])
            self.patients.append(s.get("patient"))

    @property
    def lost(self):
        """Images of shards whose header cannot be read, as index.json counts them (0 without an index.json)."""
        return sum(n for _, _, n in self.damaged if n)
