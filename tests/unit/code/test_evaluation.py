"""What evaluation decides and reports: temperature scaling and the operating threshold are fitted on val, the test
metrics carry seeded bootstrap intervals (by patient when the split names them), and the summary line repeats the
kept epoch's own line."""
import numpy as np
import pytest

import calibration
import evaluation
import metrics
from train_args import args_with

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6


# ---------------------------------------------------------------- calibration and the operating point
def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (4000, 3))
    p = np.exp(z / 2.5)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in p])
    assert calibration.fit_temperature(z, labels) == pytest.approx(2.5, rel=0.1)


def test_per_finding_temperatures_for_multilabel():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, (3000, 2))
    y = (rng.random((3000, 2)) < 1 / (1 + np.exp(-z / np.array([0.5, 2.0])))).astype(int)
    t = calibration.fit_temperature(z, y, multilabel=True)
    assert t[0] == pytest.approx(0.5, rel=0.15) and t[1] == pytest.approx(2.0, rel=0.15)


def test_the_operating_threshold_is_chosen_on_val():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    threshold, rule = calibration.choose_threshold(y == 1, s)
    assert rule == "Youden's J on val" and 0.6 < threshold <= 0.7  # between the two scores it separates
    threshold, rule = calibration.choose_threshold(y == 1, s, target_sensitivity=1.0)
    assert 0.3 < threshold <= 0.4 and rule == "target sensitivity 1 on val"  # every positive caught
    assert calibration.choose_threshold(np.ones(3, bool), s[:3])[0] == 0.5


def test_ece_by_hand():
    prob = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    # bins of 1/15: 0.9 -> right, 0.8 -> wrong, 0.7 -> right, 0.6 -> right (each alone in its bin)
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6)) / 4
    assert metrics.expected_calibration_error(y, prob) == pytest.approx(expected)


def report_of(seed, resamples=200):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    logits = np.stack([np.zeros(300), (y * 2 - 1) * 1.5 + rng.normal(0, 1.5, 300)], 1)
    decisions = evaluation.fit_decisions(y, logits, task="multiclass", classes=["normal", "pneumonia"])
    return evaluation.report(y, logits, [f"{i}.png" for i in range(300)], decisions, task="multiclass",
                             classes=["normal", "pneumonia"], resamples=resamples, seed=seed)


def test_confidence_intervals_are_present_contain_the_estimate_and_are_seeded():
    (out, predictions), (again, _), (other, _) = report_of(1), report_of(1), report_of(2)
    for name in ("accuracy", "auc", "sensitivity", "specificity", "op_accuracy", "op_sensitivity", "op_specificity"):
        low, high = out["ci95"][name]
        point = out["operating_point"][name[3:]] if name.startswith("op_") else out[name]
        assert low <= point <= high and high - low < 0.3, (name, low, point, high)
    assert out["ci95"] == again["ci95"] and out["ci95"] != other["ci95"]
    assert predictions["images"][0] == "0.png" and len(predictions["probabilities"]) == 300
    op = out["operating_point"]
    assert {"threshold", "sensitivity", "specificity", "ppv", "npv", "prevalence", "rule"} <= set(op)
    assert out["ece"] <= out["ece_uncalibrated"] + 0.02  # calibrated on this very split: no worse


def test_the_intervals_say_their_unit_and_resample_patients_when_the_split_names_them():
    rng = np.random.default_rng(5)
    y = np.repeat(rng.integers(0, 2, 60), 5)  # 60 patients of 5 images, each patient's images alike
    logits = np.stack([np.zeros(300), np.repeat((y[::5] * 2 - 1) * 1.5 + rng.normal(0, 1.5, 60), 5)], 1)
    decisions = evaluation.fit_decisions(y, logits, task="multiclass", classes=["normal", "pneumonia"])
    kw = dict(task="multiclass", classes=["normal", "pneumonia"], resamples=300, seed=0)
    by_image, _ = evaluation.report(y, logits, [f"{i}.png" for i in range(300)], decisions, **kw)
    by_patient, _ = evaluation.report(y, logits, [f"{i}.png" for i in range(300)], decisions,
                                      groups=[f"p{i // 5}" for i in range(300)], **kw)
    assert by_image["ci95_unit"] == "image" and "n_groups" not in by_image
    assert by_patient["ci95_unit"] == "patient" and by_patient["n_groups"] == 60
    for name in ("accuracy", "auc", "op_sensitivity"):
        width = {u: r["ci95"][name][1] - r["ci95"][name][0] for u, r in (("image", by_image), ("patient", by_patient))}
        assert width["patient"] > 1.5 * width["image"], (name, width)  # about sqrt(5) = 2.2 times wider
    assert by_patient["accuracy"] == by_image["accuracy"]  # the figures themselves do not change
    assert "ci95_unit" not in evaluation.report(y, logits, ["x"] * 300, decisions, **dict(kw, resamples=0))[0]


