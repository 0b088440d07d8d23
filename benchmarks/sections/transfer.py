"""Section ``transfer`` (``--only transfer``): what the fine-tuning plan buys (code/schedule.py's
``fine_tuning_plan``), measured without ImageNet weights, which cannot be downloaded here.

For each pair (source, target): torchvision's ResNet-18 (``model=resnet18``, 28 px, 3 input channels) is trained
from scratch on the whole source development set with train.py's defaults (seed 1); its model.pth becomes the
starting weights, given to the target runs as a ``weights`` channel file (its 2- or 5-class head is replaced, as an
ImageNet head is). Then on a small stratified subset of the *other* development set, for each seed, three arms:

* ``scratch``: ResNet-18 from a random initialisation, train.py's defaults (the from-scratch plan: 1,500 steps);
* ``one lr``: from the starting weights, one learning rate for every layer and the from-scratch budget
  (``backbone-lr-scale 1``, ``fine-tune-steps 1500``): what fine-tuning was before the recipe;
* ``recipe``: from the starting weights with train.py's defaults, i.e. the fine-tuning plan (500 steps, loaded
  layers at 0.1x the head's lr, 10% warm-up).

Every run is judged on the target set's own val split (never a test split); per arm val AUC, accuracy and ECE
(mean, sample sd, each seed), steps and wall time, and the per-seed (paired) differences recipe - scratch and
recipe - one lr. These are not ImageNet weights: a ResNet-18 trained on a few thousand 28 px images of another
medical task is a much weaker and less general start than ImageNet's, so the figures say how the plan behaves
when starting from weights, not what ImageNet pretraining buys.
"""
import json
import os
import shutil

from benchmarks import datasets
from benchmarks.harness import code_version, fresh_folder, log
from benchmarks.report import fmt, pm, spread, table

MODEL = "resnet18"
# where the target subsets are defined besides the dev settings (RetinaMNIST cut as PneumoniaMNIST's 300 is)
SETTINGS = {**datasets.DEV_SETTINGS,
            "retina-300": dict(npz="retinamnist_trainval.npz", n_train=300, classes=("0", "1", "2", "3", "4"))}
# (pretrained on, fine-tuned on); the default is the one measured on 2 shared cores (README, "Transfer learning"),
# --transfer-pairs pneumonia-all:retina-300 runs the other direction (about 3 times as long: 4,708 source images)
PAIRS = (("retina", "pneumonia-300"),)
ARMS = {
    "scratch": ("random initialisation, the from-scratch plan", []),
    "one lr": ("starting weights, one lr for all layers, 1,500 steps",
               ["--pretrained", "true", "--backbone-lr-scale", "1", "--fine-tune-steps", "1500"]),
    "recipe": ("starting weights, the fine-tuning plan (defaults)", ["--pretrained", "true"]),
}
KEYS = ("val_auc", "val_accuracy", "val_ece", "steps", "wall_s")


def _data(bench, name):
    return datasets.dev_data(bench.args.build, bench.args.dev_data, name, bench.mode["dev_cap"], settings=SETTINGS)


def prepare(bench):
    for source, target in bench.args.transfer_pairs:
        _data(bench, source)
        _data(bench, target)


def train_run(bench, label, folder, extra):
    """train.py on ``folder``'s train/val with ``extra``, in its own process; metrics.json's figures and the run's."""
    work = fresh_folder(os.path.join(bench.args.build, "runs", "transfer", label))
    channels = ["--train", os.path.join(folder, "train"), "--val", os.path.join(folder, "val")]
    child = bench.child(bench.train_py(work, channels, ["--model", MODEL, *extra, *bench.mode["dev_extra"]]),
                        f"transfer-{label.replace(os.sep, '-')}")
    child.run(None)
    path = os.path.join(work, "data", "metrics.json")
    if child.returncode != 0 or not os.path.isfile(path):
        raise RuntimeError(f"transfer {label}: train.py exited {child.returncode}; log {child.log_path}:\n"
                           f"{child.tail(20)}")
    with open(path) as fh:
        metrics = json.load(fh)
    start = metrics.get("initialised_from") or {}
    return {"val_auc": metrics["val"]["auc"], "val_accuracy": metrics["val"]["accuracy"],
            "val_ece": metrics["val"].get("ece"), "steps": metrics["steps"], "epochs_run": metrics["epochs_run"],
            "best_epoch": metrics["best_epoch"], "plan": metrics["plan"], "initialised_from": start.get("source"),
            "first_conv": start.get("first_conv"), "in_channels": metrics["config"]["in_channels"],
            "wall_s": round(child.wall_s, 2), "cpu_s": round(child.cpu_s, 1), "load_before": child.load_before,
            "load_after": child.load_after, "log": child.log_path, "model_dir": os.path.join(work, "model")}


