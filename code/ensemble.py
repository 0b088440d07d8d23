"""K-fold ensembles (``ensemble``, ``folds``; the rule is ensemble_plan.py's): train and val pooled and split into K
folds (splits.kfold_indices: stratified, by patient, copies of an image in one fold), one member per fold trained by
the ordinary engine.Trainer on the other folds and choosing its epoch on its own fold, one after another (on every
rank under torchrun), then the temperature and operating threshold fitted on all the out-of-fold predictions
(evaluation.fit_decisions) and the test split answered by the mean of the members' calibrated probabilities.

The model directory: ``model.pth`` is member 0 (so readers of one model, heat maps included, get a whole member),
``members/model-<i>.pth`` the others, and model_config.json's ``ensemble`` names them (``files``) for the endpoint,
which averages them as evaluation does (prediction.mean_probabilities). metrics.json's ``val`` is the out-of-fold
report of every train + val image, ``ensemble`` what was done.

Spot resume: member i checkpoints into ``<checkpoint-dir>/member-<i>/``; a finished member resumes to its end at
once and is not trained again; ``<checkpoint-dir>/ensemble.json`` keeps the decision (and the time rule's), so a
resumed run trains the same members.
"""
import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import time

import numpy as np
import torch

import accounting
import distributed
import ensemble_plan
import epoch_log
import evaluation
import model_config
import safeguards
import schedule
import splits
import utils
from data import Data
from engine import Callback, Trainer
from errors import ConfigError
from loaders import CachedSplit

logger = logging.getLogger("train")

MEMBERS_DIR, DECISION_FILE = "members", "ensemble.json"


def member_file(index):
    """Member ``index``'s weights file in the model dir: model.pth for member 0, members/model-<i>.pth after it."""
    return "model.pth" if index == 0 else f"{MEMBERS_DIR}/model-{index}.pth"


class MemberWriter:
    """What engine.Trainer saves its best weights with (``save``, ``exists``): one member's file, rank 0."""

    def __init__(self, model_dir, index):
        self.path = os.path.join(model_dir, member_file(index))

    def exists(self):
        return os.path.exists(self.path)

    def save(self, weights):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        utils.atomic_torch_save(weights, self.path)


class Replan(Exception):
    """The time rule changed the number of members after the first member's timed epoch."""

    def __init__(self, decision):
        super().__init__(decision.why)
        self.decision = decision


@dataclasses.dataclass
class Member:
    """One trained member: where it trained and judged, its kept epoch, and its out-of-fold and test logits."""

    index: int
    train_images: int
    fold_images: int
    best_epoch: int
    epochs_run: int
    steps: int
    history: list
    plan: dict
    oof: tuple  # (pool indices, logits)
    test: tuple  # (labels, logits, indices) or None
    initialised_from: dict = None


# ==================================================================================================
# The pool and its folds
# ==================================================================================================
def pooled(data):
    """train + val as one CachedSplit: names unique (``val/`` in front of val's when the two channels share one),
    ``groups`` each image's patient with the copies of an image (the same pixels) in one group, or None."""
    train, val = data.train, data.val
    names = list(train.names) + list(val.names)
    if len(set(names)) < len(names):
        names = [f"train/{n}" for n in train.names] + [f"val/{n}" for n in val.names]
    pool = CachedSplit(torch.cat([train.images, val.images.to(train.images.device)]),
                       torch.cat([train.labels, val.labels.to(train.labels.device)]), names)
    patients = None
    if train.groups is not None or val.groups is not None:
        patients = [f"patient:{g}" if g is not None else f"image:{i}" for i, g in enumerate(
            list(train.groups or [None] * len(train)) + list(val.groups or [None] * len(val)))]
    pool.groups, pool.copies = groups_with_copies(pool.images, patients)
    return pool


