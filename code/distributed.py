"""Distributed training helpers. torchrun (SageMaker's ``torch_distributed``, SDK v3's ``Torchrun``) sets RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; without them this is a single process and every helper is a
no-op. NCCL on GPUs, gloo on CPUs.
"""
import datetime
import logging
import os

import numpy as np
import torch
import torch.distributed as dist

from utils import one_line

logger = logging.getLogger("train")


class DistInfo:
    """This process's place: rank, local rank (its GPU), world size."""

    def __init__(self, rank=0, local_rank=0, world_size=1):
        self.rank, self.local_rank, self.world_size = rank, local_rank, world_size

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def init_distributed(timeout_s, environ=None):
    """Join the process group when launched by torchrun with more than one process; else a single process."""
    environ = os.environ if environ is None else environ
    world = int(environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(environ["RANK"]), int(environ.get("LOCAL_RANK", "0")), world)
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    logger.info("distributed: backend=%s rank=%d/%d local_rank=%d", backend, info.rank, world, info.local_rank)
    return info


def all_reduce_sum(values, dist_info, device):
    """Sum a list of floats over all ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist_info.enabled:
        dist.all_reduce(t)
    return t.tolist()


def gather_predictions(indices, probs, dist_info):
    """Reassemble every rank's (indices, probabilities) into full, ordered arrays on every rank."""
    if not dist_info.enabled:
        order = np.argsort(indices)
        return np.asarray(indices)[order], np.asarray(probs)[order]
    parts = [None] * dist_info.world_size
    dist.all_gather_object(parts, (np.asarray(indices), np.asarray(probs)))
    idx = np.concatenate([p[0] for p in parts])
    prob = np.concatenate([p[1] for p in parts])
    order = np.argsort(idx)
    return idx[order], prob[order]


def gather_objects(obj, dist_info):
    """Every rank's ``obj`` (picklable), in rank order, on every rank (a collective); ``[obj]`` in one process."""
    if not dist_info.enabled:
        return [obj]
    parts = [None] * dist_info.world_size
    dist.all_gather_object(parts, obj)
    return parts


def any_rank(flag, dist_info, device):
    """Whether ``flag`` is true on any rank (a collective: every rank must call it at the same point)."""
    if not dist_info.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def is_initialized():
    return dist.is_available() and dist.is_initialized()


def finish():
    """Every rank done before any tears its connections down, then leave the group.

    A rank that destroyed its gloo group while rank 0 was still saving was seen to abort at exit ("terminate
    called without an active exception"); the barrier follows upstream practice (mosaicml/streaming#186)."""
    if is_initialized():
        dist.barrier()


def shutdown():
    if is_initialized():
        dist.destroy_process_group()


def collective_failure(exc):
    """The failure line for a collective that failed because another process died or hung, else None."""
    if not is_initialized() or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    words = ("gloo", "nccl", "connection", "timed out")
    if not (isinstance(exc, dist.DistError) or any(w in text.lower() for w in words)):
        return None
    return (f"a collective failed on rank {dist.get_rank()} of {dist.get_world_size()}: another training process "
            f"died or stopped answering ({one_line(text, 240)}); the other ranks' or hosts' logs say why "
            "(often out of memory: lower batch-size); a hung rank fails the job after dist-timeout seconds; run "
            "again with the same checkpoint dir to resume from the last epoch")
