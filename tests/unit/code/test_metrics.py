"""compute_metrics against scikit-learn and by hand (the MedMNIST evaluator's definitions)."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

import metrics
import utils

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_binary_matches_sklearn_and_hand_counts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    prob = softmax(rng.normal(size=(200, 2)) + np.eye(2)[y] * 1.5)
    m = metrics.compute_metrics(y, prob)
    assert m["auc"] == pytest.approx(roc_auc_score(y, prob[:, 1]))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, prob.argmax(1)))
    cm = confusion_matrix(y, prob.argmax(1))
    assert m["confusion_matrix"] == cm.tolist()
    tn, fp, fn, tp = cm.ravel()
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))


def test_multiclass_auc_is_macro_one_vs_rest():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    prob = softmax(rng.normal(size=(300, 4)) + np.eye(4)[y])
    m = metrics.compute_metrics(y, prob, positive_class=None)
    assert m["auc"] == pytest.approx(roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, prob.argmax(1)))
    assert len(m["per_class_recall"]) == 4


def test_single_class_gives_nan_auc_not_a_crash():
    m = metrics.compute_metrics(np.zeros(5, int), np.tile([0.7, 0.3], (5, 1)))
    assert np.isnan(m["auc"]) and m["accuracy"] == 1.0


def test_json_safe_turns_nan_into_null():
    assert utils.json_safe({"a": float("nan"), "b": [np.float32(1.5), np.int64(2)]}) == {"a": None, "b": [1.5, 2]}


def test_auc_with_ties_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 500)
    score = np.round(rng.random(500) + 0.3 * y, 1)  # heavily tied scores
    assert metrics.roc_auc(y == 1, score) == pytest.approx(roc_auc_score(y, score))


# ---------------------------------------------------------------- bootstrap: images or patients
def _image_bootstrap_as_before(statistics, n, resamples, seed, level=0.95):
    """bootstrap_ci as it was before groups existed (the numbers every earlier metrics.json holds)."""
    rng = np.random.default_rng(seed)
    draws = {}
    for _ in range(resamples):
        for name, value in statistics(rng.integers(0, n, n)).items():
            if value is not None and np.isfinite(value):
                draws.setdefault(name, []).append(value)
    tail = (1 - level) / 2 * 100
    return {k: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] for k, v in draws.items()}


def clustered(patients=60, per_patient=5, seed=0):
    """``per_patient`` identical images per patient: a patient's images carry no more information than one."""
    value = np.random.default_rng(seed).normal(size=patients)
    return np.repeat(value, per_patient), np.repeat([f"p{i}" for i in range(patients)], per_patient)


@pytest.mark.parametrize("per_patient", [4, 9])
def test_patient_intervals_are_sqrt_k_wider_than_image_intervals_for_k_identical_images(per_patient):
    x, patients = clustered(per_patient=per_patient)

    def mean(idx):
        return {"mean": x[idx].mean()}

    by_image = metrics.bootstrap_ci(mean, len(x), resamples=2000, seed=0)["mean"]
    by_patient = metrics.bootstrap_ci(mean, len(x), resamples=2000, seed=0, groups=patients)["mean"]
    ratio = (by_patient[1] - by_patient[0]) / (by_image[1] - by_image[0])
    assert 0.85 * np.sqrt(per_patient) < ratio < 1.15 * np.sqrt(per_patient), ratio
    # one image per patient: the same width as by image (the unit changes nothing when nothing is clustered)
    one = metrics.bootstrap_ci(mean, 60, resamples=2000, seed=1, groups=list(range(60)))["mean"]
    alone = metrics.bootstrap_ci(mean, 60, resamples=2000, seed=1)["mean"]
    assert abs((one[1] - one[0]) / (alone[1] - alone[0]) - 1) < 0.15


def test_a_patient_resample_takes_whole_patients_as_many_as_there_are():
    patients = ["b", "a", "b", "c", "a", "a", "d"]  # patients of 1 to 3 images, not in order
    seen = []

    def record(idx):
        seen.append(list(idx))
        return {}

    metrics.bootstrap_ci(record, len(patients), resamples=200, seed=3, groups=patients)
    size = {p: patients.count(p) for p in patients}
    for idx in seen:
        drawn = [patients[i] for i in idx]
        counts = {p: drawn.count(p) for p in set(drawn)}
        assert all(n % size[p] == 0 for p, n in counts.items()), drawn  # every image of a drawn patient
        assert sum(n // size[p] for p, n in counts.items()) == 4  # 4 patients drawn, with replacement
    assert any(len(idx) != len(patients) for idx in seen)  # patients of unequal size: the resample size varies


def test_patient_intervals_are_seeded_and_image_intervals_are_as_before():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    p = np.clip(y * 0.3 + rng.random(120) * 0.7, 0, 1)
    patients = [f"p{i // 3}" for i in range(120)]

    def stats(idx):
        return {"auc": metrics.roc_auc(y[idx] == 1, p[idx]), "accuracy": float(((p[idx] >= 0.5) == y[idx]).mean())}

    first = metrics.bootstrap_ci(stats, 120, resamples=300, seed=7, groups=patients)
    assert first == metrics.bootstrap_ci(stats, 120, resamples=300, seed=7, groups=patients)
    assert first != metrics.bootstrap_ci(stats, 120, resamples=300, seed=8, groups=patients)
    assert metrics.bootstrap_ci(stats, 120, resamples=300, seed=7) == _image_bootstrap_as_before(stats, 120, 300, 7)
