#!/usr/bin/env python
"""``make bench``: training speed, hardware ceiling, scaling and time to quality of code/train.py.

    python benchmarks/run.py                      # every section but dev (about 15 minutes on 2 idle cores)
    python benchmarks/run.py --quick              # fewer steps and sizes, stops the quality run at its target
    python benchmarks/run.py --only throughput,ceiling
    python benchmarks/run.py --out build/bench/results.json
    python benchmarks/run.py --only dev                        # dev settings x 3 seeds (about 15-25 minutes)
    python benchmarks/run.py --only dev --settings retina --seeds 1 --code /tmp/other-checkout/code

Sections (``--only``):

* ``throughput``: images/s in steady state of train.py's own data path and step (train.py's ``main()`` run by
  benchmarks/probe.py; epoch 1 is the warm-up, later epochs are timed) versus the plain loop of typical
  script-mode examples (benchmarks/plain_loop.py: ImageFolder, PIL + ToTensor/Normalize per sample, fp32,
  NCHW), same model, image size, batch size and PNG class folders. Cases: smallcnn at 28 px on
  PneumoniaMNIST, torchvision's ResNet-18 at 64 px on PneumoniaMNIST upsampled to 64 px.
* ``ceiling``: measured matmul FLOP/s (fp32, bf16 where supported), training FLOPs per image, and the fraction
  of the ceiling (of the step's dtype) that train.py's step reaches.
* ``scaling``: load time, images/s and peak memory at 5k, 20k and 100k synthetic images; and a data set over
  the in-memory budget (``--cache-max-gb`` tiny), which train.py streams from disk with workers.
* ``quality``: wall time of train.py's default configuration (no hyperparameters) to reach val AUC 0.97 on the
  PneumoniaMNIST train/val split, and its final val AUC and accuracy.
* ``sizes`` (not in the default set; ``--only sizes``): what image size costs. Training FLOPs per image of
  smallcnn (with the stem stride train.py picks, and with the stride-1 stem of earlier versions) and of
  torchvision's ResNet-18 at 28, 64, 128 and 224 px; and train.py (default hyperparameters but ``--model``) on
  PneumoniaMNIST upsampled to 64 and 128 px: images/s and wall time to val AUC 0.97 (capped; the run is stopped
  at the target). Upsampled images hold no more detail than 28 px ones: this measures cost, not what a higher
  resolution can add.
* ``dev`` (not in the default set; ``--only dev``): the quality of the defaults on the development settings of
  ../shared/data/ (PneumoniaMNIST with its train split subsampled to 300 and 1,000 images, stratified by class
  with a fixed subsample seed, and all 4,708; RetinaMNIST, 1,080 RGB images, 5 grades), each judged on its own
  val split, never on a test split: train.py with default hyperparameters (only paths, ``--seed`` and
  ``--checkpoint-dir ''``) for seeds 1, 2 and 3; per setting val accuracy and AUC (mean, sample standard
  deviation and each seed), val ECE (15 equal-width bins on the top-class confidence, Guo et al. 2017),
  optimiser steps, epochs run and wall time. ``--code DIR`` runs another checkout's train.py (before/after).

Each measurement runs in its own process; the load average before each one and at the start and end is
recorded, so a reader can judge a busy machine. Results: a table on stdout and a JSON file (``--out``).
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

from medimg import container
from medimg.container import epoch_log

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CODE = os.path.join(ROOT, "code")

# section sizes: train.py's defaults with --model, on PneumoniaMNIST upsampled (bilinear) to each size
SIZE_CASES = (("smallcnn", 28), ("smallcnn", 64), ("smallcnn", 128), ("resnet18", 64), ("resnet18", 128))
SECTIONS = ("ceiling", "throughput", "scaling", "quality", "dev", "sizes")
# dev takes 15-25 minutes more (--only dev), sizes 15-25 (--only sizes)
DEFAULT_SECTIONS = ("ceiling", "throughput", "scaling", "quality")
TARGET_RATIO = 3.0            # train.py vs the plain loop, default model at 28 px
TARGET_CEILING_FRACTION = 0.30  # of the measured matmul ceiling of the step's dtype, default model
TARGET_AUC = 0.97

# Settings per mode: steps are per timed epoch (train.py) or timed steps (plain loop).
MODES = {
    "full": dict(repeats=2, train_epochs=3, steps={"smallcnn": 30, "resnet18": 12, "*": 5}, plain_warmup=5,
                 plain_workers=(0, 2), scaling_sizes=(5_000, 20_000, 100_000), stream_size=20_000, scaling_steps=20,
                 matmul_sizes=(2048, 4096), matmul_repeats=5, ttq_stop_at_target=False, ttq_extra=(),
                 batch_size=128, subsample=None, fp32_variant=True,
                 dev_seeds=(1, 2, 3), dev_extra=(), dev_cap=None, dev_settings=None,
                 size_cases=SIZE_CASES, size_cap_s=300, size_extra=(), flop_sizes=(28, 64, 128, 224)),
    "quick": dict(repeats=1, train_epochs=2, steps={"smallcnn": 15, "resnet18": 5, "*": 3}, plain_warmup=3,
                  plain_workers=(0,), scaling_sizes=(5_000, 20_000), stream_size=5_000, scaling_steps=10,
                  matmul_sizes=(2048,), matmul_repeats=3, ttq_stop_at_target=True, ttq_extra=(),
                  batch_size=128, subsample=None, fp32_variant=False,
                  dev_seeds=(1,), dev_extra=(), dev_cap=None, dev_settings=None,
                  size_cases=SIZE_CASES, size_cap_s=120, size_extra=(), flop_sizes=(28, 64, 128, 224)),
    # the test suite's: tiny everything, only checks that the machinery runs and reports
    "smoke": dict(repeats=1, train_epochs=2, steps={"*": 1}, plain_warmup=1,
                  plain_workers=(0,), scaling_sizes=(64, 128), stream_size=64, scaling_steps=1,
                  matmul_sizes=(128,), matmul_repeats=1, ttq_stop_at_target=False, ttq_extra=("--epochs", "1"),
                  batch_size=16, subsample=(96, 32), fp32_variant=False,
                  # dev: train and val each cut to at most these many images (stratified), one epoch, one seed
                  dev_seeds=(1,), dev_extra=("--epochs", "1"), dev_cap=(48, 40),
                  dev_settings=("pneumonia-300", "retina"),
                  size_cases=(("smallcnn", 28), ("smallcnn", 64)), size_cap_s=120, size_extra=("--epochs", "1"),
                  flop_sizes=(28, 64)),
}
THREAD_ENV = {}  # set from --threads
CASES = ("smallcnn@28", "resnet18@64")  # model@image size; ResNet-18 is torchvision's (stride-2 stem, max-pool)
CHILD_PATHS = {"PYTHONPATH": CODE}  # the code/ every measurement process runs (--code)

# The dev settings (section ``dev``): npz in --dev-data, train split cut to ``n_train`` (None: all), class names.
DEV_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")  # the README's ../shared/data/
DEV_SETTINGS = {
    "pneumonia-300": dict(npz="pneumoniamnist_trainval.npz", n_train=300, classes=("normal", "pneumonia")),
    "pneumonia-1000": dict(npz="pneumoniamnist_trainval.npz", n_train=1000, classes=("normal", "pneumonia")),
    "pneumonia-all": dict(npz="pneumoniamnist_trainval.npz", n_train=None, classes=("normal", "pneumonia")),
    "retina": dict(npz="retinamnist_trainval.npz", n_train=None, classes=("0", "1", "2", "3", "4")),
}
DEV_SUBSAMPLE_SEED = 1234  # fixed: every run seed and every checkout trains on the same subsample
ECE_BINS = 15
TRAIN_TIME_LIMIT_S = 300  # the issue's "defaults train PneumoniaMNIST 28 px in at most 5 minutes on 2 cores"


# ==================================================================================================
# Machine, processes
# ==================================================================================================
def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def torch_version():
    """The installed torch's version, without importing it here (measurements run in child processes)."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def machine_info():
    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        model = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
        family = re.search(r"^cpu family\s*:\s*(\d+)$", text, re.MULTILINE)
        cpu_model = re.search(r"^model\s*:\s*(\d+)$", text, re.MULTILINE)
        flags = set((re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE) or [None, ""])[1].split())
        info["cpu"] = model.group(1).strip() if model else platform.processor()
        if family and cpu_model:
            info["cpu"] += f" (family {family.group(1)} model {cpu_model.group(1)})"
        info["isa"] = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                                                       "amx_int8", "amx_tile", "fma"))
    except OSError:
        info["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as fh:
            info["mem_gb"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


class Child:
    """A measurement process: stdout streamed to a log file with arrival times, result line parsed."""

    def __init__(self, cmd, log_path, env=None, cwd=ROOT):
        self.cmd, self.log_path = [str(c) for c in cmd], log_path
        # code/ on the path, as in the container: probe.py, ceiling.py and plain_loop.py import its modules
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **CHILD_PATHS, **THREAD_ENV, **(env or {}))
        self.cwd = cwd
        self.lines = []  # (seconds since launch, text)

    def run(self, prefix, timeout=3600, on_line=None):
        """Run to the end (or until ``on_line`` returns True, then SIGTERM). Returns the dict on the line that
        starts with ``prefix`` (None when ``prefix`` is None)."""
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self.load_before = loadavg()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        with open(self.log_path, "w") as log:
            log.write("$ " + " ".join(self.cmd) + "\n")
            proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    cwd=self.cwd, env=self.env, bufsize=1)
            stopped = False
            try:
                for line in proc.stdout:
                    t = time.perf_counter() - t0
                    self.lines.append((t, line.rstrip("\n")))
                    log.write(line)
                    log.flush()  # follow a long run with tail -f
                    if on_line is not None and not stopped and on_line(t, line):
                        proc.terminate()
                        stopped = True
                    if t > timeout and not stopped:
                        proc.kill()
                        stopped = True
            except BaseException:  # interrupted (Ctrl-C, SIGTERM): leave nothing running
                proc.kill()
                proc.wait()
                raise
            proc.wait()
        self.wall_s = time.perf_counter() - t0
        self.load_after = loadavg()
        # CPU seconds of the process (and any it waited for): less sensitive to a busy machine than wall time
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_s = (done.ru_utime - usage.ru_utime) + (done.ru_stime - usage.ru_stime)
        self.returncode, self.stopped = proc.returncode, stopped
        if prefix is None:
            return None
        for _, line in reversed(self.lines):
            if line.startswith(prefix):
                result = json.loads(line[len(prefix):])
                result["load_before"] = self.load_before
                return result
        tail = "\n".join(text for _, text in self.lines[-30:])
        raise RuntimeError(f"{' '.join(self.cmd[:3])}... exited {proc.returncode} without a result line; "
                           f"log {self.log_path}:\n{tail}")