def test_accuracy_stays_the_argmax_definition_beside_the_operating_point():
    out, predictions = report_of(1, resamples=0)
    prob = np.asarray(predictions["probabilities"])
    y = np.asarray(predictions["labels"])
    assert "ci95" not in out
    assert out["accuracy"] == pytest.approx((prob.argmax(1) == y).mean())  # MedMNIST's ACC
    threshold = out["operating_point"]["threshold"]
    assert out["operating_point"]["accuracy"] == pytest.approx(((prob[:, 1] >= threshold) == (y == 1)).mean())


def test_multilabel_thresholds_are_per_finding():
    rng = np.random.default_rng(3)
    y = (rng.random((400, 2)) < [0.1, 0.5]).astype(int)
    logits = (y * 2 - 1) * 2 + rng.normal(0, 2, (400, 2))
    d = evaluation.fit_decisions(y, logits, task="multilabel", classes=["a", "b"])
    assert len(d.thresholds) == 2 and d.threshold is None and len(d.temperature) == 2
    out, _ = evaluation.report(y, logits, list(range(400)), d, task="multilabel", classes=["a", "b"], resamples=50,
                               seed=0)
    assert [out["per_finding"][k]["threshold"] for k in ("a", "b")] == d.thresholds
    assert set(out["ci95"]) == {"accuracy", "auc", "sensitivity", "specificity"}


# ---------------------------------------------------------------- the summary line
def test_the_summary_line_repeats_the_kept_epochs_own_line(caplog):
    """Three classes: temperature scaling moves metrics.json's one-vs-rest val AUC, but the summary (the tuner's
    objective, SageMaker keeping a metric's last value) is the kept epoch's line, as the model was selected on it."""
    import epoch_log
    import train

    history = [{"epoch": 1, "val_auc": 0.7683, "val_acc": 0.4333, "val_kappa": 0.21, "val_mae": 0.9},
               {"epoch": 2, "val_auc": 0.7012, "val_acc": 0.4, "val_kappa": 0.1, "val_mae": 1.1}]
    results = {"history": history, "best_epoch": 1, "decisions": {"threshold": None},
               "val": {"auc": 0.7489, "accuracy": 0.4333, "kappa": 0.21, "mae": 0.9}}
    with caplog.at_level("INFO", logger="train"):
        train.log_results(results, args_with(model_dir="/opt/ml/model"), "/opt/ml/output/data/metrics.json")
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("best epoch ")]
    assert len(summary) == 1
    values = epoch_log.parse(summary[0])
    assert values == {"val_auc": 0.7683, "val_acc": 0.4333, "val_kappa": 0.21, "val_mae": 0.9}, summary[0]
    assert summary[0].startswith("best epoch 1: ")


def test_a_temperature_fitted_to_its_bound_is_a_warning(caplog):
    labels = np.array([0, 1] * 6)
    separated = np.stack([(1 - labels) * 4.0, labels * 4.0], axis=1)  # no finite best T: it runs to the lower bound
    with caplog.at_level("WARNING", logger="train"):
        decisions = evaluation.fit_decisions(labels, separated, task="multiclass", classes=["a", "b"])
    assert decisions.temperature == pytest.approx(calibration.TEMPERATURE_RANGE[0], rel=1e-3)
    assert [r.getMessage() for r in caplog.records] == [
        "temperature scaling ended at a bound of [0.25, 8.0] for the model (12 val images): the val split is too "
        "small or too easily separated for a reliable calibration; more val images would help"]
    caplog.clear()
    rng = np.random.default_rng(0)
    noisy = separated + rng.normal(0, 3, separated.shape)
    with caplog.at_level("WARNING", logger="train"):
        evaluation.fit_decisions(labels, noisy, task="multiclass", classes=["a", "b"])
    assert not caplog.records
