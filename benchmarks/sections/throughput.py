"""Section ``throughput``: images/s in steady state of train.py's own data path and step (benchmarks/probe.py runs
train.py's ``main()``; epoch 1 is the warm-up, later epochs are timed) against the plain loop of typical
script-mode examples (benchmarks/plain_loop.py), same model, image size, batch size and PNG class folders, each run
in its own process; with ``fp32_variant`` also train.py with amp off. After the runs the ceiling is measured again
when that section ran, and each step is put against it.
"""
import os
import sys

from benchmarks import datasets
from benchmarks.harness import HERE, log, probe_cmd, steady
from benchmarks.report import fmt, table
from benchmarks.sections import ceiling


def data_folders(bench):
    """{image size: PneumoniaMNIST class folders} of the cases (28 px, and upsampled to 64 px when a case asks)."""
    args, sub = bench.args, bench.mode["subsample"]
    sizes = sorted({size for _, size in args.cases} | {28})
    return {size: datasets.pneumonia(args.build, args.npz, size, sub) for size in sizes}


def prepare(bench):
    data_folders(bench)


def run(bench, results):
    log("throughput: train.py vs the plain loop")
    rows = measure(bench)
    if results.get("ceiling"):
        log("ceiling again (a busy machine can spoil one measurement; the best of the two counts)")
        results["ceiling"] = ceiling.best(results["ceiling"], ceiling.measure(bench, "ceiling-2"))
        ceiling.attach(rows, results["ceiling"])
    return rows


def train_py_run(bench, model, size, data, extra, rep):
    """One probe run of train.py, with its steady-state figures."""
    child = bench.child(probe_cmd(data, os.path.join(bench.args.build, "runs", f"{model}{size}"), extra),
                        f"throughput-{model}{size}-train-{rep}")
    result = child.run("PROBE_RESULT ")
    if result.get("rc"):
        raise RuntimeError(f"train.py failed (rc {result['rc']}); see {child.log_path}")
    result["steady"] = steady(result)
    log(f"  {model}@{size} train.py run {rep + 1}: {result['steady']['images_per_sec']:.1f} img/s "
        f"(epochs {result['steady']['epoch_ips']}, load {child.load_before})")
    return result


def plain_run(bench, model, size, data, steps, workers, rep):
    """One run of the plain loop with ``workers`` DataLoader workers."""
    mode = bench.mode
    cmd = [sys.executable, os.path.join(HERE, "plain_loop.py"), "--data", os.path.join(data, "train"),
           "--model", model, "--batch-size", mode["batch_size"], "--workers", workers,
           "--warmup-steps", mode["plain_warmup"], "--steps", steps * (mode["train_epochs"] - 1)]
    child = bench.child(cmd, f"throughput-{model}{size}-plain-w{workers}-{rep}")
    result = child.run("PLAIN_RESULT ")
    log(f"  {model}@{size} plain loop (workers={workers}) run {rep + 1}: "
        f"{result['images_per_sec']:.1f} img/s (load {child.load_before})")
    return result


def amp_off(bench, model, size, data, extra):
    """Does bf16 pay on this machine? The same step with amp off (``fp32_variant``), else None."""
    if not bench.mode["fp32_variant"]:
        return None
    child = bench.child(probe_cmd(data, os.path.join(bench.args.build, "runs", f"{model}{size}"),
                                  extra + ["--amp", "false"]), f"throughput-{model}{size}-train-fp32")
    result = child.run("PROBE_RESULT ")
    fp32 = {"images_per_sec": steady(result)["images_per_sec"], "load_before": result["load_before"]}
    log(f"  {model}@{size} train.py with amp=false: {fp32['images_per_sec']:.1f} img/s (load {child.load_before})")
    return fp32


def measure(bench):
    """One row per case (model@size): train.py's best run against the plain loop's best, and their ratios. The
    repeats alternate train.py and the plain loop, so that a busy spell of the machine spoils both alike."""
    rows, mode, folders = [], bench.mode, data_folders(bench)
    for model, size in bench.args.cases:
        data = folders[size]
        steps = mode["steps"].get(model, mode["steps"]["*"])
        bs = mode["batch_size"]
        extra = ["--model", model, "--batch-size", bs, "--epochs", mode["train_epochs"],
                 "--max-steps-per-epoch", steps, "--patience", 0]
        train_runs, plain_runs = [], {w: [] for w in mode["plain_workers"]}
        for rep in range(mode["repeats"]):
            train_runs.append(train_py_run(bench, model, size, data, extra, rep))
            for workers in mode["plain_workers"]:
                plain_runs[workers].append(plain_run(bench, model, size, data, steps, workers, rep))
        fp32 = amp_off(bench, model, size, data, extra)
        rows.append(case_row(model, size, bs, steps * (mode["train_epochs"] - 1), train_runs, plain_runs, fp32))
    return rows


def case_row(model, size, bs, steps_timed, train_runs, plain_runs, fp32):
    best_train = max(train_runs, key=lambda r: r["steady"]["images_per_sec"])
    plain_best = {w: max(runs, key=lambda r: r["images_per_sec"]) for w, runs in plain_runs.items()}
    base_workers = max(plain_best, key=lambda w: plain_best[w]["images_per_sec"])
    train_ips = best_train["steady"]["images_per_sec"]
    base_ips = plain_best[base_workers]["images_per_sec"]
    row = {
        "case": f"{model}@{size}", "model": model, "image_size": size, "batch_size": bs,
        "n_train": best_train["n_train"], "steps_timed": steps_timed,
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
    }
    if 0 in plain_best and row["train_py"]["images_per_cpu_s"]:
        row["ratio_cpu_time"] = row["train_py"]["images_per_cpu_s"] / row["plain"]["0"]["images_per_cpu_s"]
    return row


def render(t, results):
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
    parts = ["\nTraining throughput, steady state, wall clock (images/s; train.py = its own data path and "
             "step; plain = ImageFolder + PIL/ToTensor per sample, fp32 NCHW; cpu util = CPU s / wall s of "
             "train.py):\n" + table(["case", "batch", "train.py", "step dtype", "train.py amp off", "plain",
                                    "plain workers", "ratio", "cpu util"], rows)]
    if work:
        parts.append("\nWork per image, CPU time of the process (images per CPU-second; less sensitive to a busy "
                     "machine; the plain loop without workers):\n" + table(["case", "train.py", "plain", "ratio"],
                                                                          work))
    if ceil:
        parts.append("\nFraction of the matmul ceiling (training FLOPs per image x images/s, against the ceiling "
                     "of the step's dtype; the plain loop against fp32):\n" + table(
                         ["case", "MFLOP/img", "GFLOP/s", "dtype", "train.py of ceiling",
                          "train.py per CPU-s of 1-core ceiling, %", "plain of fp32 ceiling"], ceil))
    return "\n".join(parts)