def groups_with_copies(images, patients):
    """(groups, copies): ``patients`` (or one group per image) merged so that images with the same pixels share a
    group, and how many images were copies; groups is None when there are neither patients nor copies."""
    parent = list(range(len(images)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first, copies = {}, 0
    for i, key in enumerate(hashlib.sha1(row.tobytes()).hexdigest() for row in images.cpu().numpy()):
        if key in first:
            parent[root(i)], copies = root(first[key]), copies + 1
        else:
            first[key] = i
    by_patient = {}
    for i, patient in enumerate(patients or []):
        if patient in by_patient:
            parent[root(i)] = root(by_patient[patient])
        else:
            by_patient[patient] = i
    if patients is None and not copies:
        return None, 0
    return [root(i) for i in range(len(images))], copies


def targets(split, task):
    """What splits.py stratifies on: class indices, or (multi-label) each image's tuple of findings."""
    labels = split.labels.cpu()
    if task == "multilabel":
        return [tuple(int(k) for k in torch.nonzero(row > 0.5).flatten()) for row in labels]
    return [int(v) for v in labels]


def smallest_class(split, task, num_classes):
    """Images of the rarest class (multi-label: positives of the rarest finding) in ``split``."""
    labels = split.labels.cpu()
    if task == "multilabel":
        return int((labels > 0.5).sum(dim=0).min())
    return int(torch.bincount(labels.long(), minlength=num_classes).min())


def fold_data(data, pool, folds, index):
    """The Data of member ``index``: train = the other folds, val = fold ``index``, test and the rest as ``data``."""
    held = torch.as_tensor(folds[index], dtype=torch.int64)
    kept = torch.as_tensor(sorted(i for f, fold in enumerate(folds) if f != index for i in fold), dtype=torch.int64)

    def subset(idx):
        on = idx.to(pool.images.device)
        return CachedSplit(pool.images.index_select(0, on), pool.labels.index_select(0, on.to(pool.labels.device)),
                           [pool.names[i] for i in idx.tolist()],
                           [pool.groups[i] for i in idx.tolist()] if pool.groups is not None else None)

    return Data(subset(kept), subset(held), data.test, data.channels, data.size, data.mean, data.std, data.streamed,
                data.classes, data.task)


# ==================================================================================================
# The decision
# ==================================================================================================
def decide(args, data, dist_info, device):
    """ensemble_plan's decision for this run, or the one a resumed run made (``ensemble.json`` in the checkpoint
    dir; a checkpoint dir holding a one-model run's checkpoints goes on as one model); every rank takes rank 0's
    number of members. Logs it in one line."""
    saved = read_decision(args.checkpoint_dir)
    if saved is not None:
        decision = dataclasses.replace(saved, why=f"{saved.why} (resumed)", timed=False)
    elif args.checkpoint_dir and os.path.isdir(args.checkpoint_dir) and any(
            n.startswith("checkpoint-") for n in os.listdir(args.checkpoint_dir)):
        decision = ensemble_plan.Decision(1, f"ensemble={args.ensemble}: one model, resuming the one-model run "
                                             f"whose checkpoints are in {args.checkpoint_dir}")
    else:
        pool = len(data.train) + len(data.val)
        try:
            decision = ensemble_plan.decide(args.ensemble, args.folds, pool=pool, streamed=data.streamed,
                                            smallest_class=0 if data.streamed else smallest_class(
                                                pooled_labels(data), data.task, len(data.classes)))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    members = int(distributed.all_reduce_sum([decision.members if dist_info.is_main else 0], dist_info, device)[0])
    decision = dataclasses.replace(decision, members=members)
    if decision.members > 1 and not decision.timed:  # one model by the counts: the same again on resume, no file
        save_decision(args.checkpoint_dir, decision, dist_info)
    logger.info("%s", decision.why)
    return decision


def pooled_labels(data):
    return CachedSplit(torch.zeros(0), torch.cat([data.train.labels.cpu(), data.val.labels.cpu()]))


def read_decision(folder):
    path = os.path.join(folder, DECISION_FILE) if folder else None
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            saved = json.load(fh)
        return ensemble_plan.Decision(int(saved["members"]), str(saved["why"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read {path} ({exc}); it is the ensemble's decision of the run being resumed: "
                          "restore it or use an empty checkpoint dir") from exc


def save_decision(folder, decision, dist_info):
    if folder and dist_info.is_main:
        utils.atomic_write_json(os.path.join(folder, DECISION_FILE), {"members": decision.members, "why": decision.why})


class TimeCheck(Callback):
    """The time rule (ensemble_plan.in_time) after the first member's second epoch (its training and validation;
    the first when the plan has one): raises Replan when the members do not fit; saves the decision either way.
    The first epoch is not the measure: it carries one-off costs (kernel selection and warm-up, lazy imports) that
    made it 1.1-2.0 times the next on 2 CPU cores at 64 px, so that one setting's decision changed with the seed."""

    def __init__(self, args, decision, dist_info, device):
        self.args, self.decision, self.dist, self.device = args, decision, dist_info, device
        self.started = self.epochs = None

    def timed_epoch(self):
        return min(2, self.epochs)

    def on_train_epoch_start(self, trainer, epoch):
        if self.epochs is None:
            self.epochs = trainer.plan.epochs  # before max-train-minutes cuts
        if epoch == self.timed_epoch():
            self.started = time.perf_counter()

    def on_evaluate(self, trainer, epoch, val):
        if self.started is None or epoch != self.timed_epoch() or not self.decision.timed:
            return
        member_seconds = (time.perf_counter() - self.started) * self.epochs
        budget = ensemble_plan.budget_minutes(self.args.max_train_minutes) * 60
        decision = ensemble_plan.in_time(self.decision, member_seconds, budget)
        members = int(distributed.all_reduce_sum([decision.members if self.dist.is_main else 0], self.dist,
                                                 self.device)[0])
        decision = dataclasses.replace(decision, members=members, timed=False)
        self.decision = decision
        save_decision(self.args.checkpoint_dir, decision, self.dist)
        logger.info("%s", decision.why)
        if decision.members != trainer_members(trainer):
            raise Replan(decision)


def trainer_members(trainer):
    return getattr(trainer, "ensemble_members", 0)


# ==================================================================================================
# Training
# ==================================================================================================
def member_arguments(args, index, members):
    """A member's hyperparameters: its own seed (seed + index), checkpoint folder and share of max-train-minutes."""
    folder = os.path.join(args.checkpoint_dir, f"member-{index}") if args.checkpoint_dir else None
    return argparse.Namespace(**dict(vars(args), seed=args.seed + index, checkpoint_dir=folder,
                                     max_train_minutes=args.max_train_minutes / members))


def train_member(args, data, pool, folds, index, kit, callbacks=()):
    """Member ``index``: a fresh model trained on the other folds (engine.Trainer, its epoch chosen on fold
    ``index``), then its logits on its fold (out of fold) and on test. Returns a Member."""
    member_args = member_arguments(args, index, len(folds))
    if member_args.checkpoint_dir and kit.dist_info.is_main:
        os.makedirs(member_args.checkpoint_dir, exist_ok=True)
    member_data = fold_data(data, pool, folds, index)
    logger.info("ensemble member %d of %d: trains on %d images, chooses its epoch on fold %d (%d images)", index + 1,
                len(folds), len(member_data.train), index + 1, len(member_data.val))
    model, wrapped, initialised_from = kit.build(member_args, member_data)
    world = kit.dist_info.world_size
    plan = schedule.make_plan(member_args, math.ceil(len(member_data.train) / world), world)
    predict = evaluation.SplitPredictor(member_args, member_data, plan, kit.device, kit.dist_info)
    trainer = Trainer(member_args, member_data, model, wrapped, plan=plan, predict=predict, device=kit.device,
                      amp_dtype=kit.amp_dtype, dist_info=kit.dist_info, writer=MemberWriter(args.model_dir, index),
                      stop=kit.stop, callbacks=[*kit.callbacks, *callbacks])
    trainer.ensemble_members = len(folds)
    trainer.resume(member_args.checkpoint_dir)
    fitted = trainer.fit()
    model.load_state_dict(fitted.best_weights)
    _, logits, idx = predict(model, member_data.val, f"fold {index + 1}")
    test = predict(model, data.test, "test") if data.test is not None else None
    for name, out in (("its fold", logits), ("test", None if test is None else test[1])):
        if out is not None and not np.isfinite(out).all():  # the member's file holds its kept model
            raise safeguards.non_finite_error(f"member {index + 1}'s predictions on {name} are NaN or infinite",
                                              epoch=fitted.state.epoch, args=member_args, lr=fitted.plan.lr,
                                              best_epoch=fitted.best_epoch)
    return Member(index, len(member_data.train), len(member_data.val), fitted.best_epoch, fitted.state.epoch,
                  fitted.state.global_step, fitted.state.history, fitted.plan.to_dict(),
                  (np.asarray(folds[index])[idx], logits), test, initialised_from)


def fit(args, data, decision, kit):
    """Train the members of ``decision`` one after another (the time rule may change their number after the first
    member's timed epoch, its second: the folds are made again for the new number). Returns (members, pool,
    decision); (None, None, decision) when the time rule falls back to one model."""
    pool = pooled(data)
    if pool.copies:
        logger.warning("%d image(s) in train + val hold the same pixels as another: each copy stays in its "
                       "original's fold", pool.copies)
    while True:
        folds = splits.kfold_indices(targets(pool, data.task), decision.members, args.seed, groups=pool.groups)
        check = TimeCheck(args, decision, kit.dist_info, kit.device)
        try:
            first = train_member(args, data, pool, folds, 0, kit, callbacks=[check])
        except Replan as replan:
            decision = replan.decision
            if decision.members < 2:
                return None, None, decision
            continue
        decision = check.decision
        rest = [train_member(args, data, pool, folds, i, kit) for i in range(1, len(folds))]
        return [first, *rest], pool, decision


# ==================================================================================================
# Evaluation and the model directory
# ==================================================================================================
def out_of_fold(members, pool, num_classes):
    """Every pooled image's logits from the member that did not train on it, and the images that have them."""
    logits = np.full((len(pool), num_classes), np.nan, dtype=np.float32)
    for member in members:
        idx, out = member.oof
        logits[idx] = out
    have = np.flatnonzero(np.isfinite(logits).all(axis=1))
    return have, logits[have]


def evaluate_and_save(members, pool, decision, data, args, kit):
    """Temperature and threshold on the out-of-fold predictions; val = the out-of-fold report (with intervals),
    test = the members' averaged calibrated probabilities; the model dir (members, model_config.json's
    ``ensemble``) and metrics.json (rank 0); the result lines."""
    task, classes = data.task, list(data.classes)
    positive = getattr(data.classes, "positive", None)
    have, oof = out_of_fold(members, pool, len(classes))
    labels = pool.labels.cpu().numpy()[have]
    decisions = evaluation.fit_decisions(labels, oof, task=task, classes=classes, calibrate=args.calibrate,
                                         target_sensitivity=args.target_sensitivity, positive=positive)
    decisions.rule = decisions.rule.replace(" on val", " on the out-of-fold predictions")  # what the answers say
    groups = [pool.groups[i] for i in have] if pool.groups is not None else None
    splits_out = {"val": (labels, oof, [pool.names[i] for i in have], groups)}
    if data.test is not None:
        test_labels, _, idx = members[0].test
        stacked = np.stack([m.test[1] for m in members])
        splits_out["test"] = (test_labels, stacked, [data.test.names[i] for i in idx],
                              [data.test.groups[i] for i in idx] if data.test.groups is not None else None)
    metrics = {}
    for name, (y, logits, names, grouped) in splits_out.items():
        metrics[name], metrics[f"{name}_predictions"] = evaluation.report(
            y, logits, names, decisions, task=task, classes=classes, ordinal=args.ordinal,
            resamples=args.bootstrap, seed=args.seed, groups=grouped)
        why = accounting.undefined(y, classes, task, name, positive=1 if positive is None else positive)
        if why:
            metrics[name]["undefined"] = why
    block = ensemble_block(members, pool, decision, metrics["val"])
    config = model_config.with_decisions(kit.make_config(members[0].initialised_from), decisions)
    config["ensemble"] = {"members": len(members), "files": [member_file(m.index) for m in members],
                          "epochs": [m.best_epoch for m in members], "rule": decision.why,
                          "oof": {k: block["oof"][k] for k in ("auc", "accuracy", "loss", "ece") if k in block["oof"]}}
    metrics = {**run_summary(members[0], data, config, decisions, positive), "ensemble": block, **metrics}
    skipped = accounting.skipped_images(data, kit.dist_info)
    path = None
    if kit.dist_info.is_main:
        metrics["skipped"] = accounting.skipped_section(skipped, args.output_data_dir)
        kit.writer(config).save(torch.load(os.path.join(args.model_dir, "model.pth"), map_location="cpu",
                                           weights_only=True))
        path = os.path.join(args.output_data_dir, "metrics.json")
        utils.atomic_write_json(path, utils.json_safe(metrics))
    log_results(metrics, args, path, kit)


def run_summary(first, data, config, decisions, positive):
    """metrics.json's entries besides the splits: as a one-model run's, with member 0's history and plan."""
    classes = list(data.classes)
    return {"history": first.history, "best_epoch": first.best_epoch, "classes": classes,
            "classes_from": data.classes.source, "task": data.task, "config": config,
            "positive_class": None if positive is None else classes[positive],
            "positive_class_from": getattr(data.classes, "positive_from", None), "plan": first.plan,
            "steps": first.steps, "epochs_run": first.epochs_run, "initialised_from": config.get("initialised_from"),
            "decisions": dataclasses.asdict(decisions)}


def ensemble_block(members, pool, decision, oof_report):
    """metrics.json's ``ensemble``: what was trained, why, and the out-of-fold figures with their intervals."""
    keep = ("accuracy", "auc", "loss", "ece", "sensitivity", "specificity", "kappa", "mae", "operating_point",
            "ci95", "ci95_unit", "n_groups")
    return {"members": len(members), "rule": decision.why, "pool_images": len(pool),
            "grouped": "by patient and copies" if pool.groups is not None else "stratified by class",
            "val_is": "out-of-fold: each train + val image predicted by the member that did not train on it",
            "test_is": "the mean of the members' calibrated probabilities",
            "oof": {k: oof_report[k] for k in keep if k in oof_report},
            "per_member": [{"member": m.index + 1, "file": member_file(m.index), "train_images": m.train_images,
                            "fold_images": m.fold_images, "best_epoch": m.best_epoch, "epochs_run": m.epochs_run,
                            "steps": m.steps} for m in members]}


def log_results(metrics, args, path, kit):
    """The one line of what was done, then train.py's result lines with the out-of-fold figures as the summary."""
    block = metrics["ensemble"]
    oof = block["oof"]
    logger.info("ensemble: %d members, kept epochs %s; out-of-fold auc=%.4f acc=%.4f on %d train + val images; test "
                "answered by the mean of the members' calibrated probabilities", block["members"],
                [m["best_epoch"] for m in block["per_member"]], oof.get("auc", float("nan")),
                oof.get("accuracy", float("nan")), block["pool_images"])
    epochs = ", ".join(str(m["best_epoch"]) for m in block["per_member"])
    kit.log_results(metrics, args, path, summary=(f"of each member {epochs} (ensemble, out of fold)",
                                                  epoch_log.keyed("val", metrics["val"])))
