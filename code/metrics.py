"""Metrics as the MedMNIST evaluator defines them (AUC on probabilities, accuracy at argmax), plus what clinicians
read: sensitivity, specificity, the confusion matrix. NumPy only (checked against scikit-learn in the tests), so
no training process pays for importing scikit-learn.
"""
import numpy as np


def roc_auc(is_positive, score):
    """Area under the ROC curve by the rank (Mann-Whitney) formula, ties counted half, as scikit-learn's."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(score, dtype=np.float64), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each distinct score
    rank_sum = average_rank[inverse][is_positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def compute_metrics(y_true, y_prob, positive_class=1):
    """Accuracy at argmax and AUC on softmax probabilities (binary: the positive column; more classes:
    macro one-vs-rest), sensitivity, specificity and the confusion matrix (rows true, columns predicted).
    NumPy only (checked against scikit-learn in the tests), so no process pays for importing sklearn."""
    y_true = np.asarray(y_true).astype(int)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    k = y_prob.shape[1]
    y_pred = y_prob.argmax(axis=1)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    present = np.unique(y_true)
    if len(present) < 2:
        auc = float("nan")
    elif k == 2:
        auc = roc_auc(y_true == positive_class, y_prob[:, positive_class])
    else:  # mean of per-class one-vs-rest AUCs over the classes present, as MedMNIST's getAUC
        auc = float(np.mean([roc_auc(y_true == c, y_prob[:, c]) for c in present]))
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    negatives = cm.sum() - support
    fp = cm.sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / support
        specificity = (negatives - fp) / negatives
    out = {"accuracy": float((y_pred == y_true).mean()), "auc": auc, "n": int(len(y_true)),
           "confusion_matrix": cm.tolist()}
    if k == 2:
        out["sensitivity"] = float(recall[positive_class])
        out["specificity"] = float(specificity[positive_class])
    else:
        out["sensitivity"] = float(np.nanmean(recall[support > 0]))
        out["specificity"] = float(np.nanmean(specificity[support > 0]))
        out["per_class_recall"] = [float(v) for v in recall]
    out["balanced_accuracy"] = float(np.nanmean(recall[support > 0]))
    return out


def log_loss(y_true, y_prob, task="multiclass"):
    """Mean cross-entropy of probabilities: -log p[true class] (multiclass), or the binary cross-entropy averaged
    over findings and images (multilabel). Probabilities are clipped to [1e-12, 1 - 1e-12]."""
    y_prob = np.clip(np.asarray(y_prob, dtype=np.float64), 1e-12, 1 - 1e-12)
    if task == "multilabel":
        y = np.asarray(y_true, dtype=np.float64)
        return float(-(y * np.log(y_prob) + (1 - y) * np.log(1 - y_prob)).mean())
    y = np.asarray(y_true).astype(int)
    return float(-np.log(y_prob[np.arange(len(y)), y]).mean())


def multilabel_metrics(y_true, y_prob, names, thresholds=None):
    """Several findings per image, as the MedMNIST evaluator defines them for multi-label tasks: ``auc`` is the mean
    of the per-finding AUCs (over findings with positives and negatives), ``accuracy`` the mean of the per-finding
    accuracies at 0.5. Plus, per finding at its threshold (0.5 unless ``thresholds`` gives one): AUC, sensitivity,
    specificity, prevalence (the fraction of images with it) and the threshold; overall ``sensitivity`` and
    ``specificity`` are their means. ``y_true``: (N, K) 0/1; ``y_prob``: (N, K) sigmoid probabilities."""
    y = np.asarray(y_true, dtype=np.float64) > 0.5
    p = np.asarray(y_prob, dtype=np.float64)
    thresholds = [0.5] * p.shape[1] if thresholds is None else list(thresholds)
    per = {}
    for k, name in enumerate(names):
        pred = p[:, k] >= thresholds[k]
        pos, neg = y[:, k].sum(), (~y[:, k]).sum()
        per[name] = {"auc": roc_auc(y[:, k], p[:, k]), "threshold": float(thresholds[k]),
                     "sensitivity": float((pred & y[:, k]).sum() / pos) if pos else float("nan"),
                     "specificity": float((~pred & ~y[:, k]).sum() / neg) if neg else float("nan"),
                     "prevalence": float(y[:, k].mean()), "n_positive": int(pos)}
    aucs = [v["auc"] for v in per.values() if np.isfinite(v["auc"])]
    with np.errstate(invalid="ignore"):
        return {"accuracy": float(((p >= 0.5) == y).mean(axis=0).mean()),
                "auc": float(np.mean(aucs)) if aucs else float("nan"),
                "sensitivity": float(np.nanmean([v["sensitivity"] for v in per.values()])),
                "specificity": float(np.nanmean([v["specificity"] for v in per.values()])),
                "n": int(len(y)), "per_finding": per}


def quadratic_weighted_kappa(y_true, y_pred, num_classes):
    """Cohen's kappa with quadratic weights (Cohen 1968; scikit-learn's cohen_kappa_score(weights="quadratic")):
    agreement between ordered grades beyond chance, 1 for perfect, 0 for chance. NaN when it is undefined."""
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    k = num_classes
    observed = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.float64)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / max(observed.sum(), 1)
    weights = (np.subtract.outer(np.arange(k), np.arange(k)) ** 2) / max((k - 1) ** 2, 1)
    denominator = (weights * expected).sum()
    return float(1 - (weights * observed).sum() / denominator) if denominator > 0 else float("nan")


def ordinal_metrics(y_true, y_prob):
    """For ordered grades: the quadratic weighted kappa and the mean absolute grade error of the argmax grade."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_prob).argmax(axis=1)
    return {"kappa": quadratic_weighted_kappa(y_true, y_pred, np.asarray(y_prob).shape[1]),
            "mae": float(np.abs(y_pred - y_true).mean())}


