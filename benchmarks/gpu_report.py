#!/usr/bin/env python
"""Summarise benchmarks/gpu_check.sh's runs: one table, and OUT/summary.json.

    python benchmarks/gpu_report.py build/gpu-check

Reads ``OUT/runs/<name>.log`` (each ends with benchmarks/probe.py's ``PROBE_RESULT`` line, epoch 1 = warm-up
and compilation, epoch 2 = timed, epoch 3 = profiled) and ``OUT/nvidia-smi.csv`` (timestamp, utilization.gpu,
memory.used sampled in the background). Per run: images/s of epoch 2 (train.py's own figure); GPU busy = the
union of CUDA kernel intervals over epoch 3's wall time (torch.profiler); nvidia-smi's mean utilization over
epoch 2 as a cross-check; peak ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``.
"""
import datetime
import glob
import json
import os
import sys

PREFIX = "PROBE_RESULT "
TARGET_BUSY = 0.90  # at 224 px


def read_probe(path):
    with open(path, errors="replace") as fh:
        lines = fh.read().splitlines()
    for line in reversed(lines):
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX):]), lines
    return None, lines


def read_smi(path):
    """[(unix time, utilization %, memory MiB)] from nvidia-smi --format=csv,noheader,nounits."""
    samples = []
    if not os.path.isfile(path):
        return samples
    with open(path, errors="replace") as fh:
        for line in fh:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 3:
                continue
            try:
                t = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
                samples.append((t, float(parts[1]), float(parts[2])))
            except ValueError:
                continue
    return samples


def smi_window(samples, start, end):
    inside = [s for s in samples if start <= s[0] <= end]
    if not inside:
        return None, None
    return sum(s[1] for s in inside) / len(inside) / 100, max(s[2] for s in inside)


def summarise(out):
    samples = read_smi(os.path.join(out, "nvidia-smi.csv"))
    rows = []
    for log in sorted(glob.glob(os.path.join(out, "runs", "*.log")), key=os.path.getmtime):
        name = os.path.splitext(os.path.basename(log))[0]
        result, lines = read_probe(log)
        if result is None or result.get("rc"):
            reason = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), "no result line")
            rows.append({"name": name, "ok": False, "reason": reason[-200:]})
            continue
        epochs = {e["epoch"]: e for e in result["epochs"]}
        timed = epochs.get(2) or epochs.get(max(epochs))
        profiled = next((e for e in result["epochs"] if e.get("profiled")), None)
        smi_util, smi_mem = smi_window(samples, timed["start_unix"], timed["end_unix"])
        rows.append({
            "name": name, "ok": True, "dtype": result["amp_dtype"], "steps": timed["steps"],
            "batch_images": timed["images"], "images_per_sec": timed["images_per_sec"],
            "warmup_epoch_s": epochs[1]["wall_s"] if 1 in epochs else None,
            "gpu_busy": profiled.get("gpu_busy") if profiled else None,
            "smi_util": smi_util, "smi_mem_mib": smi_mem,
            "max_allocated_mb": result.get("cuda_max_allocated_mb"),
            "max_reserved_mb": result.get("cuda_max_reserved_mb"),
            "gpu": result.get("gpu"), "load_s": result.get("load_s"), "n_train": result.get("n_train"),
        })
    return rows


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def pct(v, spec):
    return "-" if v is None else format(100 * v, spec) + "%"


def render(rows):
    head = ["run", "dtype", "img/s", "GPU busy (profiler)", "nvidia-smi util", "peak alloc MB", "peak reserved MB",
            "epoch-1 s (warm-up/compile)"]
    body = []
    for r in rows:
        if not r["ok"]:
            body.append([r["name"], "FAILED", r["reason"], "", "", "", "", ""])
            continue
        body.append([r["name"], r["dtype"], fmt(r["images_per_sec"], ".0f"), pct(r["gpu_busy"], ".1f"),
                     pct(r["smi_util"], ".0f"), fmt(r["max_allocated_mb"], ".0f"),
                     fmt(r["max_reserved_mb"], ".0f"), fmt(r["warmup_epoch_s"], ".1f")])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body]
    gpu = next((r["gpu"] for r in rows if r.get("gpu")), None)
    if gpu:
        lines.insert(0, f"GPU: {gpu}")
    for r in rows:
        if r["ok"] and "224" in r["name"] and r["gpu_busy"] is not None:
            met = "met" if r["gpu_busy"] >= TARGET_BUSY else "NOT met"
            lines.append(f"target GPU busy >= {TARGET_BUSY:.0%} at 224 px, {r['name']}: "
                         f"{100 * r['gpu_busy']:.1f}% ({met})")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else os.path.join("build", "gpu-check")
    rows = summarise(out)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    print(render(rows))
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
