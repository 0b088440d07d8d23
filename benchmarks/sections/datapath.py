"""Section ``datapath`` (``--only datapath``): does the data path keep a GPU busy at real resolution?

Data: ``datapath_n`` synthetic full-size PNGs (512 px, grey, smooth fields like scans; 80% train, 20% val:
benchmarks/synth_data.py), JPEG copies of ``plain_n`` of them, and their shards at 224 px written by
``python -m medimg.prepare_data --folder --shards`` (timed: the once-per-content cost). Measured, each in its own
process (benchmarks/datapath_probe.py, or train.py itself):

* time from start to data ready of train.py, from its own ``device=`` and ``data:`` log lines (timestamps), on the
  folders and on the shards: images/s and the ratio (targets: >= 4x sooner from shards, >= 3,000 images/s);
* images/s per CPU second of the data path alone at 224 px: the plain ``ImageFolder`` + ``DataLoader`` loop on PNG
  and JPEG; train.py's path (load, then one epoch of batches through its augmentation) on the folders, on the
  shards, and on the shards streamed (``cache-max-gb`` tiny: shard by shard through the shuffle buffer);
* a streamed run of ``stream_n`` images (100,000 in the full mode; shards of random pixels written directly; one
  epoch of batches, no augmentation), its peak private memory (process and DataLoader workers) against the bound
  the ``data:`` line states;
* data ready for 10k-100k images, extrapolated linearly from the measured time per image (decode and copy costs
  are per image; listing and the duplicate check are linear too), and the A10G's consumption for comparison.
"""
import os
import re
import sys
from datetime import datetime

from benchmarks import synth_data
from benchmarks.harness import HERE, fresh_folder, log
from benchmarks.report import table

SIZE = 224
SOURCE_SIZE = 512
# What one A10G (ml.g5.xlarge: 4 vCPUs) trains per second at 224 px with AMP. No A10/A10G figure is published
# in NVIDIA's DeepLearningExamples (ResNet-50 v1.5, PyTorch, 1 GPU, AMP: A100 80GB 2,470 img/s, V100 16GB
# 1,200 img/s); the A10's dense FP16 tensor throughput (125 TFLOPS) equals the V100's and is 0.40 of the A100's
# (312), so ~1,000 img/s (0.40 x 2,470 = 990; the V100's 1,200 with less memory bandwidth: 600 vs 900 GB/s) is
# taken for ResNet-50, and ResNet-18 at its FLOPs ratio (4.1 / 1.8 GFLOPs per image) ~2.3x that: ~2,300 img/s.
A10G = {"resnet50": 1000, "resnet18": 2300}
A10G_VCPUS = 4
EXTRAPOLATE = (10_000, 100_000)
TARGET_SOONER, TARGET_RATE = 4.0, 3000


