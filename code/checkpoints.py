"""Training checkpoints: written atomically, the newest two kept, the newest one that loads wins.

``checkpoint-EEEE-SSSSSS.pt`` holds the state after EEEE completed epochs and SSSSSS steps into the next one
(non-zero only when a SIGTERM stopped the run inside an epoch). Loaded with ``weights_only=True``.
"""
import glob
import logging
import os
import re

import torch

from utils import atomic_torch_save

logger = logging.getLogger("train")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)-(\d+)\.pt$")


def list_checkpoints(folder):
    """Checkpoint files in ``folder``, newest first. ``checkpoint-EEEE-SSSSSS.pt`` holds the state after
    EEEE completed epochs and SSSSSS steps into the next one (non-zero only when a SIGTERM stopped it)."""
    if not folder or not os.path.isdir(folder):
        return []
    found = []
    for path in glob.glob(os.path.join(folder, "checkpoint-*.pt")):
        m = CHECKPOINT_PATTERN.match(os.path.basename(path))
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), path))
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(state, folder, epoch, step=0, keep=2):
    """Write atomically, then keep only the newest ``keep`` checkpoints."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"checkpoint-{epoch:04d}-{step:06d}.pt")
    atomic_torch_save(state, path)
    for old in list_checkpoints(folder)[keep:]:
        os.unlink(old)
    for stale in glob.glob(os.path.join(folder, ".tmp-*checkpoint-*.pt")):  # a process killed while writing
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    return path


def load_latest_checkpoint(folder, map_location="cpu"):
    """(state, path) of the newest checkpoint that loads, skipping broken ones with a warning; None if none."""
    for path in list_checkpoints(folder):
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
            if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
                raise ValueError("not a checkpoint written by train.py")
            return state, path
        except Exception as exc:  # noqa: BLE001 - truncated, corrupt or foreign files are skipped
            logger.warning("skipping unreadable checkpoint %s (%s: %s)", path, type(exc).__name__, exc)
    return None
