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
