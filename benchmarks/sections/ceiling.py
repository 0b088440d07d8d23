"""Section ``ceiling``: the machine's measured matmul FLOP/s (fp32, bf16 where supported) and the training FLOPs per
image of each throughput case, from benchmarks/ceiling.py in its own process; the speed-up precision and layout
give the model's own convolutions. The throughput section measures the ceiling again after its runs (``best`` of the
two counts) and puts each train.py step against it (``attach``).
"""
import os
import sys

from benchmarks.harness import HERE, log
from benchmarks.report import fmt, table


def measure(bench, name="ceiling"):
    """One run of benchmarks/ceiling.py over the throughput cases (log ``<name>.log``): its result dict."""
    args, mode = bench.args, bench.mode
    cases = ",".join(f"{m}@{s}:1" for m, s in args.cases)
    cmd = [sys.executable, os.path.join(HERE, "ceiling.py"), "--cases", cases,
           "--sizes", ",".join(str(s) for s in mode["matmul_sizes"]), "--repeats", mode["matmul_repeats"],
           "--conv-batch", mode["batch_size"]]
    return bench.child(cmd, name).run("CEILING_RESULT ")


def run(bench, results):
    log("ceiling: matmul FLOP/s and FLOPs per image")
    return measure(bench)


def best(first, second):
    """The better matmul figure per dtype of two measurements (a busy machine can spoil one), and both kept."""
    out = dict(first, measurements=[first, second])
    for key in ("matmul", "matmul_1thread"):
        if first.get(key) and second.get(key):
            out[key] = {dt: max(first[key][dt], second[key][dt], key=lambda v: v["flops"]) for dt in first[key]}
    return out


def attach(throughput, ceiling):
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


def render(c, results):
    one = c.get("matmul_1thread") or {}
    parts = ["\nHardware ceiling (best large square matmul; best of the measurements before and after the "
             f"throughput runs; default threads = {c['threads']}):\n" + table(
                 ["dtype", "GFLOP/s", "GFLOP/s on 1 thread"],
                 [[k, f"{v['flops'] / 1e9:.1f}", fmt(one.get(k) and one[k]["flops"] / 1e9)]
                  for k, v in c["matmul"].items()])]
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
    return "\n".join(parts)