def evaluate_predictions(y_true, y_prob, *, task, classes, ordinal=False, positive=None):
    """Every metric of a split from its labels and probabilities (the one function train.py's evaluation uses):
    multiclass (``compute_metrics``; binary: of the class at index ``positive``, 1 when None), multilabel
    (``multilabel_metrics``), plus the ordinal ones when ``ordinal``, and ``loss`` (``log_loss``)."""
    if task == "multilabel":
        out = multilabel_metrics(y_true, y_prob, classes)
    else:
        binary = len(classes) == 2
        out = compute_metrics(y_true, y_prob, positive_class=(1 if positive is None else positive) if binary else None)
        if ordinal:
            out.update(ordinal_metrics(y_true, y_prob))
    out["loss"] = log_loss(y_true, y_prob, task)
    return out


def expected_calibration_error(y_true, y_prob, task="multiclass", bins=15):
    """Expected calibration error with ``bins`` equal-width bins (Guo et al., ICML 2017): the mean over bins,
    weighted by their share of the images, of |accuracy - confidence|. Multiclass: the top-label confidence against
    whether the argmax is right; multi-label: each finding's probability against whether it is present, averaged
    over findings."""
    p = np.asarray(y_prob, dtype=np.float64)
    if task == "multilabel":
        y = np.asarray(y_true, dtype=np.float64)
        return float(np.mean([_ece(p[:, k], y[:, k], bins) for k in range(p.shape[1])]))
    y = np.asarray(y_true).astype(int)
    return _ece(p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64), bins)


def _ece(confidence, correct, bins):
    # bin m (1..M) holds confidences in ((m-1)/M, m/M], as Guo et al. define it; a confidence of 0 joins the first
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def binary_at_threshold(y_true, p_positive, threshold, positive_class=1):
    """A binary decision at ``threshold`` on the probability of the class at index ``positive_class`` (that class
    when p >= threshold, else the other): its sensitivity, specificity, PPV, NPV, accuracy, prevalence, and the
    confusion matrix in class order, as compute_metrics' (rows the true class, columns the answer; with the positive
    class at index 1 that is [[TN, FP], [FN, TP]])."""
    labels = np.asarray(y_true).astype(int)
    y = labels == positive_class
    pred = np.asarray(p_positive, dtype=np.float64) >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    answered = np.where(pred, positive_class, 1 - positive_class)
    matrix = np.bincount(np.where(y, positive_class, 1 - positive_class) * 2 + answered, minlength=4).reshape(2, 2)

    def ratio(a, b):
        return a / b if b else float("nan")

    return {"threshold": float(threshold), "sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn), "accuracy": ratio(tp + tn, len(y)),
            "prevalence": ratio(tp + fn, len(y)), "confusion_matrix": matrix.tolist()}


def bootstrap_ci(statistics, n, resamples=1000, seed=0, level=0.95, groups=None):
    """Percentile bootstrap confidence intervals (Efron & Tibshirani 1993): ``statistics(indices) -> {name: value}``
    is recomputed on ``resamples`` resamples (seeded, so the intervals are reproducible). Returns
    ``{name: [low, high]}``; resamples where a value is undefined (e.g. an AUC of a resample without positives) are
    left out of that value's interval.

    Without ``groups`` each resample draws the ``n`` images with replacement. With ``groups`` (one id per image, e.g.
    the patient) it is the cluster bootstrap (Davison & Hinkley 1997, section 3.8; Field & Welsh 2007): the groups
    are drawn with replacement and every image of a drawn group is taken, so that images of one patient, which are
    not independent cases, move together and the intervals are not too narrow."""
    rng = np.random.default_rng(seed)
    draw = (lambda: rng.integers(0, n, n)) if groups is None else _cluster_sampler(groups, rng)
    draws = {}
    for _ in range(resamples):
        for name, value in statistics(draw()).items():
            if value is not None and np.isfinite(value):
                draws.setdefault(name, []).append(value)
    tail = (1 - level) / 2 * 100
    return {name: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] for name, v in draws.items()}


def _cluster_sampler(groups, rng):
    """A function drawing image indices by whole groups: as many groups as there are, with replacement."""
    _, code = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    order = np.argsort(code, kind="stable")  # image indices, group after group
    sizes = np.bincount(code)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def draw():
        chosen = rng.integers(0, len(sizes), len(sizes))
        lengths = sizes[chosen]
        offsets = np.repeat(starts[chosen] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return order[offsets + np.arange(lengths.sum())]

    return draw
