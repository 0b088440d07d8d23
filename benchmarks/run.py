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
* ``transfer`` (not in the default set; ``--only transfer``): what the fine-tuning plan buys, without ImageNet
  weights: torchvision's ResNet-18 trained on one dev set (RetinaMNIST; PneumoniaMNIST), its weights given as a
  weights channel to runs on a 300-image subset of the other (PneumoniaMNIST; RetinaMNIST), against training from
  scratch and against fine-tuning with one lr and the from-scratch budget, seeds 1-3, each judged on its own val
  split (benchmarks/sections/transfer.py).
* ``datapath`` (not in the default set; ``--only datapath``): the data path at real resolution: train.py's time to
  data ready on 3,000 full-size (512 px) PNGs and on their shards at 224 px, images/s per CPU second of the plain
  ImageFolder loop (PNG, JPEG) and of train.py's path (folders, shards, streamed shards), a 100,000-image
  streamed run's peak memory against its stated bound, and the A10G's consumption (benchmarks/sections/datapath.py).
* ``dev`` (not in the default set; ``--only dev``): the quality of the defaults on the development settings of
  ../shared/data/ (PneumoniaMNIST with its train split subsampled to 300 and 1,000 images, stratified by class
  with a fixed subsample seed, and all 4,708; RetinaMNIST, 1,080 RGB images, 5 grades), each judged on its own
  val split, never on a test split: train.py with default hyperparameters (only paths, ``--seed`` and
  ``--checkpoint-dir ''``) for seeds 1, 2 and 3; per setting val accuracy and AUC (mean, sample standard
  deviation and each seed), val ECE (15 equal-width bins on the top-class confidence, Guo et al. 2017),
  optimiser steps, epochs run and wall time. ``--code DIR`` runs another checkout's train.py (before/after).

Each measurement runs in its own process; the load average before each one and at the start and end is
recorded, so a reader can judge a busy machine. Results: a table on stdout and a JSON file (``--out``).

