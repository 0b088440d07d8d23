"""Section ``dev`` (``--only dev``): the quality of the defaults on the development settings
(benchmarks/datasets.py's ``DEV_SETTINGS``), each judged on its own val split, never on a test split: train.py with
default hyperparameters (only paths, ``--seed`` and ``--checkpoint-dir ''``) for each seed; per setting val
accuracy and AUC (mean, sample standard deviation and each seed), val ECE (``ECE_BINS`` equal-width bins on the
top-class confidence, Guo et al. 2017), optimiser steps, epochs run and wall time. ``--code DIR`` runs another
checkout's train.py (before/after).
"""
import json
import os
import re

from benchmarks import datasets
from benchmarks.harness import code_version, fresh_folder, log
from benchmarks.report import fmt, median, pm, spread, table
from medimg import container

ECE_BINS = 15
DATA_LINE = re.compile(r"data: train=(\d+) val=(\d+)")


def val_as_test_args(val):
    """WORKAROUND for a train.py that writes no val ECE (before issue 13's commit 002e255, which added
    ``metrics["val"]["ece"]``): such a train.py keeps per-image probabilities for the test channel only, so the
    dev runs pass the val folder as both --val and --test. Model selection still sees val only; metrics.json's
    "test" figures are then val's (same weights, same images) and serve only to compute the val ECE here
    (``val_ece``). ``--val-as-test auto`` (``run``) uses it only when the first run shows it is needed;
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
    steps per epoch as code/epoch_loop.py counts them (full batches of min(batch size, n); the last partial batch is
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


def dev_run(bench, name, folder, info, seed, val_as_test):
    """train.py with default hyperparameters on one setting and seed, in its own process (``val_as_test``: with
    ``val_as_test_args``). Returns a dict."""
    work = fresh_folder(os.path.join(bench.args.build, "runs", "dev", name, f"seed{seed}"))
    val = os.path.join(folder, "val")
    channels = ["--train", os.path.join(folder, "train"), *(val_as_test_args(val) if val_as_test else ["--val", val])]
    child = bench.child(bench.train_py(work, channels, ["--seed", seed, *bench.mode["dev_extra"]]),
                        f"dev-{name}-seed{seed}")
    child.run(None)
    metrics_path = os.path.join(work, "data", "metrics.json")
    if child.returncode != 0 or not os.path.isfile(metrics_path):
        raise RuntimeError(f"dev {name} seed {seed}: train.py exited {child.returncode}"
                           f"{'' if os.path.isfile(metrics_path) else ' without metrics.json'}; "
                           f"log {child.log_path}:\n{child.tail(20)}")
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


def run(bench, results):
    """Every dev setting x seed; per setting the runs and their mean / sample sd."""
    args = bench.args
    log(f"dev: default train.py on {', '.join(args.settings)} x seeds {', '.join(map(str, args.seeds))} "
        f"(code {args.code})")
    out = {"settings": {}, "seeds": list(args.seeds), "extra_args": list(bench.mode["dev_extra"]) or "defaults",
           "subsample_seed": datasets.DEV_SUBSAMPLE_SEED, "ece_bins": ECE_BINS, "code": code_version(args.code)}
    prepared = {name: datasets.dev_data(args.build, args.dev_data, name, bench.mode["dev_cap"])
                for name in args.settings}  # all data first: errors surface now
    val_as_test = {"on": True, "off": False, "auto": None}[args.val_as_test]
    for name, (folder, info) in prepared.items():
        runs = []
        for seed in args.seeds:
            run = dev_run(bench, name, folder, info, seed, bool(val_as_test))
            if val_as_test is None:  # auto: the first run says whether this train.py reports a val ECE itself
                val_as_test = run["val_ece"] is None
                if val_as_test:
                    log(f"  {name} seed {seed}: train.py wrote no val ECE; again with the val folder as --test too")
                    run = dev_run(bench, name, folder, info, seed, True)
            runs.append(run)
            log(f"  {name} seed {seed}: val acc {run['val_accuracy']:.4f}, AUC {run['val_auc']:.4f}, "
                f"ECE {fmt(run['val_ece'], '.4f')}, {run['steps']} steps, {run['epochs_run']} epochs (best "
                f"{run['best_epoch']}), {run['in_channels']} channel(s), {run['wall_s']:.0f} s "
                f"(load {run['load_before']} -> {run['load_after']})")
        keys = ("val_accuracy", "val_auc", "val_ece", "val_ece_uncalibrated", "steps", "epochs_run", "wall_s", "cpu_s")
        out["settings"][name] = dict(info, runs=runs, **{key: spread([r[key] for r in runs]) for key in keys})
    out["val_as_test"] = bool(val_as_test)
    return out


def render(d, results):
    machine, code = results["machine"], d["code"]
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
