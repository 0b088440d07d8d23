"""Section ``ensemble`` (``--only ensemble``): what the K-fold ensemble (code/ensemble.py, ``ensemble=auto``) buys
over one model on the development settings, and what it costs in wall time.

Each dev setting (benchmarks/datasets.py's ``DEV_SETTINGS``, ``--settings``) is given to train.py as a train
channel only, with the npz's val split as the **test** channel: one model then holds its val out of train
(``val-fraction`` 0.1, stratified, seeded) and an ensemble pools all of train into its folds, and both are judged
on the same test images that neither ever sees (nothing is tuned on them). Per setting, arm (``off``: one model;
``auto``: the default, the rule decides) and seed: test AUC, accuracy, ECE, the operating point's sensitivity and
specificity (threshold fitted on val, or on the out-of-fold predictions), the val (or out-of-fold) AUC, the members
the rule chose, wall time from launch to exit, CPU seconds and the load averages around the run.
"""
import json
import os

from benchmarks import datasets
from benchmarks.harness import code_version, fresh_folder, log
from benchmarks.report import fmt, pm, spread, table

ARMS = {"off": ["--ensemble", "off"], "auto": []}
KEYS = ("test_auc", "test_accuracy", "test_ece", "sensitivity", "specificity", "val_auc", "wall_s", "cpu_s")


def prepare(bench):
    for name in bench.args.settings:
        datasets.dev_data(bench.args.build, bench.args.dev_data, name, bench.mode["dev_cap"])


def train_run(bench, name, folder, arm, seed):
    """train.py on ``folder``'s train channel with its val split as the test channel, one arm and seed."""
    work = fresh_folder(os.path.join(bench.args.build, "runs", "ensemble", name, arm, f"seed{seed}"))
    channels = ["--train", os.path.join(folder, "train"), "--test", os.path.join(folder, "val")]
    child = bench.child(bench.train_py(work, channels, ["--seed", seed, *ARMS[arm], *bench.mode["dev_extra"]]),
                        f"ensemble-{name}-{arm}-seed{seed}")
    child.run(None)
    path = os.path.join(work, "data", "metrics.json")
    if child.returncode != 0 or not os.path.isfile(path):
        raise RuntimeError(f"ensemble {name} {arm} seed {seed}: train.py exited {child.returncode}; log "
                           f"{child.log_path}:\n{child.tail(20)}")
    with open(path) as fh:
        metrics = json.load(fh)
    test, op = metrics["test"], metrics["test"].get("operating_point") or {}
    block = metrics.get("ensemble") or {}
    return {"seed": seed, "arm": arm, "test_auc": test["auc"], "test_accuracy": test["accuracy"],
            "test_ece": test.get("ece"), "sensitivity": op.get("sensitivity"), "specificity": op.get("specificity"),
            "val_auc": metrics["val"]["auc"], "members": block.get("members", 1),
            "rule": block.get("rule") or next((line for _, line in child.lines if "ensemble=" in line), ""),
            "best_epochs": [m["best_epoch"] for m in block.get("per_member", [])] or [metrics.get("best_epoch")],
            "wall_s": round(child.wall_s, 1), "cpu_s": round(child.cpu_s, 1), "load_before": child.load_before,
            "load_after": child.load_after, "log": child.log_path}


def run(bench, results):
    args = bench.args
    log(f"ensemble: train.py on {', '.join(args.settings)} (train channel; the npz val split as test) x arms "
        f"{', '.join(ARMS)} x seeds {', '.join(map(str, args.seeds))}")
    out = {"settings": {}, "seeds": list(args.seeds), "arms": list(ARMS), "code": code_version(args.code)}
    for name in args.settings:
        folder, info = datasets.dev_data(args.build, args.dev_data, name, bench.mode["dev_cap"])
        arms = {}
        for arm in ARMS:
            runs = []
            for seed in args.seeds:
                r = train_run(bench, name, folder, arm, seed)
                runs.append(r)
                log(f"  {name} {arm} seed {seed}: {r['members']} member(s), test AUC {r['test_auc']:.4f} acc "
                    f"{r['test_accuracy']:.4f}, sens/spec {fmt(r['sensitivity'], '.3f')}/"
                    f"{fmt(r['specificity'], '.3f')}, {r['wall_s']:.0f} s (load {r['load_before']})")
            arms[arm] = dict(runs=runs, **{k: spread([r[k] for r in runs]) for k in KEYS})
        out["settings"][name] = dict(info, arms=arms)
    return out


def render(d, results):
    machine = results["machine"]
    rows = []
    for name, st in d["settings"].items():
        for arm, a in st["arms"].items():
            rows.append([name, st["n_train"], arm, "/".join(str(r["members"]) for r in a["runs"]),
                         pm(a["test_auc"]), pm(a["test_accuracy"]), pm(a["test_ece"]), pm(a["sensitivity"]),
                         pm(a["specificity"]), pm(a["val_auc"]), "/".join(f"{r['wall_s']:.0f}" for r in a["runs"]),
                         "/".join(f"{r['cpu_s']:.0f}" for r in a["runs"])])
    return "\n".join([
        f"\nK-fold ensembles (code {d['code']['dir']}, commit {(d['code']['commit'] or '?')[:10]}): the npz val split "
        f"as test, seeds {', '.join(map(str, d['seeds']))}, mean ± sample sd; on {machine.get('cpu')}, "
        f"{machine['cpus']} CPUs:",
        table(["setting", "train", "arm", "members", "test AUC", "test acc", "test ECE", "sens @thr", "spec @thr",
               "val/OOF AUC", "wall s", "CPU s"], rows),
        "(off: one model, val held out of train; auto: the default rule (members per seed); sens/spec at the "
        "operating threshold fitted on val or on the out-of-fold predictions; wall s from launch to exit)"])