# ==================================================================================================
# Data sets (PNG class folders, written once and reused)
# ==================================================================================================
def _done(folder):
    return os.path.isfile(os.path.join(folder, ".complete"))


def _mark(folder):
    with open(os.path.join(folder, ".complete"), "w") as fh:
        fh.write(datetime.datetime.now().isoformat() + "\n")


def _write(folder, splits):
    """splits: {name: (uint8 images N,H,W, labels N)} -> folder/<split>/<class>/<i>.png via prepare_data."""
    from medimg import prepare_data

    if os.path.isdir(folder):
        shutil.rmtree(folder)
    label_dict = prepare_data.read_label_dict(prepare_data.DEFAULT_LABEL_DICT)
    prepare_data.write_splits(splits, label_dict, folder)
    _mark(folder)
    return folder


def _npz_splits(npz, subsample):
    import numpy as np

    data = np.load(npz)
    splits = {s: (data[f"{s}_images"], data[f"{s}_labels"].reshape(-1)) for s in ("train", "val")}
    if subsample:
        rng = np.random.default_rng(0)
        for s, n in zip(("train", "val"), subsample):
            idx = np.sort(rng.choice(len(splits[s][1]), size=min(n, len(splits[s][1])), replace=False))
            splits[s] = (splits[s][0][idx], splits[s][1][idx])
    return splits


def _resize(images, size):
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def pneumonia(build, npz, size, subsample):
    """PneumoniaMNIST train/val as class folders, at 28 px or upsampled (bilinear) to ``size``."""
    folder = os.path.join(build, f"pneumonia{size if size != 28 else ''}")
    if not _done(folder):
        splits = _npz_splits(npz, subsample)
        if size != 28:
            splits = {s: (_resize(im, size), lab) for s, (im, lab) in splits.items()}
        _write(folder, splits)
    return folder


def synthetic(build, npz, n, subsample):
    """``n`` training images made from PneumoniaMNIST's (random flips, shifts and noise), 28 px, plus its val."""
    import numpy as np

    folder = os.path.join(build, f"synthetic-{n}")
    if not _done(folder):
        splits = _npz_splits(npz, subsample)
        images, labels = splits["train"]
        rng = np.random.default_rng(n)
        pick = rng.integers(0, len(labels), n)
        out = images[pick].astype(np.int16)
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
        shifts = rng.integers(-2, 3, (n, 2))
        for i in range(n):  # small shifts: every image is a different file, as a real set
            out[i] = np.roll(out[i], tuple(shifts[i]), axis=(0, 1))
        out = np.clip(out + rng.normal(0, 3, out.shape), 0, 255).astype(np.uint8)
        _write(folder, {"train": (out, labels[pick]), "val": splits["val"]})
    return folder


# ==================================================================================================
# Sections
# ==================================================================================================
def probe_cmd(args, data, out, extra=(), profile_epoch=0):
    work = os.path.join(out, "work")
    cmd = [sys.executable, os.path.join(HERE, "probe.py")]
    if profile_epoch:
        cmd += ["--profile-epoch", str(profile_epoch)]
    return cmd + ["--", "--train", os.path.join(data, "train"), "--val", os.path.join(data, "val"),
                  "--model-dir", os.path.join(work, "model"), "--output-data-dir", os.path.join(work, "data"),
                  "--output-dir", os.path.join(work, "output"), "--checkpoint-dir", "", *extra]


