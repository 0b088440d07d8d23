"""Section ``quality``: wall time of train.py's default configuration (no hyperparameters; ``ttq_extra`` in the smoke
mode) to reach val AUC ``TARGET_AUC`` on the PneumoniaMNIST train/val split, followed through its epoch lines,
and its final val AUC and accuracy from metrics.json (``--quick`` stops the run at the target).
"""
import json
import os

from benchmarks import datasets
from benchmarks.harness import fresh_folder, log
from benchmarks.report import TARGET_AUC
from medimg.container import epoch_log


def data_folder(bench):
    return datasets.pneumonia(bench.args.build, bench.args.npz, 28, bench.mode["subsample"])


def prepare(bench):
    data_folder(bench)


def run(bench, results):
    log("quality: default configuration to val AUC 0.97")
    mode, data = bench.mode, data_folder(bench)
    work = fresh_folder(os.path.join(bench.args.build, "runs", "quality"))
    cmd = bench.train_py(work, ["--train", os.path.join(data, "train"), "--val", os.path.join(data, "val")],
                         mode["ttq_extra"])
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

    child = bench.child(cmd, "quality")
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


def render(q, results):
    reached = (f"val AUC >= {q['target_auc']} at epoch {q['epoch']}, {q['wall_s']:.0f} s after launch"
               if q["reached"] else f"val AUC {q['target_auc']} not reached")
    final = (f"; final (best epoch {q['best_epoch']} of {q['epochs_run']}): val AUC {q['final_val_auc']:.4f}, "
             f"val accuracy {q['final_val_acc']:.4f}, total {q['total_wall_s']:.0f} s"
             if "final_val_auc" in q else " (stopped at the target)" if q["stopped_at_target"] else "")
    parts = [f"\nTime to quality (train.py, hyperparameters: {q['hyperparameters']}): {reached}{final}"]
    ips = sorted(e["images_per_sec"] for e in q["epochs"])
    if ips:  # how much of the machine the run had: a busy machine stretches the wall time
        parts.append(f"train.py's images/s over the epochs: median {ips[len(ips) // 2]:.0f}, "
                     f"min {ips[0]:.0f}, max {ips[-1]:.0f}; load average before the run {q['load_before']}")
    return "\n".join(parts)