def pretrain(bench, source):
    """The source model (seed 1, 3 input channels) and its weights as a weights channel folder."""
    folder, info = _data(bench, source)
    run = train_run(bench, os.path.join(source, "pretrain"), folder, ["--in-channels", "3", "--seed", "1"])
    weights = fresh_folder(os.path.join(bench.args.build, "runs", "transfer", source, "weights"))
    os.makedirs(weights)
    shutil.copyfile(os.path.join(run["model_dir"], "model.pth"), os.path.join(weights, f"{MODEL}-{source}.pth"))
    log(f"  pretrained on {source} ({info['n_train']} images): val AUC {run['val_auc']:.4f}, {run['steps']} steps, "
        f"{run['wall_s']:.0f} s")
    return run, weights


def paired(runs_a, runs_b, key="val_auc"):
    """Per-seed differences a - b of ``key`` (runs matched by seed), with their mean and sample sd."""
    b = {r["seed"]: r[key] for r in runs_b}
    return spread([r[key] - b[r["seed"]] for r in runs_a if r["seed"] in b])


def run(bench, results):
    args = bench.args
    log(f"transfer: {MODEL} pretrained on one dev set, then scratch / one lr / recipe on a subset of the other, seeds "
        f"{', '.join(map(str, args.seeds))}")
    out = {"model": MODEL, "seeds": list(args.seeds), "extra_args": list(bench.mode["dev_extra"]) or "defaults",
           "arms": {name: what for name, (what, _) in ARMS.items()}, "pairs": [], "code": code_version(args.code)}
    for source, target in args.transfer_pairs:
        source_run, weights = pretrain(bench, source)
        folder, info = _data(bench, target)
        arms = {}
        for arm, (_, extra) in ARMS.items():
            runs = []
            for seed in args.seeds:
                channel = ["--weights", weights] if "--pretrained" in extra else []
                r = dict(train_run(bench, os.path.join(target, arm.replace(" ", "-"), f"seed{seed}"), folder,
                                   [*extra, *channel, "--seed", str(seed)]), seed=seed)
                runs.append(r)
                log(f"  {target} {arm} seed {seed}: val AUC {r['val_auc']:.4f}, acc {r['val_accuracy']:.4f}, "
                    f"{r['steps']} steps, {r['wall_s']:.0f} s (load {r['load_before']} -> {r['load_after']})")
            arms[arm] = dict(runs=runs, **{key: spread([r[key] for r in runs]) for key in KEYS})
        out["pairs"].append({"source": source, "target": target, "target_info": info, "source_run": source_run,
                             "arms": arms,
                             "recipe_minus_scratch": paired(arms["recipe"]["runs"], arms["scratch"]["runs"]),
                             "recipe_minus_one_lr": paired(arms["recipe"]["runs"], arms["one lr"]["runs"])})
    return out


def render(d, results):
    machine = results["machine"]
    rows, seeds = [], []
    for pair in d["pairs"]:
        info = pair["target_info"]
        for arm, st in pair["arms"].items():
            rows.append([f"{pair['source']} -> {pair['target']}", info["n_train"], info["n_val"], arm,
                         pm(st["val_auc"]), pm(st["val_accuracy"]), pm(st["val_ece"]),
                         "/".join(str(r["steps"]) for r in st["runs"]),
                         "/".join(f"{r['wall_s']:.0f}" for r in st["runs"])])
            seeds += [[pair["target"], arm, r["seed"], f"{r['val_auc']:.4f}", f"{r['val_accuracy']:.4f}",
                       fmt(r["val_ece"], ".4f"), r["steps"], f"{r['epochs_run']}({r['best_epoch']})",
                       f"{r['wall_s']:.1f}", " ".join(f"{v:.1f}" for v in r["load_before"] or [])]
                      for r in st["runs"]]
        source = pair["source_run"]
        rows.append(["", "", "", "recipe - scratch (paired)", pm(pair["recipe_minus_scratch"]), "", "", "", ""])
        rows.append(["", "", "", "recipe - one lr (paired)", pm(pair["recipe_minus_one_lr"]), "", "", "",
                     f"(source: val AUC {source['val_auc']:.4f}, {source['wall_s']:.0f} s)"])
    return "\n".join([
        f"\nTransfer: {d['model']} pretrained from scratch on one dev set (not ImageNet weights), then each arm on a "
        f"subset of the other, val split only; seeds {', '.join(map(str, d['seeds']))}; mean ± sample sd; on "
        f"{machine.get('cpu')}, {machine['cpus']} CPUs:",
        table(["source -> target", "train", "val", "arm", "val AUC", "val acc", "val ECE", "steps", "wall s"], rows),
        "arms: " + "; ".join(f"{name}: {what}" for name, what in d["arms"].items()),
        "\nEach run:",
        table(["target", "arm", "seed", "val AUC", "val acc", "val ECE", "steps", "epochs (best)", "wall s",
               "load before"], seeds)])
