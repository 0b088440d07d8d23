"""Generic helpers with no knowledge of training: atomic files, JSON-safe values, one-line messages, seeding.

Only the standard library, NumPy and torch. Nothing here reads the environment at import time.
"""
import io
import json
import math
import os
import random
import tempfile

import numpy as np
import torch


# ==================================================================================================
# Files: written through a temp file in the same folder, then os.replace (never half a file)
# ==================================================================================================
def atomic_write_bytes(path, data):
    """Write ``data`` (bytes-like) to ``path`` atomically, with mode 0644.

    Raises OSError (the old file, if any, is left whole)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; artefacts are read by other users and services
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    """Indented, key-sorted JSON; NaN and infinity are refused (pass the object through ``json_safe``)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_torch_save(obj, path):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def json_safe(value):
    """Floats that JSON cannot hold (nan, inf) become None; NumPy scalars and arrays become Python values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def one_line(message, limit=1000):
    """Collapse a message to a single line of at most ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ==================================================================================================
# Seeding and random-number-generator state
# ==================================================================================================
def seed_everything(seed):
    """Seed Python, NumPy and torch (all devices)."""
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derived_seed(seed, epoch, rank=0):
    """A seed per (run seed, epoch, rank), so each epoch is reproducible on its own, resumed or not."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + int(rank) * 104_729) % (2**31 - 1)


def rng_state():
    """All RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what ``rng_state`` returned (CUDA states only when the device count matches)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