This module is the command line and the section registry; the process harness is benchmarks/harness.py, the data
benchmarks/datasets.py, the targets and the printed report benchmarks/report.py, and each section a module of
benchmarks/sections/.
"""
import argparse
import datetime
import json
import os
import signal
import sys
import time

if __name__ == "__main__" and not __package__:
    # `python benchmarks/run.py` puts benchmarks/ itself on sys.path, not the checkout, and pip install -e . maps
    # only medimg: load this folder as the package `benchmarks` by path (as medimg.container loads code/'s files),
    # so that its modules import each other as benchmarks.<name> however run.py is started (also python -m
    # benchmarks.run, and the tests' `from benchmarks import ...`).
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "benchmarks", os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py"),
        submodule_search_locations=[os.path.dirname(os.path.abspath(__file__))])
    sys.modules["benchmarks"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["benchmarks"])

from benchmarks import datasets, harness, report  # noqa: E402 (after the package is in place)
from benchmarks.harness import CODE, ROOT, log  # noqa: E402
from benchmarks.sections import (ceiling, datapath, dev, ensemble, quality, scaling, sizes, throughput,  # noqa: E402
                                 transfer)

# The sections, in the order they run and print: name -> module (benchmarks/sections/__init__.py says what a
# section module has). A new section is a module there and a line here.
SECTIONS = {"ceiling": ceiling, "throughput": throughput, "scaling": scaling, "quality": quality, "dev": dev,
            "sizes": sizes, "transfer": transfer, "ensemble": ensemble, "datapath": datapath}
# dev takes 15-25 minutes more (--only dev), sizes 15-25 (--only sizes), transfer 30-60 (--only transfer), ensemble
# 30-60 (--only ensemble --settings pneumonia-300,pneumonia-1000,retina), datapath 10-20 (--only datapath; about
# 6 GB of data under --build)
DEFAULT_SECTIONS = ("ceiling", "throughput", "scaling", "quality")
CASES = ("smallcnn@28", "resnet18@64")  # model@image size; ResNet-18 is torchvision's (stride-2 stem, max-pool)

# Settings per mode: steps are per timed epoch (train.py) or timed steps (plain loop).
MODES = {
    "full": dict(repeats=2, train_epochs=3, steps={"smallcnn": 30, "resnet18": 12, "*": 5}, plain_warmup=5,
                 plain_workers=(0, 2), scaling_sizes=(5_000, 20_000, 100_000), stream_size=20_000, scaling_steps=20,
                 matmul_sizes=(2048, 4096), matmul_repeats=5, ttq_stop_at_target=False, ttq_extra=(),
                 batch_size=128, subsample=None, fp32_variant=True,
                 dev_seeds=(1, 2, 3), dev_extra=(), dev_cap=None, dev_settings=None,
                 size_cases=sizes.CASES, size_cap_s=300, size_extra=(), flop_sizes=(28, 64, 128, 224),
                 transfer_pairs=None, datapath_n=3000, datapath_source=512, plain_n=1000, stream_n=100_000),
    "quick": dict(repeats=1, train_epochs=2, steps={"smallcnn": 15, "resnet18": 5, "*": 3}, plain_warmup=3,
                  plain_workers=(0,), scaling_sizes=(5_000, 20_000), stream_size=5_000, scaling_steps=10,
                  matmul_sizes=(2048,), matmul_repeats=3, ttq_stop_at_target=True, ttq_extra=(),
                  batch_size=128, subsample=None, fp32_variant=False,
                  dev_seeds=(1,), dev_extra=(), dev_cap=None, dev_settings=None,
                  size_cases=sizes.CASES, size_cap_s=120, size_extra=(), flop_sizes=(28, 64, 128, 224),
                  transfer_pairs=None, datapath_n=3000, datapath_source=512, plain_n=600, stream_n=20_000),
    # the test suite's: tiny everything, only checks that the machinery runs and reports
    "smoke": dict(repeats=1, train_epochs=2, steps={"*": 1}, plain_warmup=1,
                  plain_workers=(0,), scaling_sizes=(64, 128), stream_size=64, scaling_steps=1,
                  matmul_sizes=(128,), matmul_repeats=1, ttq_stop_at_target=False, ttq_extra=("--epochs", "1"),
                  batch_size=16, subsample=(96, 32), fp32_variant=False,
                  # dev: train and val each cut to at most these many images (stratified), one epoch, one seed
                  dev_seeds=(1,), dev_extra=("--epochs", "1"), dev_cap=(48, 40),
                  dev_settings=("pneumonia-300", "retina"),
                  size_cases=(("smallcnn", 28), ("smallcnn", 64)), size_cap_s=120, size_extra=("--epochs", "1"),
                  flop_sizes=(28, 64), transfer_pairs=(("pneumonia-all", "pneumonia-300"),),
                  datapath_n=40, datapath_source=64, plain_n=20, stream_n=300),
}


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
    p.add_argument("--dev-data", default=datasets.DEV_DATA, help="folder of the dev settings' npz files (section dev)")
    p.add_argument("--settings", default=None,
                   help=f"dev settings to run, comma-separated subset of {','.join(datasets.DEV_SETTINGS)} "
                        "(default: all; --smoke: pneumonia-300,retina)")
    p.add_argument("--seeds", default=None,
                   help="dev and transfer seeds, comma-separated (default 1,2,3; --quick, --smoke: 1)")
    p.add_argument("--transfer-pairs", default=None,
                   help="transfer: source:target dev settings, comma-separated (default: "
                        f"{','.join(':'.join(p) for p in transfer.PAIRS)}; --smoke: pneumonia-all:pneumonia-300)")
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
                     else list(mode["dev_settings"] or datasets.DEV_SETTINGS))
    bad = [s for s in args.settings if s not in datasets.DEV_SETTINGS]
    if bad:
        p.error(f"unknown dev setting {bad[0]!r}; choose from {', '.join(datasets.DEV_SETTINGS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else list(mode["dev_seeds"])
    except ValueError:
        p.error(f"--seeds: whole numbers, comma-separated (got {args.seeds!r})")
    if not args.seeds or any(s < 0 for s in args.seeds):
        p.error("--seeds: at least one seed, none negative")
    pairs = [tuple(p.split(":")) for p in (args.transfer_pairs or "").split(",") if p.strip()]
    if any(len(p) != 2 or not set(p) <= set(transfer.SETTINGS) for p in pairs):
        p.error(f"--transfer-pairs: source:target pairs of {', '.join(transfer.SETTINGS)}")
    args.transfer_pairs = pairs or list(mode["transfer_pairs"] or transfer.PAIRS)
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
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    mode = MODES[mode_name]
    os.makedirs(args.build, exist_ok=True)
    logs = os.path.join(args.build, "logs")
    bench = harness.Bench(args, mode, logs, harness.child_environment(args.code, args.threads))
    results = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "mode": mode_name,
               "machine": harness.machine_info(), "torch": harness.torch_version(), "load_start": harness.loadavg(),
               "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in mode.items()},
               "sections": args.sections, "threads": args.threads or "default",
               "code": harness.code_version(args.code)}
    log(f"benchmarks ({mode_name}): {', '.join(args.sections)}; load average {results['load_start']}; "
        f"logs in {logs}")
    t0 = time.perf_counter()
    chosen = {name: section for name, section in SECTIONS.items() if name in args.sections}
    for section in chosen.values():  # all data first: a missing file stops the run before any measurement
        if hasattr(section, "prepare"):
            section.prepare(bench)
    for name, section in chosen.items():
        results[name] = section.run(bench, results)
    results["load_end"] = harness.loadavg()
    results["elapsed_s"] = time.perf_counter() - t0
    results["targets"] = report.targets(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
        fh.write("\n")
    log("\n" + report.render(results, SECTIONS))
    log(f"\nresults: {args.out} ({results['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
