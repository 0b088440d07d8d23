"""K-fold ensembles in process: the folds (stratified, by patient, multi-label, seeded), the ensemble=auto rule and
its time rule, the pool (unique names, copies and patients in one fold), and the one averaging of calibrated
probabilities that evaluation and the endpoint share."""
import json
import os
from collections import Counter

import numpy as np
import pytest
import torch

import distributed
import ensemble
import ensemble_plan
import evaluation
import inference
import model_def
import prediction
import splits
from channels import ClassNames
from data import Data
from data_factories import CLASSES
from errors import ConfigError
from loaders import CachedSplit
from model_config import ModelLoadError
from train_args import args_with

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6


# ---------------------------------------------------------------- folds
def test_stratified_folds_hold_every_image_once_and_each_class_in_proportion():
    labels = [0] * 53 + [1] * 17 + [2] * 9
    folds = splits.kfold_indices(labels, 5, seed=3)
    assert sorted(i for f in folds for i in f) == list(range(len(labels)))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for c, n in Counter(labels).items():
        per_fold = [sum(labels[i] == c for i in f) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == n


def test_folds_are_reproducible_for_a_seed_and_change_with_it():
    labels = [i % 3 for i in range(90)]
    assert splits.kfold_indices(labels, 3, seed=7) == splits.kfold_indices(labels, 3, seed=7)
    assert splits.kfold_indices(labels, 3, seed=7) != splits.kfold_indices(labels, 3, seed=8)


def test_grouped_folds_never_split_a_patient_and_stay_stratified():
    rng = np.random.default_rng(0)
    groups = [f"p{i // 4}" for i in range(200)]  # 50 patients of 4 images, a patient's images of one class
    labels = [int(rng.random() < 0.3) if i % 4 == 0 else None for i in range(200)]
    labels = [labels[i - i % 4] for i in range(200)]
    folds = splits.kfold_indices(labels, 5, seed=0, groups=groups)
    assert sorted(i for f in folds for i in f) == list(range(200))
    owner = {}
    for k, fold in enumerate(folds):
        for i in fold:
            assert owner.setdefault(groups[i], k) == k
    positives = [sum(labels[i] for i in f) for f in folds]
    assert max(positives) - min(positives) <= 4  # one patient's images at most


def test_multilabel_folds_spread_every_finding():
    targets = [tuple(k for k in range(3) if (i >> k) & 1) for i in range(120)]  # each finding on half the images
    folds = splits.kfold_indices(targets, 3, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(120))
    for k in range(3):
        per_fold = [sum(k in targets[i] for i in f) for f in folds]
        assert max(per_fold) - min(per_fold) <= 2


@pytest.mark.parametrize("k, n", [(1, 10), (11, 10)])
def test_impossible_folds_are_refused(k, n):
    with pytest.raises(ValueError, match="folds"):
        splits.kfold_indices([0, 1] * (n // 2), k, seed=0)


# ---------------------------------------------------------------- the rule
@pytest.mark.parametrize("pool, smallest, members", [
    (624, 168, 5),     # breast ultrasound: 5 folds of 124 images, 33 malignant in each
    (1200, 74, 3),     # fundus grades: the rarest grade allows 3 folds of 20+
    (5232, 1349, 1),   # chest X-ray: above 2,000 images
    (140, 70, 1),      # 140 images cannot make 3 folds of 100
    (900, 50, 1),      # the rarest class cannot give 3 folds 20 of it
    (2000, 400, 5),
    (2001, 400, 1),
])
def test_auto_trains_an_ensemble_for_small_sets_with_enough_of_every_class(pool, smallest, members):
    decision = ensemble_plan.decide("auto", 5, pool=pool, smallest_class=smallest)
    assert decision.members == members and decision.why.startswith("ensemble=auto")
    assert decision.timed == (members > 1)
    if pool > ensemble_plan.MAX_IMAGES:
        assert "2000" in decision.why


def test_auto_honours_fewer_folds_and_says_when_it_shrinks_them():
    assert ensemble_plan.decide("auto", 3, pool=1000, smallest_class=300).members == 3
    shrunk = ensemble_plan.decide("auto", 8, pool=500, smallest_class=200)
    assert shrunk.members == 5 and "shrunk" in shrunk.why  # 500 images make 5 folds of 100, not 8
    assert ensemble_plan.decide("auto", 5, pool=500, smallest_class=100, streamed=True).members == 1


def test_on_and_off_are_honoured_and_on_refuses_what_cannot_be_split():
    assert ensemble_plan.decide("off", 5, pool=600, smallest_class=200).members == 1
    assert ensemble_plan.decide("on", 4, pool=30, smallest_class=4).members == 4
    with pytest.raises(ValueError, match="rarest has 3.*lower folds"):
        ensemble_plan.decide("on", 4, pool=30, smallest_class=3)
    with pytest.raises(ValueError, match="streamed.*cache-max-gb"):
        ensemble_plan.decide("on", 3, pool=30, smallest_class=10, streamed=True)


@pytest.mark.parametrize("member_seconds, members, says", [
    (50, 5, "about 0.83 min a member, 5 min budget"),   # 5 x 50 s fit in 300 s
    (80, 3, "shrunk to 3 members"),      # 300 / 80 = 3
    (120, 1, "one model"),               # 2 members fit: below 3, one model
])
def test_the_time_rule_shrinks_the_members_or_falls_back_to_one_model(member_seconds, members, says):
    first = ensemble_plan.decide("auto", 5, pool=1000, smallest_class=300)
    decision = ensemble_plan.in_time(first, member_seconds, ensemble_plan.budget_minutes(0) * 60)
    assert decision.members == members and says in decision.why and decision.why.startswith(first.why)


def test_the_budget_is_max_train_minutes_when_set():
    assert ensemble_plan.budget_minutes(0) == ensemble_plan.BUDGET_MINUTES == 5
    assert ensemble_plan.budget_minutes(12.5) == 12.5


class FakeTrainer:
    def __init__(self, epochs, members):
        self.plan = type("Plan", (), {"epochs": epochs})()
        self.ensemble_members = members


def test_the_time_check_replans_after_the_second_epoch(tmp_path, monkeypatch):
    """The second epoch is timed: the first carries one-off warm-up costs (here a slow 40 s first epoch that,
    taken as the measure, would have decided one model for members that fit)."""
    args = args_with(max_train_minutes=0, checkpoint_dir=str(tmp_path))
    first = ensemble_plan.decide("auto", 5, pool=1000, smallest_class=300)
    clock = iter([100.0, 104.0])  # the second epoch (training and validation) of 4 s; 30 epochs: 120 s a member
    monkeypatch.setattr(ensemble.time, "perf_counter", lambda: next(clock))
    check = ensemble.TimeCheck(args, first, distributed.DistInfo(), torch.device("cpu"))
    trainer = FakeTrainer(epochs=30, members=5)
    check.on_train_epoch_start(trainer, 1)
    check.on_evaluate(trainer, 1, {})  # not yet: no decision, no clock read
    assert check.decision.timed and not (tmp_path / ensemble.DECISION_FILE).exists()
    check.on_train_epoch_start(trainer, 2)
    with pytest.raises(ensemble.Replan) as raised:
        check.on_evaluate(trainer, 2, {})
    assert raised.value.decision.members == 1 and "one model" in raised.value.decision.why
    saved = json.loads((tmp_path / ensemble.DECISION_FILE).read_text())
    assert saved["members"] == 1  # a resumed run trains what this one decided


def test_the_time_check_keeps_members_that_fit(tmp_path, monkeypatch):
    args = args_with(max_train_minutes=0, checkpoint_dir=str(tmp_path))
    first = ensemble_plan.decide("auto", 5, pool=1000, smallest_class=300)
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(ensemble.time, "perf_counter", lambda: next(clock))
    check = ensemble.TimeCheck(args, first, distributed.DistInfo(), torch.device("cpu"))
    trainer = FakeTrainer(epochs=30, members=5)
    check.on_train_epoch_start(trainer, 1)
    check.on_evaluate(trainer, 1, {})
    check.on_train_epoch_start(trainer, 2)
    check.on_evaluate(trainer, 2, {})  # 5 x 30 s fit in 5 min: no Replan
    assert check.decision.members == 5 and not check.decision.timed


def test_a_one_epoch_plan_is_timed_on_its_only_epoch(tmp_path, monkeypatch):
    args = args_with(max_train_minutes=0, checkpoint_dir=str(tmp_path))
    first = ensemble_plan.decide("auto", 5, pool=1000, smallest_class=300)
    clock = iter([0.0, 200.0])  # 200 s a member: not even 3 fit in 5 min
    monkeypatch.setattr(ensemble.time, "perf_counter", lambda: next(clock))
    check = ensemble.TimeCheck(args, first, distributed.DistInfo(), torch.device("cpu"))
    trainer = FakeTrainer(epochs=1, members=5)
    check.on_train_epoch_start(trainer, 1)
    with pytest.raises(ensemble.Replan) as raised:
        check.on_evaluate(trainer, 1, {})
    assert raised.value.decision.members == 1


# ---------------------------------------------------------------- the pool
def split_of(pixels, labels, names, groups=None):
    return CachedSplit(torch.as_tensor(pixels, dtype=torch.uint8), torch.as_tensor(labels), names, groups)


def test_the_pool_keeps_names_unique_and_copies_and_patients_in_one_group():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (6, 1, 4, 4))
    pixels[5] = pixels[0]  # val's last image is a copy of train's first
    train = split_of(pixels[:4], [0, 1, 0, 1], ["normal/0.png", "pneumonia/0.png", "normal/1.png", "pneumonia/1.png"])
    val = split_of(pixels[4:], [0, 0], ["normal/0.png", "normal/9.png"])
    data = Data(train, val, None, 1, 4, [0.5], [0.2], False, ClassNames(CLASSES, "a test"))
    pool = ensemble.pooled(data)
    assert len(set(pool.names)) == 6 and pool.names[4] == "val/normal/0.png"
    assert pool.copies == 1 and pool.groups[5] == pool.groups[0] and len(set(pool.groups)) == 5
    train.groups, val.groups = ["a", "b", "a", "c"], ["c", "d"]
    pool = ensemble.pooled(data)
    assert pool.groups[0] == pool.groups[2] == pool.groups[5] and pool.groups[3] == pool.groups[4]


def test_a_member_trains_on_the_other_folds_and_judges_its_own():
    labels = [0, 1] * 15
    pool = split_of(np.arange(30).reshape(30, 1, 1, 1), labels, [str(i) for i in range(30)])
    pool.groups = None
    data = Data(pool, pool, "test split", 1, 1, [0.5], [0.2], False, ClassNames(CLASSES, "a test"))
    folds = splits.kfold_indices(labels, 3, seed=0)
    member = ensemble.fold_data(data, pool, folds, 1)
    assert sorted(member.val.names, key=int) == [str(i) for i in folds[1]]
    assert set(member.train.names).isdisjoint(member.val.names) and len(member.train) + len(member.val) == 30
    assert member.test == "test split" and member.mean == [0.5]


def test_a_resumed_run_takes_the_decision_it_made(tmp_path):
    (tmp_path / ensemble.DECISION_FILE).write_text(json.dumps({"members": 3, "why": "ensemble=auto: 3 folds"}))
    labels = torch.tensor([0, 1] * 300)
    split = CachedSplit(torch.zeros(600, 1, 2, 2, dtype=torch.uint8), labels)
    data = Data(split, split, None, 1, 2, [0.5], [0.2], False, ClassNames(CLASSES, "a test"))
    args = args_with(ensemble="auto", folds=5, checkpoint_dir=str(tmp_path))
    decision = ensemble.decide(args, data, distributed.DistInfo(), torch.device("cpu"))
    assert decision.members == 3 and "(resumed)" in decision.why and not decision.timed
    os.unlink(tmp_path / ensemble.DECISION_FILE)
    (tmp_path / "checkpoint-0003-000000.pt").write_bytes(b"")  # a one-model run's checkpoint
    decision = ensemble.decide(args, data, distributed.DistInfo(), torch.device("cpu"))
    assert decision.members == 1 and "one-model run" in decision.why


def test_ensemble_on_that_cannot_be_split_is_one_config_error(tmp_path):
    train = CachedSplit(torch.zeros(12, 1, 2, 2, dtype=torch.uint8), torch.tensor([0] * 10 + [1] * 2))
    val = CachedSplit(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 0]))
    data = Data(train, val, None, 1, 2, [0.5], [0.2], False, ClassNames(CLASSES, "a test"))
    args = args_with(ensemble="on", folds=3, checkpoint_dir=None)
    with pytest.raises(ConfigError, match="folds=3 needs at least 3 images of every class"):
        ensemble.decide(args, data, distributed.DistInfo(), torch.device("cpu"))