def steady(result):
    """Images/s over the epochs after the first (warm-up): total images / total time, from train.py's own figure."""
    rows = [r for r in result["epochs"] if r["epoch"] > 1] or result["epochs"]
    images = sum(r["images"] for r in rows)
    seconds = sum(r["images"] / r["images_per_sec"] for r in rows)
    cpu = sum(r["cpu_s"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    return {"images_per_sec": images / seconds, "epoch_ips": [round(r["images_per_sec"], 1) for r in rows],
            "cpu_util": cpu / wall if wall else None, "images_per_cpu_s": images / cpu if cpu else None}


def section_throughput(args, mode, datasets, logs):
    rows = []
    for model, size in args.cases:
        data = datasets[size]
        steps = mode["steps"].get(model, mode["steps"]["*"])
        bs = mode["batch_size"]
        train_runs, plain_runs = [], {w: [] for w in mode["plain_workers"]}
        for rep in range(mode["repeats"]):
            extra = ["--model", model, "--batch-size", bs, "--epochs", mode["train_epochs"],
                     "--max-steps-per-epoch", steps, "--patience", 0]
            child = Child(probe_cmd(args, data, os.path.join(args.build, "runs", f"{model}{size}"), extra),
                          os.path.join(logs, f"throughput-{model}{size}-train-{rep}.log"))
            result = child.run("PROBE_RESULT ")
            if result.get("rc"):
                raise RuntimeError(f"train.py failed (rc {result['rc']}); see {child.log_path}")
            result["steady"] = steady(result)
            train_runs.append(result)
            log(f"  {model}@{size} train.py run {rep + 1}: {result['steady']['images_per_sec']:.1f} img/s "
                f"(epochs {result['steady']['epoch_ips']}, load {child.load_before})")
            for workers in mode["plain_workers"]:
                cmd = [sys.executable, os.path.join(HERE, "plain_loop.py"), "--data", os.path.join(data, "train"),
                       "--model", model, "--batch-size", bs, "--workers", workers,
                       "--warmup-steps", mode["plain_warmup"], "--steps", steps * (mode["train_epochs"] - 1)]
                child = Child(cmd, os.path.join(logs, f"throughput-{model}{size}-plain-w{workers}-{rep}.log"))
                result = child.run("PLAIN_RESULT ")
                plain_runs[workers].append(result)
                log(f"  {model}@{size} plain loop (workers={workers}) run {rep + 1}: "
                    f"{result['images_per_sec']:.1f} img/s (load {child.load_before})")
        fp32 = None
        if mode["fp32_variant"]:  # does bf16 pay on this machine? the same step with amp off
            child = Child(probe_cmd(args, data, os.path.join(args.build, "runs", f"{model}{size}"),
                                    extra + ["--amp", "false"]),
                          os.path.join(logs, f"throughput-{model}{size}-train-fp32.log"))
            result = child.run("PROBE_RESULT ")
            fp32 = {"images_per_sec": steady(result)["images_per_sec"], "load_before": result["load_before"]}
            log(f"  {model}@{size} train.py with amp=false: {fp32['images_per_sec']:.1f} img/s "
                f"(load {child.load_before})")
        best_train = max(train_runs, key=lambda r: r["steady"]["images_per_sec"])
        plain_best = {w: max(runs, key=lambda r: r["images_per_sec"]) for w, runs in plain_runs.items()}
        base_workers = max(plain_best, key=lambda w: plain_best[w]["images_per_sec"])
        train_ips = best_train["steady"]["images_per_sec"]
        base_ips = plain_best[base_workers]["images_per_sec"]
        rows.append({
            "case": f"{model}@{size}", "model": model, "image_size": size, "batch_size": bs,
            "n_train": best_train["n_train"], "steps_timed": steps * (mode["train_epochs"] - 1),
            "amp_dtype": best_train["amp_dtype"], "threads": best_train["threads"],
            "train_py": {"images_per_sec": train_ips, "cpu_util": best_train["steady"]["cpu_util"],
                         "images_per_cpu_s": max(r["steady"]["images_per_cpu_s"] or 0 for r in train_runs),
                         "runs": [r["steady"]["images_per_sec"] for r in train_runs],
                         "epoch_ips": best_train["steady"]["epoch_ips"],
                         "load_before": [r["load_before"] for r in train_runs]},
            "plain": {str(w): {"images_per_sec": plain_best[w]["images_per_sec"],
                               # CPU time of the main process: the whole work only without worker processes
                               "images_per_cpu_s": max(r["images"] / r["cpu_s"] for r in plain_runs[w]) if w == 0
                               else None,
                               "runs": [r["images_per_sec"] for r in plain_runs[w]],
                               "load_before": [r["load_before"] for r in plain_runs[w]]} for w in plain_best},
            "train_py_amp_off": fp32,
            "baseline_workers": base_workers,
            "ratio": train_ips / base_ips,
            "ratio_per_workers": {str(w): train_ips / plain_best[w]["images_per_sec"] for w in plain_best},
        })
        row = rows[-1]
        if 0 in plain_best and row["train_py"]["images_per_cpu_s"]:
            row["ratio_cpu_time"] = row["train_py"]["images_per_cpu_s"] / row["plain"]["0"]["images_per_cpu_s"]
    return rows


def best_ceiling(first, second):
    out = dict(first, measurements=[first, second])
    for key in ("matmul", "matmul_1thread"):
        if first.get(key) and second.get(key):
            out[key] = {dt: max(first[key][dt], second[key][dt], key=lambda v: v["flops"]) for dt in first[key]}
    return out


def section_ceiling(args, mode, logs, name="ceiling"):
    cases = ",".join(f"{m}@{s}:1" for m, s in args.cases)
    cmd = [sys.executable, os.path.join(HERE, "ceiling.py"), "--cases", cases,
           "--sizes", ",".join(str(s) for s in mode["matmul_sizes"]), "--repeats", mode["matmul_repeats"],
           "--conv-batch", mode["batch_size"]]
    child = Child(cmd, os.path.join(logs, name + ".log"))
    return child.run("CEILING_RESULT ")


def attach_ceiling(throughput, ceiling):
    """Achieved FLOP/s of each train.py step and its fraction of the ceiling of the dtype the step uses."""
    for row in throughput or []:
        flops = ceiling["flops_per_image"].get(f"{row['case']}:1")
        dtype = row["amp_dtype"] if row["amp_dtype"] in ceiling["matmul"] else "float32"
        achieved = flops * row["train_py"]["images_per_sec"]
        row["flops_per_image"] = flops
        row["achieved_flops"] = achieved
        row["ceiling_dtype"] = dtype
        row["ceiling_fraction"] = achieved / ceiling["matmul"][dtype]["flops"]
        row["ceiling_fraction_fp32"] = achieved / ceiling["matmul"]["float32"]["flops"]
        per_core = ceiling.get("matmul_1thread")
        if per_core and row["train_py"].get("images_per_cpu_s"):  # per CPU-second vs one core's ceiling
            row["ceiling_fraction_cpu_time"] = flops * row["train_py"]["images_per_cpu_s"] / per_core[dtype]["flops"]
        best_plain = row["plain"][str(row["baseline_workers"])]["images_per_sec"]
        row["plain_ceiling_fraction_fp32"] = flops * best_plain / ceiling["matmul"]["float32"]["flops"]


def section_scaling(args, mode, npz, logs):
    rows = []
    runs = [(n, False) for n in mode["scaling_sizes"]] + [(mode["stream_size"], True)]
    for n, stream in runs:
        data = synthetic(args.build, npz, n, mode["subsample"])
        extra = ["--batch-size", mode["batch_size"], "--epochs", 2, "--max-steps-per-epoch", mode["scaling_steps"],
                 "--patience", 0]
        if stream:
            extra += ["--cache-max-gb", "0.00001"]  # 10 kB: far below any data set, so train.py must stream
        name = f"scaling-{n}{'-streamed' if stream else ''}"
        child = Child(probe_cmd(args, data, os.path.join(args.build, "runs", name), extra),
                      os.path.join(logs, name + ".log"))
        result = child.run("PROBE_RESULT ")
        if result.get("rc"):
            raise RuntimeError(f"train.py failed (rc {result['rc']}) on {n} images; see {child.log_path}")
        sd = steady(result)
        rows.append({"n_images": n, "n_train": result["n_train"], "streamed": result["streamed"],
                     "forced_stream": stream, "load_s": result["load_s"],
                     "load_us_per_image": 1e6 * result["load_s"] / max(1, n),
                     "images_per_sec": sd["images_per_sec"], "cpu_util": sd["cpu_util"],
                     "peak_rss_mb": result["peak_rss_mb"],
                     "total_s": result["total_s"], "load_before": result["load_before"]})
        log(f"  {n} images{' (streamed)' if result['streamed'] else ''}: load {result['load_s']:.1f} s, "
            f"{sd['images_per_sec']:.1f} img/s, peak RSS {result['peak_rss_mb']:.0f} MB")
    cached = [r for r in rows if not r["forced_stream"]]
    summary = {}
    if len(cached) >= 2:
        lo, hi = cached[0], cached[-1]
        summary = {"throughput_ratio_largest_vs_smallest": hi["images_per_sec"] / lo["images_per_sec"],
                   "load_per_image_ratio_largest_vs_smallest": hi["load_us_per_image"] / lo["load_us_per_image"],
                   "rss_bytes_per_extra_image": (hi["peak_rss_mb"] - lo["peak_rss_mb"]) * 2**20
                   / max(1, hi["n_images"] - lo["n_images"])}
    return {"runs": rows, "summary": summary}


def section_quality(args, mode, data, logs):
    work = os.path.join(args.build, "runs", "quality")
    if os.path.isdir(work):
        shutil.rmtree(work)
    cmd = [sys.executable, os.path.join(args.code, "train.py"), "--train", os.path.join(data, "train"),
           "--val", os.path.join(data, "val"), "--model-dir", os.path.join(work, "model"),
           "--output-data-dir", os.path.join(work, "data"), "--output-dir", os.path.join(work, "output"),
           "--checkpoint-dir", "", *mode["ttq_extra"]]
    epochs = []

    def on_line(t, line):
        values = epoch_log.parse_epoch(line)
        if values:
            epochs.append({"epoch": int(values["epoch"]), "wall_s": round(t, 2), "val_auc": values["val_auc"],
                           "val_acc": values["val_acc"], "images_per_sec": values["images_per_sec"]})
            log(f"  epoch {epochs[-1]['epoch']} at {t:.0f} s: val_auc={values['val_auc']:.4f} "
                f"val_acc={values['val_acc']:.4f}")
            return mode["ttq_stop_at_target"] and epochs[-1]["val_auc"] >= TARGET_AUC
        return False

    child = Child(cmd, os.path.join(logs, "quality.log"))
    child.run(None, on_line=on_line)  # train.py prints no result line: the epoch lines and metrics.json are read
    reached = next((e for e in epochs if e["val_auc"] >= TARGET_AUC), None)
    out = {"target_auc": TARGET_AUC, "hyperparameters": list(mode["ttq_extra"]) or "defaults",
           "reached": reached is not None, "epoch": reached["epoch"] if reached else None,
           "wall_s": reached["wall_s"] if reached else None, "total_wall_s": child.wall_s,
           "stopped_at_target": child.stopped, "epochs": epochs, "load_before": child.load_before,
           "returncode": child.returncode}
    metrics_path = os.path.join(work, "data", "metrics.json")
    if os.path.isfile(metrics_path) and not child.stopped:
        with open(metrics_path) as fh:
            metrics = json.load(fh)
        out.update(final_val_auc=metrics["val"]["auc"], final_val_acc=metrics["val"]["accuracy"],
                   best_epoch=metrics["best_epoch"], epochs_run=len(metrics["history"]))
    elif not child.stopped:
        raise RuntimeError(f"the quality run wrote no metrics.json (rc {child.returncode}); see {child.log_path}")
    return out


# ==================================================================================================
# Section sizes: what the image size costs (FLOPs per image; images/s and time to val AUC 0.97)
# ==================================================================================================
def size_flops(args, mode, logs):
    """Training FLOPs per image (benchmarks/ceiling.py's count) of smallcnn (train.py's stem, and stride 1) and
    ResNet-18 at each of ``flop_sizes``: {case: FLOPs}."""
    cases = []
    for size in mode["flop_sizes"]:
        cases += [f"smallcnn@{size}", f"smallcnn/s1@{size}", f"resnet18@{size}"]
    child = Child([sys.executable, os.path.join(HERE, "ceiling.py"), "--cases", ",".join(cases), "--sizes", "64",
                   "--repeats", "1"], os.path.join(logs, "sizes-flops.log"))
    return child.run("CEILING_RESULT ")["flops_per_image"]


def size_run(args, mode, model, size, data, logs):
    """train.py (defaults, ``--model``) on ``data`` until val AUC >= TARGET_AUC or ``size_cap_s``: images/s and
    the wall time of the first epoch at the target."""
    work = os.path.join(args.build, "runs", "sizes", f"{model}-{size}")
    if os.path.isdir(work):
        shutil.rmtree(work)
    cmd = [sys.executable, os.path.join(args.code, "train.py"), "--train", os.path.join(data, "train"),
           "--val", os.path.join(data, "val"), "--model-dir", os.path.join(work, "model"),
           "--output-data-dir", os.path.join(work, "data"), "--output-dir", os.path.join(work, "output"),
           "--checkpoint-dir", "", "--model", model, *mode["size_extra"]]
    epochs = []

    def on_line(t, line):
        values = epoch_log.parse_epoch(line)
        if values:
            epochs.append({"epoch": int(values["epoch"]), "wall_s": round(t, 2), "val_auc": values["val_auc"],
                           "images_per_sec": values["images_per_sec"]})
            return epochs[-1]["val_auc"] >= TARGET_AUC
        return False

    child = Child(cmd, os.path.join(logs, f"sizes-{model}-{size}.log"))
    child.run(None, timeout=mode["size_cap_s"], on_line=on_line)
    if not epochs:
        tail = "\n".join(text for _, text in child.lines[-20:])
        raise RuntimeError(f"sizes {model}@{size}: no epoch within {mode['size_cap_s']} s (rc {child.returncode}); "
                           f"log {child.log_path}:\n{tail}")
    reached = next((e for e in epochs if e["val_auc"] >= TARGET_AUC), None)
    return {"model": model, "size": size, "images_per_sec": median([e["images_per_sec"] for e in epochs]),
            "epochs": epochs, "reached": reached is not None, "wall_s_to_target": reached and reached["wall_s"],
            "epoch_at_target": reached and reached["epoch"], "best_val_auc": max(e["val_auc"] for e in epochs),
            "cap_s": mode["size_cap_s"], "load_before": child.load_before, "load_after": child.load_after,
            "log": child.log_path}


def section_sizes(args, mode, logs):
    out = {"target_auc": TARGET_AUC, "flops_per_image": size_flops(args, mode, logs), "runs": []}
    for model, size in mode["size_cases"]:
        data = pneumonia(args.build, args.npz, size, mode["subsample"])
        run = size_run(args, mode, model, size, data, logs)
        out["runs"].append(run)
        log(f"  {model}@{size}: {run['images_per_sec']:.0f} img/s, "
            + (f"val AUC {TARGET_AUC} at epoch {run['epoch_at_target']}, {run['wall_s_to_target']:.0f} s"
               if run["reached"] else f"best val AUC {run['best_val_auc']:.4f} in the {run['cap_s']} s cap"))
    return out


def render_sizes(s):
    flops = s["flops_per_image"]
    sizes = sorted({int(c.split("@")[1]) for c in flops})
    rows = [[name, *(fmt(flops.get(f"{case}@{size}") and flops[f"{case}@{size}"] / 1e6, ".0f") for size in sizes)]
            for case, name in (("smallcnn", "smallcnn (train.py's stem)"), ("smallcnn/s1", "smallcnn, stride-1 stem"),
                               ("resnet18", "resnet18"))]
    runs = [[f"{r['model']}@{r['size']}", f"{r['images_per_sec']:.0f}",
             f"{r['wall_s_to_target']:.0f}" if r["reached"] else f"not in {r['cap_s']}",
             fmt(r["epoch_at_target"], "d"), f"{r['best_val_auc']:.4f}",
             " ".join(f"{v:.2f}" for v in r["load_before"] or [])] for r in s["runs"]]
    return "\n".join([
        "\nImage sizes: training MFLOPs per image (forward + backward, convolutions and matmuls):",
        table(["model", *(f"{size} px" for size in sizes)], rows),
        f"\ntrain.py (defaults but --model) on PneumoniaMNIST upsampled; stopped at val AUC {s['target_auc']}:",
        table(["model@px", "train img/s (median epoch)", "s to target", "epoch", "best val AUC", "load before"],
              runs)])


# ==================================================================================================
# Section dev: the defaults on the development settings (val splits only), several seeds
# ==================================================================================================
def dev_npz(name, folder):
    """The npz ``name`` in ``folder`` (--dev-data), else in the repository's data/; None if neither has it."""
    for candidate in (os.path.join(folder, name), os.path.join(ROOT, "data", name)):
        if os.path.isfile(candidate):
            return candidate
    return None


def stratified_subsample(labels, n, seed):
    """Sorted indices of ``n`` of ``labels`` drawn per class in proportion to the class counts (largest
    remainders; at least one of every class), with their own ``seed``. All indices when ``n`` is None or covers
    everything."""
    import numpy as np

    labels = np.asarray(labels).reshape(-1)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    if n < len(classes):
        raise ValueError(f"cannot keep every one of {len(classes)} classes in {n} images")
    exact = n * counts / counts.sum()
    take = np.maximum(1, np.floor(exact).astype(int))
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):  # largest remainders first
        if take.sum() >= n:
            break
        if take[i] < counts[i]:
            take[i] += 1
    while take.sum() > n:  # only when the at-least-one rule overshot: trim the largest class
        take[np.argmax(take)] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def dev_data(args, mode, name):
    """The class folders of dev setting ``name`` (train cut as the setting says, the npz's val as the val
    channel, no test channel), written once with medimg.prepare_data.write_splits. Returns (folder, info)."""
    import numpy as np

    from medimg import prepare_data

    setting = DEV_SETTINGS[name]
    npz = dev_npz(setting["npz"], args.dev_data)
    if npz is None:
        raise RuntimeError(f"dev setting {name}: {setting['npz']} is in neither {args.dev_data} nor "
                           f"{os.path.join(ROOT, 'data')}; give --dev-data or leave the setting out (--settings)")
    cap_train, cap_val = mode["dev_cap"] or (None, None)
    caps = [v for v in (setting["n_train"], cap_train) if v]
    n_train = min(caps) if caps else None
    spec = {"npz": os.path.abspath(npz), "n_train": n_train, "n_val": cap_val, "subsample_seed": DEV_SUBSAMPLE_SEED,
            "classes": list(setting["classes"])}
    folder = os.path.join(args.build, "dev-data", name + (f"-smoke{cap_train}x{cap_val}" if mode["dev_cap"] else ""))
    spec_path = os.path.join(folder, "dev-spec.json")
    if _done(folder) and os.path.isfile(spec_path):
        with open(spec_path) as fh:
            written = json.load(fh)
        if written["spec"] == spec:
            return folder, written["info"]
    data = np.load(npz)
    splits, info = {}, {"npz": os.path.basename(npz), "subsample_seed": DEV_SUBSAMPLE_SEED}
    for split, cap in (("train", n_train), ("val", cap_val)):
        images, labels = data[f"{split}_images"], data[f"{split}_labels"].reshape(-1)
        idx = stratified_subsample(labels, cap, DEV_SUBSAMPLE_SEED)
        splits[split] = (images[idx], labels[idx])
        info[f"n_{split}"] = int(len(idx))
        info[f"{split}_of"] = int(len(labels))
        info[f"{split}_per_class"] = np.bincount(labels[idx], minlength=len(setting["classes"])).tolist()
    info["image_shape"] = list(data["train_images"].shape[1:])
    info["classes"] = list(setting["classes"])
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    prepare_data.write_splits(splits, list(setting["classes"]), folder)
    with open(spec_path, "w") as fh:
        json.dump({"spec": spec, "info": info}, fh, indent=2)
    _mark(folder)
    return folder, info


def val_as_test_args(val):
    """WORKAROUND for a train.py that writes no val ECE (before issue 13's commit 002e255, which added
    ``metrics["val"]["ece"]``): such a train.py keeps per-image probabilities for the test channel only, so the
    dev runs pass the val folder as both --val and --test. Model selection still sees val only; metrics.json's
    "test" figures are then val's (same weights, same images) and serve only to compute the val ECE here
    (``val_ece``). ``--val-as-test auto`` (``section_dev``) uses it only when the first run shows it is needed;
    drop it with the need for before/after comparisons against such a checkout."""
    return ["--val", val, "--test", val]


def expected_calibration_error(labels, probabilities, bins=ECE_BINS):
    """ECE of the top-class confidence by train.py's own definition (code/metrics.py: Guo et al. 2017, bins
    ((m-1)/M, m/M]); None when there are no images."""
    if not len(labels):
        return None
    return container.load("metrics").expected_calibration_error(labels, probabilities, bins=bins)


def val_ece(metrics):
    """(val ECE, where it came from): train.py's own figure when it writes one (of the probabilities it serves:
    after temperature scaling where train.py fits one on val), else computed from the per-image predictions of
    the test channel, which ``val_as_test_args`` made the val folder."""
    val = metrics.get("val") or {}
    if val.get("ece") is not None:
        return float(val["ece"]), "metrics.json val.ece"
    predictions = metrics.get("test_predictions")
    if predictions:
        return expected_calibration_error(predictions["labels"], predictions["probabilities"]), \
            "harness, from the val folder passed as --test"
    return None, None


def run_steps(metrics, n_train):
    """(optimiser steps, how they were found): metrics.json's ``steps`` when train.py writes it, else epochs run x
    steps per epoch as code/engine.py counts them (full batches of min(batch size, n); the last partial batch is
    dropped; at least one; capped by max-steps-per-epoch)."""
    if metrics.get("steps") is not None:
        return int(metrics["steps"]), "metrics.json"
    hp = (metrics.get("config") or {}).get("hyperparameters") or {}
    try:
        bs = min(int(hp.get("batch_size", 128)), n_train)
    except (TypeError, ValueError):  # "auto" without a steps figure: not countable from here
        return None, None
    per_epoch = max(1, n_train // bs)
    if hp.get("max_steps_per_epoch"):
        per_epoch = min(per_epoch, int(hp["max_steps_per_epoch"]))
    return len(metrics["history"]) * per_epoch, "epochs x steps per epoch"


def spread(values):
    """mean, sample standard deviation (None for fewer than two values) and the values."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "values": []}
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return {"mean": mean, "sd": sd, "values": values}


def median(values):
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


DATA_LINE = re.compile(r"data: train=(\d+) val=(\d+)")


def dev_run(args, mode, name, folder, info, seed, logs, val_as_test):
    """train.py with default hyperparameters on one setting and seed, in its own process (``val_as_test``: with
    ``val_as_test_args``). Returns a dict."""
    work = os.path.join(args.build, "runs", "dev", name, f"seed{seed}")
    val = os.path.join(folder, "val")
    if os.path.isdir(work):
        shutil.rmtree(work)
    cmd = [sys.executable, os.path.join(args.code, "train.py"), "--train", os.path.join(folder, "train"),
           *(val_as_test_args(val) if val_as_test else ["--val", val]), "--model-dir", os.path.join(work, "model"),
           "--output-data-dir", os.path.join(work, "data"), "--output-dir", os.path.join(work, "output"),
           "--checkpoint-dir", "", "--seed", seed, *mode["dev_extra"]]
    child = Child(cmd, os.path.join(logs, f"dev-{name}-seed{seed}.log"))
    child.run(None)
    metrics_path = os.path.join(work, "data", "metrics.json")
    if child.returncode != 0 or not os.path.isfile(metrics_path):
        tail = "\n".join(text for _, text in child.lines[-20:])
        raise RuntimeError(f"dev {name} seed {seed}: train.py exited {child.returncode}"
                           f"{'' if os.path.isfile(metrics_path) else ' without metrics.json'}; "
                           f"log {child.log_path}:\n{tail}")
    with open(metrics_path) as fh:
        metrics = json.load(fh)
    n_train = info["n_train"]
    for _, line in child.lines:  # train.py's own count after any hold-out (none here: there is a val channel)
        found = DATA_LINE.search(line)
        if found:
            n_train = int(found.group(1))
    steps, steps_from = run_steps(metrics, n_train)
    ece, ece_from = val_ece(metrics)
    test = (metrics.get("test") or {}) if val_as_test else {}
    config = metrics.get("config") or {}
    plan = metrics.get("plan") or {}
    return {"seed": seed, "val_accuracy": metrics["val"]["accuracy"], "val_auc": metrics["val"]["auc"],
            "val_ece": ece, "ece_from": ece_from,
            # of the raw softmax: train.py's figure where it calibrates, else the same as val_ece (nothing to undo)
            "val_ece_uncalibrated": metrics["val"].get("ece_uncalibrated",
                                                       None if metrics.get("decisions") else ece),
            "temperature": (metrics.get("decisions") or {}).get("temperature"),
            "steps": steps, "steps_from": steps_from, "val_as_test": val_as_test,
            "epochs_run": metrics.get("epochs_run", len(metrics["history"])), "best_epoch": metrics.get("best_epoch"),
            "epochs_max": plan.get("epochs", (config.get("hyperparameters") or {}).get("epochs")),
            "batch_size": plan.get("batch_size", (config.get("hyperparameters") or {}).get("batch_size")),
            "plan": plan or None,
            "n_train_seen": n_train, "in_channels": config.get("in_channels"), "image_size": config.get("image_size"),
            "architecture": config.get("architecture"), "wall_s": round(child.wall_s, 2),
            "cpu_s": round(child.cpu_s, 1), "train_images_per_sec_median": median(
                [h["images_per_sec"] for h in metrics["history"] if h.get("images_per_sec")]),
            # the trick's check: the val folder as --test must give val's own figures
            "test_equals_val": (test.get("accuracy") == metrics["val"]["accuracy"]) if test else None,
            "load_before": child.load_before, "load_after": child.load_after, "log": child.log_path,
            "metrics": metrics_path}


def section_dev(args, mode, logs):
    """Every dev setting x seed; per setting the runs and their mean / sample sd."""
    out = {"settings": {}, "seeds": list(args.seeds), "extra_args": list(mode["dev_extra"]) or "defaults",
           "subsample_seed": DEV_SUBSAMPLE_SEED, "ece_bins": ECE_BINS, "code": code_version(args.code)}
    prepared = {name: dev_data(args, mode, name) for name in args.settings}  # all data first: errors surface now
    val_as_test = {"on": True, "off": False, "auto": None}[args.val_as_test]
    for name, (folder, info) in prepared.items():
        runs = []
        for seed in args.seeds:
            run = dev_run(args, mode, name, folder, info, seed, logs, bool(val_as_test))
            if val_as_test is None:  # auto: the first run says whether this train.py reports a val ECE itself
                val_as_test = run["val_ece"] is None
                if val_as_test:
                    log(f"  {name} seed {seed}: train.py wrote no val ECE; again with the val folder as --test too")
                    run = dev_run(args, mode, name, folder, info, seed, logs, True)
            runs.append(run)
            log(f"  {name} seed {seed}: val acc {run['val_accuracy']:.4f}, AUC {run['val_auc']:.4f}, "
                f"ECE {fmt(run['val_ece'], '.4f')}, {run['steps']} steps, {run['epochs_run']} epochs (best "
                f"{run['best_epoch']}), {run['in_channels']} channel(s), {run['wall_s']:.0f} s "
                f"(load {run['load_before']} -> {run['load_after']})")
        keys = ("val_accuracy", "val_auc", "val_ece", "val_ece_uncalibrated", "steps", "epochs_run", "wall_s", "cpu_s")
        out["settings"][name] = dict(info, runs=runs, **{key: spread([r[key] for r in runs]) for key in keys})
    out["val_as_test"] = bool(val_as_test)
    return out


def code_version(folder):
    """The git commit of the checkout that holds ``folder`` and whether ``folder`` differs from it."""
    def git(*cmd):
        try:
            return subprocess.run(["git", "-C", folder, *cmd], capture_output=True, text=True, timeout=30,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--", ".")
    return {"dir": os.path.abspath(folder), "commit": commit,
            "uncommitted_changes": None if changed is None else bool(changed)}


# ==================================================================================================
# Report
# ==================================================================================================
def log(message):
    print(message, flush=True)


def fmt(value, spec=".1f", none="-"):
    return none if value is None else format(value, spec)


def table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in rows]
    return "\n".join(lines)


def targets(results):
    out = []
    for row in results.get("throughput") or []:
        if row["model"] == "smallcnn":
            out.append({"name": f"train.py vs plain loop, {row['case']}", "target": f">= {TARGET_RATIO}x",
                        "measured": f"{row['ratio']:.2f}x", "met": row["ratio"] >= TARGET_RATIO})
            if row.get("ratio_cpu_time"):
                out.append({"name": f"train.py vs plain loop, CPU time per image, {row['case']}",
                            "target": f">= {TARGET_RATIO}x", "measured": f"{row['ratio_cpu_time']:.2f}x",
                            "met": row["ratio_cpu_time"] >= TARGET_RATIO})
            if "ceiling_fraction" in row:
                out.append({"name": f"step FLOP/s vs {row['ceiling_dtype']} matmul ceiling, {row['case']}",
                            "target": f">= {TARGET_CEILING_FRACTION:.0%}", "measured": f"{row['ceiling_fraction']:.0%}",
                            "met": row["ceiling_fraction"] >= TARGET_CEILING_FRACTION})
    d = results.get("dev")
    full = ((d or {}).get("settings") or {}).get("pneumonia-all")
    if full and d["extra_args"] == "defaults":
        slowest = max(full["runs"], key=lambda r: r["wall_s"])
        load = slowest["load_before"][0] if slowest["load_before"] else None
        cpus = results["machine"]["cpus"]
        out.append({"name": f"defaults train PneumoniaMNIST 28 px (all {full['n_train']}) on {cpus} CPUs, slowest seed",
                    "target": f"<= {TRAIN_TIME_LIMIT_S} s",
                    "measured": f"{slowest['wall_s']:.0f} s (load {fmt(load, '.1f')} before it)",
                    "met": slowest["wall_s"] <= TRAIN_TIME_LIMIT_S})
    q = results.get("quality")
    if q:
        out.append({"name": f"default configuration reaches val AUC {TARGET_AUC}",
                    "target": "reached", "measured": f"epoch {q['epoch']}, {q['wall_s']:.0f} s" if q["reached"]
                    else "not reached", "met": q["reached"]})
    return out


def pm(stats, spec=".4f"):
    """mean ± sd (sd left out with one value)."""
    if stats["mean"] is None:
        return "-"
    return format(stats["mean"], spec) + ("" if stats["sd"] is None else " ± " + format(stats["sd"], spec))


def render_dev(d, machine):
    code = d["code"]
    head = (f"\nDev settings: train.py at {code['dir']} (commit {(code['commit'] or '?')[:10]}"
            f"{', with uncommitted changes' if code['uncommitted_changes'] else ''}), hyperparameters: "
            f"{d['extra_args'] if d['extra_args'] == 'defaults' else ' '.join(d['extra_args'])}; val split only "
            f"(no test channel); seeds {', '.join(map(str, d['seeds']))}; mean ± sample sd over seeds; ECE "
            f"{d['ece_bins']} equal-width bins on the top-class confidence; on {machine.get('cpu')}, "
            f"{machine['cpus']} CPUs, ISA {', '.join(machine.get('isa') or []) or '?'}")
    rows, seeds = [], []
    for name, st in d["settings"].items():
        runs = st["runs"]
        channels = sorted({r["in_channels"] for r in runs})
        rows.append([name, st["n_train"], st["n_val"], len(st["classes"]), "/".join(map(str, channels)),
                     pm(st["val_accuracy"]), pm(st["val_auc"]), pm(st["val_ece"]),
                     pm(st.get("val_ece_uncalibrated") or {"mean": None}),
                     "/".join(str(r["steps"]) for r in runs),
                     "/".join(f"{r['epochs_run']}({r['best_epoch']})" for r in runs),
                     "/".join(f"{r['wall_s']:.0f}" for r in runs)])
        for r in runs:
            seeds.append([name, r["seed"], f"{r['val_accuracy']:.4f}", f"{r['val_auc']:.4f}", fmt(r["val_ece"], ".4f"),
                          r["steps"], r["epochs_run"], r["best_epoch"], f"{r['wall_s']:.1f}",
                          fmt(r.get("cpu_s")), fmt(r.get("train_images_per_sec_median"), ".0f"),
                          " ".join(f"{v:.2f}" for v in r["load_before"] or []),
                          " ".join(f"{v:.2f}" for v in r["load_after"] or [])])
    return "\n".join([
        head + ":",
        table(["setting", "train", "val", "classes", "channels", "val acc", "val AUC", "val ECE", "val ECE uncal.",
               "steps", "epochs run (best)", "wall s"], rows),
        "(val ECE: of the probabilities train.py serves; uncal.: of the raw softmax, the same where train.py does "
        "not calibrate; a temperature fitted on val makes val's own ECE optimistic. Steps, epochs and wall time: one "
        "value per seed; wall time from process launch to exit, start-up and decoding included)",
        "\nEach run:",
        table(["setting", "seed", "val acc", "val AUC", "val ECE", "steps", "epochs", "best", "wall s", "CPU s",
               "train img/s (median epoch)", "load before", "load after"], seeds),
        "(CPU s: user + system seconds of the run's process; train img/s: train.py's own per-epoch figure; both, "
        "with the load averages, show how much a busy machine stretched the wall time)"])


def render(results):
    parts = []
    m = results["machine"]
    parts.append(f"machine: {m.get('cpu')}, {m['cpus']} CPUs, {m.get('mem_gb', '?')} GB, ISA {m.get('isa')}; "
                 f"torch {results['torch']}; threads {results.get('threads', 'default')}; "
                 f"load average at start {results['load_start']}, "
                 f"at end {results['load_end']}; mode {results['mode']}")
    c = results.get("ceiling")
    if c:
        one = c.get("matmul_1thread") or {}
        parts.append("\nHardware ceiling (best large square matmul; best of the measurements before and after the "
                     f"throughput runs; default threads = {c['threads']}):\n" + table(
                         ["dtype", "GFLOP/s", "GFLOP/s on 1 thread"],
                         [[k, f"{v['flops'] / 1e9:.1f}", fmt(one.get(k) and one[k]["flops"] / 1e9)]
                          for k, v in c["matmul"].items()]))
        conv = c.get("conv_speedup") or {}
        if conv:
            parts.append("\nConvolutions alone (each conv layer of the model at its own shape, batch "
                         f"{next(iter(conv.values()))['batch']}, forward + backward): what precision and layout "
                         "can give, whatever the data path:\n" + table(
                             ["case", "plain: fp32 NCHW GFLOP/s", "train.py: dtype", "channels_last GFLOP/s",
                              "speed-up"],
                             [[k.rsplit(":", 1)[0], f"{v['plain']['flops'] / 1e9:.1f}", v["train_py"]["dtype"],
                               f"{v['train_py']['flops'] / 1e9:.1f}", f"{v['speedup']:.2f}x"]
                              for k, v in conv.items()]))
    t = results.get("throughput")
    if t:
        rows, work, ceil = [], [], []
        for r in t:
            plain = r["plain"][str(r["baseline_workers"])]["images_per_sec"]
            rows.append([r["case"], r["batch_size"], f"{r['train_py']['images_per_sec']:.1f}", r["amp_dtype"],
                         fmt(r.get("train_py_amp_off") and r["train_py_amp_off"]["images_per_sec"]),
                         f"{plain:.1f}", r["baseline_workers"], f"{r['ratio']:.2f}x",
                         fmt(r["train_py"]["cpu_util"], ".2f")])
            if r.get("ratio_cpu_time"):
                work.append([r["case"], f"{r['train_py']['images_per_cpu_s']:.1f}",
                             f"{r['plain']['0']['images_per_cpu_s']:.1f}", f"{r['ratio_cpu_time']:.2f}x"])
            if r.get("flops_per_image"):
                ceil.append([r["case"], f"{r['flops_per_image'] / 1e6:.0f}", f"{r['achieved_flops'] / 1e9:.1f}",
                             r["ceiling_dtype"], f"{100 * r['ceiling_fraction']:.0f}%",
                             fmt(r.get("ceiling_fraction_cpu_time") and 100 * r["ceiling_fraction_cpu_time"], ".0f"),
                             f"{100 * r['plain_ceiling_fraction_fp32']:.0f}%"])
        parts.append("\nTraining throughput, steady state, wall clock (images/s; train.py = its own data path and "
                     "step; plain = ImageFolder + PIL/ToTensor per sample, fp32 NCHW; cpu util = CPU s / wall s of "
                     "train.py):\n" + table(["case", "batch", "train.py", "step dtype", "train.py amp off", "plain",
                                            "plain workers", "ratio", "cpu util"], rows))
        if work:
            parts.append("\nWork per image, CPU time of the process (images per CPU-second; less sensitive to a busy "
                         "machine; the plain loop without workers):\n" + table(
                             ["case", "train.py", "plain", "ratio"], work))
        if ceil:
            parts.append("\nFraction of the matmul ceiling (training FLOPs per image x images/s, against the ceiling "
                         "of the step's dtype; the plain loop against fp32):\n" + table(
                             ["case", "MFLOP/img", "GFLOP/s", "dtype", "train.py of ceiling",
                              "train.py per CPU-s of 1-core ceiling, %", "plain of fp32 ceiling"],
                             ceil))
    s = results.get("scaling")
    if s:
        rows = [[r["n_images"], "streamed (workers)" if r["streamed"] else "cached in memory",
                 f"{r['load_s']:.1f}", f"{r['load_us_per_image']:.0f}", f"{r['images_per_sec']:.1f}",
                 f"{r['peak_rss_mb']:.0f}"] for r in s["runs"]]
        parts.append("\nScaling (smallcnn @ 28 px, synthetic PNGs):\n" + table(
            ["images", "data path", "load s", "load us/img", "img/s", "peak RSS MB"], rows))
        if s["summary"]:
            sm = s["summary"]
            parts.append(f"largest vs smallest: throughput x{sm['throughput_ratio_largest_vs_smallest']:.2f}, "
                         f"load time per image x{sm['load_per_image_ratio_largest_vs_smallest']:.2f}, "
                         f"memory {sm['rss_bytes_per_extra_image']:.0f} bytes per extra image")
    q = results.get("quality")
    if q:
        reached = (f"val AUC >= {q['target_auc']} at epoch {q['epoch']}, {q['wall_s']:.0f} s after launch"
                   if q["reached"] else f"val AUC {q['target_auc']} not reached")
        final = (f"; final (best epoch {q['best_epoch']} of {q['epochs_run']}): val AUC {q['final_val_auc']:.4f}, "
                 f"val accuracy {q['final_val_acc']:.4f}, total {q['total_wall_s']:.0f} s"
                 if "final_val_auc" in q else " (stopped at the target)" if q["stopped_at_target"] else "")
        parts.append(f"\nTime to quality (train.py, hyperparameters: {q['hyperparameters']}): {reached}{final}")
        ips = sorted(e["images_per_sec"] for e in q["epochs"])
        if ips:  # how much of the machine the run had: a busy machine stretches the wall time
            parts.append(f"train.py's images/s over the epochs: median {ips[len(ips) // 2]:.0f}, "
                         f"min {ips[0]:.0f}, max {ips[-1]:.0f}; load average before the run {q['load_before']}")
    d = results.get("dev")
    if d:
        parts.append(render_dev(d, results["machine"]))
    if results.get("sizes"):
        parts.append(render_sizes(results["sizes"]))
    tg = results.get("targets")
    if tg:
        parts.append("\nTargets:\n" + table(["target", "wanted", "measured", "met"],
                                            [[x["name"], x["target"], x["measured"], "yes" if x["met"] else "NO"]
                                             for x in tg]))
    return "\n".join(parts)


# ==================================================================================================
# Main
# ==================================================================================================
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but dev)")
    p.add_argument("--quick", action="store_true", help="fewer steps and sizes; the quality run stops at its target")
    p.add_argument("--smoke", action="store_true", help="tiny everything (the test suite's check of the machinery)")
    p.add_argument("--threads", type=int, default=0,
                   help="OMP/MKL threads of every measurement process (0: torch's default, one per core)")
    p.add_argument("--cases", default=",".join(CASES), help="throughput cases, model@size (size 28 or 64)")
    p.add_argument("--out", default=None, help="JSON results (default: BUILD/results.json)")
    p.add_argument("--build", default=os.path.join(ROOT, "build", "bench"), help="data, runs and logs")
    p.add_argument("--npz", default=os.path.join(ROOT, "data", "pneumoniamnist_trainval.npz"))
    p.add_argument("--code", default=CODE,
                   help="the code/ folder whose train.py every measurement runs (default: this checkout's); "
                        "e.g. a git worktree of an earlier commit for before/after figures")
    p.add_argument("--dev-data", default=DEV_DATA, help="folder of the dev settings' npz files (section dev)")
    p.add_argument("--settings", default=None,
                   help=f"dev settings to run, comma-separated subset of {','.join(DEV_SETTINGS)} (default: all; "
                        "--smoke: pneumonia-300,retina)")
    p.add_argument("--seeds", default=None, help="dev seeds, comma-separated (default 1,2,3; --quick, --smoke: 1)")
    p.add_argument("--val-as-test", choices=("auto", "on", "off"), default="auto",
                   help="dev: also pass the val folder as --test, for the val ECE of a train.py that writes none "
                        "(auto: when the first run shows it is needed)")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    args.cases = [(c.split("@")[0], int(c.split("@")[1])) for c in args.cases.split(",") if c.strip()]
    bad = [f"{m}@{s}" for m, s in args.cases if s not in (28, 64)]
    if bad:
        p.error(f"case {bad[0]}: the image size must be 28 (PneumoniaMNIST) or 64 (upsampled)")
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    args.settings = ([s.strip() for s in args.settings.split(",") if s.strip()] if args.settings
                     else list(mode["dev_settings"] or DEV_SETTINGS))
    bad = [s for s in args.settings if s not in DEV_SETTINGS]
    if bad:
        p.error(f"unknown dev setting {bad[0]!r}; choose from {', '.join(DEV_SETTINGS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else list(mode["dev_seeds"])
    except ValueError:
        p.error(f"--seeds: whole numbers, comma-separated (got {args.seeds!r})")
    if not args.seeds or any(s < 0 for s in args.seeds):
        p.error("--seeds: at least one seed, none negative")
    args.code = os.path.abspath(args.code)
    if not os.path.isfile(os.path.join(args.code, "train.py")):
        p.error(f"--code {args.code}: no train.py there")
    args.dev_data = os.path.abspath(args.dev_data)
    args.build = os.path.abspath(args.build)
    args.out = args.out or os.path.join(args.build, "results.json")
    return args


def _terminated(signum, frame):
    raise SystemExit(f"benchmarks: stopped by signal {signum}")


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)  # so that the running measurement is ended too
    CHILD_PATHS["PYTHONPATH"] = args.code
    if args.threads:
        THREAD_ENV.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    mode = MODES[mode_name]
    os.makedirs(args.build, exist_ok=True)
    logs = os.path.join(args.build, "logs")
    results = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "mode": mode_name,
               "machine": machine_info(), "torch": torch_version(), "load_start": loadavg(),
               "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in mode.items()},
               "sections": args.sections, "threads": args.threads or "default", "code": code_version(args.code)}
    log(f"benchmarks ({mode_name}): {', '.join(args.sections)}; load average {results['load_start']}; "
        f"logs in {logs}")
    t0 = time.perf_counter()
    sub = mode["subsample"]
    datasets = {}
    if {"throughput", "quality"} & set(args.sections):
        datasets[28] = pneumonia(args.build, args.npz, 28, sub)
    if "throughput" in args.sections and any(size == 64 for _, size in args.cases):
        datasets[64] = pneumonia(args.build, args.npz, 64, sub)
    if "ceiling" in args.sections:
        log("ceiling: matmul FLOP/s and FLOPs per image")
        results["ceiling"] = section_ceiling(args, mode, logs)
    if "throughput" in args.sections:
        log("throughput: train.py vs the plain loop")
        results["throughput"] = section_throughput(args, mode, datasets, logs)
        if results.get("ceiling"):
            log("ceiling again (a busy machine can spoil one measurement; the best of the two counts)")
            results["ceiling"] = best_ceiling(results["ceiling"], section_ceiling(args, mode, logs, "ceiling-2"))
            attach_ceiling(results["throughput"], results["ceiling"])
    if "scaling" in args.sections:
        log("scaling: 5k / 20k / 100k images, and a data set over the memory budget")
        results["scaling"] = section_scaling(args, mode, args.npz, logs)
    if "quality" in args.sections:
        log("quality: default configuration to val AUC 0.97")
        results["quality"] = section_quality(args, mode, datasets[28], logs)
    if "dev" in args.sections:
        log(f"dev: default train.py on {', '.join(args.settings)} x seeds {', '.join(map(str, args.seeds))} "
            f"(code {args.code})")
        results["dev"] = section_dev(args, mode, logs)
    if "sizes" in args.sections:
        log("sizes: FLOPs per image, and images/s and time to val AUC 0.97 at 28-128 px")
        results["sizes"] = section_sizes(args, mode, logs)
    results["load_end"] = loadavg()
    results["elapsed_s"] = time.perf_counter() - t0
    results["targets"] = targets(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
        fh.write("\n")
    log("\n" + render(results))
    log(f"\nresults: {args.out} ({results['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
