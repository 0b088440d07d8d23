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