# ---------------------------------------------------------------- averaging, in evaluation and at the endpoint
def test_the_ensemble_averages_calibrated_probabilities_not_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 20, 2)).astype(np.float32)
    expected = np.mean([np.exp(z / 2) / np.exp(z / 2).sum(axis=1, keepdims=True) for z in logits], axis=0)
    got = evaluation.probabilities(logits, "multiclass", 2.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    mean_logits = evaluation.probabilities(logits.mean(axis=0), "multiclass", 2.0)
    assert np.abs(got - mean_logits).max() > 1e-3
    sig = evaluation.probabilities(logits, "multilabel", [1.0, 0.5])
    np.testing.assert_allclose(sig, np.mean(1 / (1 + np.exp(-logits / np.array([1.0, 0.5]))), axis=0), rtol=1e-5)


def write_members(model_dir, k, config_extra=None):
    os.makedirs(model_dir / "members", exist_ok=True)
    files = []
    for i in range(k):
        torch.manual_seed(i)
        model = model_def.create_model("smallcnn", 2, 1)
        name = ensemble.member_file(i)
        torch.save(model.state_dict(), model_dir / name)
        files.append(name)
    config = {"architecture": "smallcnn", "num_classes": 2, "classes": list(CLASSES), "in_channels": 1,
              "image_size": 16, "mean": [0.5], "std": [0.25], "temperature": 1.7, "threshold": 0.4,
              "ensemble": {"members": k, "files": files}, **(config_extra or {})}
    (model_dir / "model_config.json").write_text(json.dumps(config))
    return files


def test_the_endpoint_loads_every_member_and_answers_their_mean(tmp_path):
    files = write_members(tmp_path, 3)
    assert files == ["model.pth", "members/model-1.pth", "members/model-2.pth"]
    loaded = inference.model_fn(str(tmp_path))
    assert len(loaded.members) == 3 and loaded.model is loaded.members[0]
    x = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    served = inference.probabilities(loaded, x)
    each = [prediction.probabilities(m, x, mean=[0.5], std=[0.25], temperature=1.7).numpy() for m in loaded.members]
    np.testing.assert_allclose(served, np.mean(each, axis=0), rtol=1e-6, atol=1e-7)
    logits = np.stack([prediction.logits(m, x, mean=[0.5], std=[0.25]).numpy() for m in loaded.members])
    np.testing.assert_allclose(served, evaluation.probabilities(logits, "multiclass", 1.7), atol=1e-6)


@pytest.mark.parametrize("name", ["../model.pth", "/etc/passwd", "members/../../x.pth", ""])
def test_the_endpoint_refuses_member_files_outside_the_model_dir(tmp_path, name):
    write_members(tmp_path, 2)
    config = json.loads((tmp_path / "model_config.json").read_text())
    config["ensemble"]["files"][1] = name
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="outside the model directory"):
        inference.model_fn(str(tmp_path))


def test_a_missing_member_is_one_load_error(tmp_path):
    write_members(tmp_path, 2)
    os.unlink(tmp_path / "members" / "model-1.pth")
    with pytest.raises(ModelLoadError, match="model-1.pth"):
        inference.model_fn(str(tmp_path))