def prepare(bench):
    mode, build = bench.mode, bench.args.build
    n = mode["datapath_n"]
    folder = os.path.join(build, f"datapath-{n}")
    synth_data.write(folder, mode["datapath_source"], 1, {"train": n * 4 // 5, "val": n - n * 4 // 5})
    jpeg = os.path.join(build, f"datapath-{n}-jpeg")
    if not os.path.isfile(os.path.join(jpeg, ".complete")):
        from PIL import Image

        for cls in sorted(os.listdir(os.path.join(folder, "train"))):
            os.makedirs(os.path.join(jpeg, "train", cls), exist_ok=True)
            for name in sorted(os.listdir(os.path.join(folder, "train", cls)))[:mode["plain_n"] // 2]:
                with Image.open(os.path.join(folder, "train", cls, name)) as im:
                    im.save(os.path.join(jpeg, "train", cls, name[:-4] + ".jpg"), quality=90)
        open(os.path.join(jpeg, ".complete"), "w").close()


def ready_seconds(lines):
    """Seconds from train.py's ``device=`` line to its ``data:`` line (their logged timestamps)."""
    stamps = {}
    for _, text in lines:
        m = re.match(r"(?:\[[^]]*\] )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO (device=|data: )", text)
        if m and m.group(2) not in stamps:
            stamps[m.group(2)] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
    if len(stamps) < 2:
        return None
    return (stamps["data: "] - stamps["device="]).total_seconds()


def train_ready(bench, name, root, n):
    """train.py on ``root``/{train,val}: seconds to data ready, from its own lines."""
    work = fresh_folder(os.path.join(bench.args.build, "runs", name))
    cmd = bench.train_py(work, ["--train", os.path.join(root, "train"), "--val", os.path.join(root, "val")],
                         ["--epochs", 1, "--max-steps-per-epoch", 1, "--batch-size", 32, "--model", "smallcnn",
                          "--patience", 0, "--device", "cpu", "--image-size", SIZE])
    child = bench.child(cmd, name)
    child.run(None)
    seconds = ready_seconds(child.lines)
    if child.returncode or seconds is None:
        raise RuntimeError(f"train.py failed (rc {child.returncode}) on {root}; see {child.log_path}")
    log(f"  {name}: data ready in {seconds:.2f} s ({n / seconds:.0f} images/s; load {child.load_before})")
    return {"ready_s": seconds, "images_per_s": n / seconds, "load_before": child.load_before}


def probe(bench, name, *args):
    cmd = [sys.executable, os.path.join(HERE, "datapath_probe.py"), *[str(a) for a in args]]
    result = bench.child(cmd, name).run("DATAPATH_RESULT ")
    if "cpu_s" not in result:  # writing data, not a measurement
        return result
    per_cpu = result["images"] / max(result["cpu_s"], 1e-9)
    log(f"  {name}: {result['images'] / result['wall_s']:.0f} images/s, {per_cpu:.0f} per CPU second, peak RSS "
        f"{result['peak_tree_rss_mb']:.0f} MB (after imports {result['baseline_rss_mb']:.0f} MB)")
    return dict(result, images_per_s=result["images"] / result["wall_s"], images_per_cpu_s=per_cpu)


def run(bench, results):
    mode, build = bench.mode, bench.args.build
    n = mode["datapath_n"]
    folder, jpeg = os.path.join(build, f"datapath-{n}"), os.path.join(build, f"datapath-{n}-jpeg")
    log(f"datapath: {n} PNGs of {mode['datapath_source']} px -> {SIZE} px; shards; streamed {mode['stream_n']}")
    sharded = fresh_folder(os.path.join(build, f"datapath-{n}-shards"))
    child = bench.child([sys.executable, "-m", "medimg.prepare_data", "--folder", folder, "--shards", "--out",
                         sharded, "--image-size", SIZE], "datapath-prepare-shards")
    child.run(None)
    if child.returncode:
        raise RuntimeError(f"prepare_data --shards failed; see {child.log_path}")
    out = {"n": n, "source_px": mode["datapath_source"], "size": SIZE, "prepare_s": child.wall_s,
           "ready": {"folders": train_ready(bench, "datapath-ready-folders", folder, n),
                     "shards": train_ready(bench, "datapath-ready-shards", sharded, n)}}
    workers = min(2, os.cpu_count() or 1)
    out["path"] = {
        "plain PNG": probe(bench, "datapath-plain-png", "plain", "--folder", os.path.join(folder, "train"),
                           "--workers", workers, "--size", SIZE),
        "plain JPEG": probe(bench, "datapath-plain-jpeg", "plain", "--folder", os.path.join(jpeg, "train"),
                            "--workers", workers, "--size", SIZE),
        "train.py folders": _trainpy(bench, "datapath-trainpy-folders", folder, workers),
        "train.py shards": _trainpy(bench, "datapath-trainpy-shards", sharded, workers),
        "train.py shards streamed": _trainpy(bench, "datapath-trainpy-streamed", sharded, workers, stream=True)}
    big = os.path.join(build, f"datapath-stream-{mode['stream_n']}")
    if not os.path.isfile(os.path.join(big, "train", "index.json")):
        probe(bench, "datapath-synth-shards", "synth-shards", "--out", fresh_folder(big), "--n", mode["stream_n"],
              "--size", SIZE)
    out["stream"] = _trainpy(bench, f"datapath-streamed-{mode['stream_n']}", big, workers, True, "--no-augment")
    out["stream"].update(n=mode["stream_n"], workers=workers)
    out["extrapolated"] = {kind: {str(k): r["ready_s"] * k / n for k in EXTRAPOLATE} for kind, r in
                           out["ready"].items()}
    out["targets"] = targets(out)
    return out


def _trainpy(bench, name, root, workers, stream=False, *extra):
    return probe(bench, name, "trainpy", "--train", os.path.join(root, "train"), "--val", os.path.join(root, "val"),
                 "--workers", workers, "--size", SIZE, "--cache-max-gb", 0.000001 if stream else 64, *extra)


def targets(out):
    folders, shards = out["ready"]["folders"], out["ready"]["shards"]
    sooner = folders["ready_s"] / max(shards["ready_s"], 1e-9)
    stream = out["stream"]
    grown = stream["peak_tree_rss_mb"] - stream["baseline_rss_mb"]  # private memory above the process's own
    # each forked DataLoader worker ends up with its own copy of the interpreter's heap (reference counts touch
    # its pages), so the pixels' bound plus one baseline per worker, and 25% for batches in flight and the heap
    allowed = 1.25 * stream["bound_mb"] + stream["workers"] * stream["baseline_rss_mb"] + 256
    return [{"name": f"data ready from shards vs folders, {out['n']} PNGs of {out['source_px']} px -> {SIZE} px",
             "target": f">= {TARGET_SOONER:.0f}x sooner", "measured": f"{sooner:.1f}x",
             "met": sooner >= TARGET_SOONER},
            {"name": f"data ready from shards, images/s on {os.cpu_count()} CPUs (train.py's log lines)",
             "target": f">= {TARGET_RATE}", "measured": f"{shards['images_per_s']:.0f}",
             "met": shards["images_per_s"] >= TARGET_RATE},
            {"name": f"streamed {stream['n']} images: peak RSS of process and workers vs the stated bound",
             "target": "<= bound + each worker's interpreter", "measured": f"{grown:.0f} MB (bound "
                                                                          f"{stream['bound_mb']:.0f} MB of pixels)",
             "met": grown <= allowed}]


def render(s, results):
    rows = [[kind, f"{r['ready_s']:.2f}", f"{r['images_per_s']:.0f}",
             *(f"{s['extrapolated'][kind][str(k)]:.0f}" for k in EXTRAPOLATE)] for kind, r in s["ready"].items()]
    parts = [f"\nData path at {SIZE} px ({s['n']} synthetic {s['source_px']} px PNGs; shards written in "
             f"{s['prepare_s']:.0f} s, once per content):\n" + table(
                 ["train.py data ready", "s", "images/s", *(f"s @{k // 1000}k (linear)" for k in EXTRAPOLATE)], rows)]
    need = {m: v / A10G_VCPUS for m, v in A10G.items()}
    rows = []
    for kind, r in s["path"].items():
        load = r["n_loaded"] / max(r["ready_cpu_s"], 1e-9) if "ready_cpu_s" in r else None
        aug = r["augment_images"] / r["augment_cpu_s"] if r.get("augment_cpu_s") else None
        rows.append([kind, f"{r['images_per_s']:.0f}", f"{r['images_per_cpu_s']:.0f}",
                     "-" if load is None else f"{load:.0f}", "-" if aug is None else f"{aug:.0f}",
                     f"{r['peak_tree_rss_mb'] - r['baseline_rss_mb']:.0f}",
                     *("yes" if r["images_per_cpu_s"] >= need[m] else "waits" for m in ("resnet50", "resnet18"))])
    parts.append(table(["data path at 224 px (CPU side of a GPU job)", "img/s", "per CPU s (each epoch)",
                        "load: per CPU s (once)", "augment on CPU: per CPU s", "private MB",
                        f"feeds R50 ({need['resnet50']:.0f}/vCPU)", f"feeds R18 ({need['resnet18']:.0f}/vCPU)"],
                       rows))
    st = s["stream"]
    parts.append(f"streamed {st['n']} images: {st['images_per_s']:.0f} images/s, peak private memory "
                 f"{st['peak_tree_rss_mb'] - st['baseline_rss_mb']:.0f} MB above the process's own after imports "
                 f"(process and workers) for a stated bound of {st['bound_mb']:.0f} MB of pixels; "
                 f"A10G consumption (estimate, see benchmarks/sections/datapath.py): ResNet-50 ~{A10G['resnet50']}, "
                 f"ResNet-18 ~{A10G['resnet18']} img/s over {A10G_VCPUS} vCPUs")
    return "\n".join(parts)
