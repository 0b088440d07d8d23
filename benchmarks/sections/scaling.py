"""Section ``scaling``: load time, images/s and peak memory of train.py (through benchmarks/probe.py) at growing
synthetic data sets (``scaling_sizes``: 5k, 20k and 100k images in the full mode), and on a data set over the
in-memory budget (``--cache-max-gb`` tiny), which train.py streams from disk with workers.
"""
import os

from benchmarks import datasets
from benchmarks.harness import log, probe_cmd, steady
from benchmarks.report import table


def run(bench, results):
    log("scaling: 5k / 20k / 100k images, and a data set over the memory budget")
    args, mode = bench.args, bench.mode
    rows = []
    runs = [(n, False) for n in mode["scaling_sizes"]] + [(mode["stream_size"], True)]
    for n, stream in runs:
        data = datasets.synthetic(args.build, args.npz, n, mode["subsample"])
        extra = ["--batch-size", mode["batch_size"], "--epochs", 2, "--max-steps-per-epoch", mode["scaling_steps"],
                 "--patience", 0]
        if stream:
            extra += ["--cache-max-gb", "0.00001"]  # 10 kB: far below any data set, so train.py must stream
        name = f"scaling-{n}{'-streamed' if stream else ''}"
        child = bench.child(probe_cmd(data, os.path.join(args.build, "runs", name), extra), name)
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
    return {"runs": rows, "summary": summary(rows)}


def summary(rows):
    """The largest cached data set against the smallest: throughput, load time per image, memory per image."""
    cached = [r for r in rows if not r["forced_stream"]]
    if len(cached) < 2:
        return {}
    lo, hi = cached[0], cached[-1]
    return {"throughput_ratio_largest_vs_smallest": hi["images_per_sec"] / lo["images_per_sec"],
            "load_per_image_ratio_largest_vs_smallest": hi["load_us_per_image"] / lo["load_us_per_image"],
            "rss_bytes_per_extra_image": (hi["peak_rss_mb"] - lo["peak_rss_mb"]) * 2**20
            / max(1, hi["n_images"] - lo["n_images"])}


def render(s, results):
    rows = [[r["n_images"], "streamed (workers)" if r["streamed"] else "cached in memory",
             f"{r['load_s']:.1f}", f"{r['load_us_per_image']:.0f}", f"{r['images_per_sec']:.1f}",
             f"{r['peak_rss_mb']:.0f}"] for r in s["runs"]]
    parts = ["\nScaling (smallcnn @ 28 px, synthetic PNGs):\n" + table(
        ["images", "data path", "load s", "load us/img", "img/s", "peak RSS MB"], rows)]
    if s["summary"]:
        sm = s["summary"]
        parts.append(f"largest vs smallest: throughput x{sm['throughput_ratio_largest_vs_smallest']:.2f}, "
                     f"load time per image x{sm['load_per_image_ratio_largest_vs_smallest']:.2f}, "
                     f"memory {sm['rss_bytes_per_extra_image']:.0f} bytes per extra image")
    return "\n".join(parts)
