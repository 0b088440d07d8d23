#!/usr/bin/env python
"""Run code/train.py's own ``main()`` with timing hooks around it, and print one JSON result line.

    PYTHONPATH=code python benchmarks/probe.py [--profile-epoch N] -- --train DIR --val DIR --epochs 3 --max-steps-per-epoch 30 ...

Everything after ``--`` goes to train.py unchanged, so what is measured is train.py's data path and step,
not a re-implementation. It observes through the training loop's callbacks (engine.Callback; nothing inside the
step changes), with code/ on PYTHONPATH as in the container (benchmarks/run.py sets it):

* ``on_data_loaded``: wall time of reading and decoding the channels (and whether the data was cached or
  streamed);
* ``on_train_epoch_start/end``: per epoch, the images and images/s train.py itself reports, plus the wall and CPU
  seconds of the epoch (CPU seconds / wall seconds shows how much of the machine the process really had);
* ``on_fit_start``: the dtype of the step (bf16, fp16 or None = fp32);
* with ``--profile-epoch N`` on a GPU, epoch N runs under ``torch.profiler`` and the result gets
  ``gpu_busy``: the union of the CUDA kernels' time intervals divided by the epoch's wall time.

At exit: peak resident memory of the process (VmHWM; DataLoader workers, when train.py streams, are separate
processes and not included), ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` on a GPU. The
result is the last stdout line, prefixed with ``PROBE_RESULT``.
"""
import argparse
import json
import os
import resource
import sys
import time

PREFIX = "PROBE_RESULT "


def vm_hwm_mb():
    """Peak resident set size of this process, from /proc (MB); ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def kernel_busy_fraction(prof, wall_s):
    """Union of the CUDA kernel intervals in a torch.profiler trace, as a fraction of ``wall_s``."""
    intervals = []
    for evt in prof.events():
        if getattr(evt, "device_type", None) is not None and "CUDA" in str(evt.device_type):
            start = evt.time_range.start
            end = evt.time_range.end
            if end > start:
                intervals.append((start, end))
    if not intervals or wall_s <= 0:
        return None, 0
    intervals.sort()
    busy, cur_start, cur_end = 0.0, intervals[0][0], intervals[0][1]
    for start, end in intervals[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    busy += cur_end - cur_start
    return min(1.0, busy / 1e6 / wall_s), len(intervals)  # profiler times are in microseconds


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" in argv:
        split = argv.index("--")
        own, train_argv = argv[:split], argv[split + 1:]
    else:
        own, train_argv = [], argv
    p = argparse.ArgumentParser(description="time train.py's main() (see the module docstring)")
    p.add_argument("--profile-epoch", type=int, default=0, help="on a GPU: profile this epoch for gpu_busy")
    opts = p.parse_args(own)

    t_start = time.perf_counter()
    import torch

    import engine
    import train

    result = {"argv": train_argv, "epochs": [], "amp_dtype": None, "load_s": None, "streamed": None,
              "n_train": None, "threads": torch.get_num_threads(), "torch": torch.__version__}

    class Probe(engine.Callback):
        """Times what train.py reports, through the training loop's own hooks."""

        def on_data_loaded(self, data, seconds):
            result.update(load_s=seconds, streamed=bool(data.streamed), n_train=len(data.train),
                          image_size=data.size, channels=data.channels)

        def on_fit_start(self, trainer):
            dtype = trainer.amp_dtype
            result["amp_dtype"] = str(dtype).replace("torch.", "") if dtype is not None else "float32"

        def on_train_epoch_start(self, trainer, epoch):
            self.prof = None
            if opts.profile_epoch == epoch and trainer.device.type == "cuda":
                from torch.profiler import ProfilerActivity, profile

                self.prof = profile(activities=[ProfilerActivity.CUDA])  # kernels only: little CPU-side overhead
                self.prof.__enter__()
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            self.w0, self.c0 = time.perf_counter(), time.process_time()

        def on_train_epoch_end(self, trainer, epoch, stats):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            wall, cpu = time.perf_counter() - self.w0, time.process_time() - self.c0
            row = {"epoch": epoch, "images": stats.partial["seen"], "steps": stats.steps,
                   "images_per_sec": stats.images_per_sec, "wall_s": wall, "cpu_s": cpu,
                   "profiled": self.prof is not None, "start_unix": time.time() - wall, "end_unix": time.time()}
            if self.prof is not None:
                self.prof.__exit__(None, None, None)
                row["gpu_busy"], row["kernels"] = kernel_busy_fraction(self.prof, wall)
            result["epochs"].append(row)

    rc = train.main(train_argv, callbacks=[Probe()])
    result["rc"] = rc
    result["total_s"] = time.perf_counter() - t_start
    result["peak_rss_mb"] = vm_hwm_mb()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    sys.stdout.flush()
    print(PREFIX + json.dumps(result), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
