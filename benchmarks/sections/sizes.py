"""Section ``sizes`` (``--only sizes``): what image size costs. Training FLOPs per image (benchmarks/ceiling.py's
count) of smallcnn (with the stem stride train.py picks, and with the stride-1 stem of earlier versions) and of
torchvision's ResNet-18 at each of ``flop_sizes``; and train.py (defaults but ``--model``) on PneumoniaMNIST
upsampled to each size of ``size_cases``: images/s and wall time to val AUC ``TARGET_AUC`` (capped at
``size_cap_s``; the run is stopped at the target).
"""
import os
import sys

from benchmarks import datasets
from benchmarks.harness import HERE, fresh_folder, log
from benchmarks.report import TARGET_AUC, fmt, median, table
from medimg.container import epoch_log

# train.py's defaults with --model, on PneumoniaMNIST upsampled (bilinear) to each size (the full and quick modes)
CASES = (("smallcnn", 28), ("smallcnn", 64), ("smallcnn", 128), ("resnet18", 64), ("resnet18", 128))


def run(bench, results):
    log("sizes: FLOPs per image, and images/s and time to val AUC 0.97 at 28-128 px")
    args, mode = bench.args, bench.mode
    out = {"target_auc": TARGET_AUC, "flops_per_image": flops_per_image(bench), "runs": []}
    for model, size in mode["size_cases"]:
        data = datasets.pneumonia(args.build, args.npz, size, mode["subsample"])
        result = size_run(bench, model, size, data)
        out["runs"].append(result)
        log(f"  {model}@{size}: {result['images_per_sec']:.0f} img/s, "
            + (f"val AUC {TARGET_AUC} at epoch {result['epoch_at_target']}, {result['wall_s_to_target']:.0f} s"
               if result["reached"] else f"best val AUC {result['best_val_auc']:.4f} in the {result['cap_s']} s cap"))
    return out


def flops_per_image(bench):
    """Training FLOPs per image (benchmarks/ceiling.py's count) of smallcnn (train.py's stem, and stride 1) and
    ResNet-18 at each of ``flop_sizes``: {case: FLOPs}."""
    cases = []
    for size in bench.mode["flop_sizes"]:
        cases += [f"smallcnn@{size}", f"smallcnn/s1@{size}", f"resnet18@{size}"]
    child = bench.child([sys.executable, os.path.join(HERE, "ceiling.py"), "--cases", ",".join(cases), "--sizes",
                         "64", "--repeats", "1"], "sizes-flops")
    return child.run("CEILING_RESULT ")["flops_per_image"]


def size_run(bench, model, size, data):
    """train.py (defaults, ``--model``) on ``data`` until val AUC >= TARGET_AUC or ``size_cap_s``: images/s and
    the wall time of the first epoch at the target."""
    mode = bench.mode
    work = fresh_folder(os.path.join(bench.args.build, "runs", "sizes", f"{model}-{size}"))
    cmd = bench.train_py(work, ["--train", os.path.join(data, "train"), "--val", os.path.join(data, "val")],
                         ["--model", model, *mode["size_extra"]])
    epochs = []

    def on_line(t, line):
        values = epoch_log.parse_epoch(line)
        if values:
            epochs.append({"epoch": int(values["epoch"]), "wall_s": round(t, 2), "val_auc": values["val_auc"],
                           "images_per_sec": values["images_per_sec"]})
            return epochs[-1]["val_auc"] >= TARGET_AUC
        return False

    child = bench.child(cmd, f"sizes-{model}-{size}")
    child.run(None, timeout=mode["size_cap_s"], on_line=on_line)
    if not epochs:
        raise RuntimeError(f"sizes {model}@{size}: no epoch within {mode['size_cap_s']} s (rc {child.returncode}); "
                           f"log {child.log_path}:\n{child.tail(20)}")
    reached = next((e for e in epochs if e["val_auc"] >= TARGET_AUC), None)
    return {"model": model, "size": size, "images_per_sec": median([e["images_per_sec"] for e in epochs]),
            "epochs": epochs, "reached": reached is not None, "wall_s_to_target": reached and reached["wall_s"],
            "epoch_at_target": reached and reached["epoch"], "best_val_auc": max(e["val_auc"] for e in epochs),
            "cap_s": mode["size_cap_s"], "load_before": child.load_before, "load_after": child.load_after,
            "log": child.log_path}


def render(s, results):
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
