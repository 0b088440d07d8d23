#!/usr/bin/env python
"""The data path alone (read, decode, resize, augment, batch): one measurement per process, one JSON result line.

    PYTHONPATH=code python benchmarks/datapath_probe.py plain --folder DIR/train --size 224 --workers 2
    PYTHONPATH=code python benchmarks/datapath_probe.py trainpy --train DIR/train --val DIR/val [--cache-max-gb G]
    PYTHONPATH=code python benchmarks/datapath_probe.py synth-shards --out DIR --n 100000 --size 224

``plain``: torchvision's ``ImageFolder`` + ``DataLoader`` as script-mode examples write it (PIL decode, Resize,
RandomHorizontalFlip, ToTensor per image; batches of 64), one pass. ``trainpy``: train.py's own data path, its
functions called as train.py calls them (``data.load_data``: the channels listed, decoded or copied from shards,
cached or streamed), then one epoch of its batches (``split.batches(fill=True)``) through its augmentation
(``augment.augment_batch``) on the CPU, no model. Both report images per second of wall time and per CPU second
(this process and its DataLoader workers: ``resource`` and /proc; train.py's augmentation, which runs on the
training device, is timed apart as ``augment_cpu_s``), and the peak private memory of the process tree, sampled
every 50 ms (``peak_tree_rss_mb``: RssAnon of the main process and its workers summed; the libraries they map are
shared and not counted per worker, nor is the page cache). ``synth-shards`` writes a shard channel of random pixels directly (code/shards.py's writer), for
streaming runs larger than any PNG set worth generating.
"""
import argparse
import json
import os
import resource
import sys
import threading
import time

PREFIX = "DATAPATH_RESULT "


def tree_rss_mb(pid, field="RssAnon:"):
    """Resident memory of ``pid`` and its descendants (MB), from /proc: ``RssAnon`` (private memory: arrays,
    buffers, the heap; the libraries every worker maps are file-backed and shared, so not summed per process) or
    ``VmRSS``."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith(field)), 0)
        except OSError:
            continue
    return total / 1024


class PeakMemory:
    """Samples the tree's resident memory in a thread; ``peak`` in MB."""

    def __init__(self, every=0.05):
        self.peak, self.every, self.stop = 0.0, every, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            time.sleep(self.every)

    def close(self):
        self.stop.set()
        self.thread.join()
        return self.peak


def cpu_seconds():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def plain(opts):
    import torch
    from torchvision import datasets, transforms

    t = transforms.Compose([transforms.Resize((opts.size, opts.size)), transforms.RandomHorizontalFlip(),
                            transforms.ToTensor()])
    ds = datasets.ImageFolder(opts.folder, transform=t)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=opts.workers)
    w0, c0, n = time.perf_counter(), cpu_seconds(), 0
    for x, _ in loader:
        n += len(x)
    del loader
    return {"images": n, "wall_s": time.perf_counter() - w0, "cpu_s": cpu_seconds() - c0}


def trainpy(opts):
    import torch

    import augment
    import data as data_lib
    import hyperparameters

    argv = ["--train", opts.train, "--val", opts.val, "--image-size", str(opts.size), "--cache-max-gb",
            str(opts.cache_max_gb), "--num-workers", str(opts.workers)]
    args = hyperparameters.parse_args(argv, environ={})
    w0, c0 = time.perf_counter(), cpu_seconds()
    data = data_lib.load_data(args, torch.device("cpu"))
    ready_wall, ready_cpu = time.perf_counter() - w0, cpu_seconds() - c0
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train), generator=gen).tolist()
    if opts.limit:
        order = order[:opts.limit]
    w1, c1, n = time.perf_counter(), cpu_seconds(), 0
    kept = []
    for x, _, _ in data.train.batches(order, 64, torch.device("cpu"), fill=True):
        n += len(x)
        if len(kept) < 8:
            kept.append(x)
    wall, cpu = time.perf_counter() - w1, cpu_seconds() - c1
    aug_n, aug_cpu = 0, 0.0
    if opts.augment:  # apart: train.py augments on the training device, so on a GPU job not on these cores
        a1 = time.process_time()
        for x in kept:
            augment.augment_batch(x.float().div_(255), gen, hflip=True, vflip=False)
            aug_n += len(x)
        aug_cpu = time.process_time() - a1
    return {"images": n, "wall_s": wall, "cpu_s": cpu, "augment_images": aug_n, "augment_cpu_s": aug_cpu,
            "ready_s": ready_wall, "ready_cpu_s": ready_cpu, "n_loaded": len(data.train) + len(data.val),
            "streamed": bool(data.streamed), "bound_mb": getattr(data.train, "bound_bytes", lambda: 0)() / 1e6}


def synth_shards(opts):
    import numpy as np

    import shards

    meta = {"task": "multiclass", "classes": ["normal", "pneumonia"], "classes_from": "synthetic", "image_size":
            opts.size, "channels": 1}
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (opts.size, opts.size, 1), dtype=np.uint8)
    for split, n in (("train", opts.n), ("val", max(64, opts.n // 100))):
        writer = shards.ShardWriter(os.path.join(opts.out, split), meta)
        for i in range(n):
            writer.add(f"{['normal', 'pneumonia'][i % 2]}/{i}.png", i % 2, pixels=np.roll(base, i, axis=0))
        writer.close()
    return {"images": opts.n}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("plain", "trainpy", "synth-shards"))
    p.add_argument("--folder")
    p.add_argument("--train")
    p.add_argument("--val")
    p.add_argument("--out")
    p.add_argument("--n", type=int, default=0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache-max-gb", type=float, default=4.0)
    p.add_argument("--limit", type=int, default=0, help="trainpy: at most this many images in the timed epoch")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="trainpy: batches only")
    opts = p.parse_args(argv)
    import numpy  # noqa: F401 - what every mode imports, before the baseline
    import torch  # noqa: F401

    baseline = tree_rss_mb(os.getpid())
    memory = PeakMemory()
    result = {"plain": plain, "trainpy": trainpy, "synth-shards": synth_shards}[opts.mode](opts)
    result["peak_tree_rss_mb"], result["baseline_rss_mb"] = memory.close(), baseline
    result["cpus"] = os.cpu_count()
    print(PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
