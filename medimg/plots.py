"""The notebook's figures (matplotlib). Each function returns the Figure; the notebook shows it.

Sample images (at their own contrast), learning curves with the learning rate, the confusion matrix, ROC curves
with the operating point, a reliability (calibration) curve, the most confident mistakes, Grad-CAM heat maps, the
endpoint's answers, per-finding ROC curves, and CloudWatch metric series (only when there are enough points).
"""
import math
import os

import numpy as np

from medimg import container

PANEL = 3.6  # inches: the side of one square panel, so that every figure is read at the same scale
MAX_PIXELS = 64_000_000  # train.py's max-image-pixels default: larger files are refused, not decoded


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _grid(n, cols):
    cols = max(1, min(cols, n))
    return math.ceil(n / cols), cols


def _pixels(image, page=0):
    """A path or an array -> (array to show, its (width, height)). A file is shown as the model is given it
    (code/images.py's ``display``: upright by its EXIF orientation, the ``page`` of a multi-page file, 16-bit and
    float scaled by their own range, NaN black), at its own size, grey when its pixels are grey; 8-bit is shown as
    it is (no contrast stretching)."""
    if isinstance(image, (str, os.PathLike)):
        arr = container.load("images").display(os.fspath(image), MAX_PIXELS, page)
    else:
        arr = np.asarray(image)
    return arr, (arr.shape[1], arr.shape[0])


def _show(ax, arr):
    if arr.ndim == 2 or arr.shape[-1] == 1:
        ax.imshow(arr.squeeze(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(arr, interpolation="nearest")
    ax.axis("off")


def image_grid(items, cols=8, title=None, page=0):
    """``items``: ``[(path or array, caption), ...]``: a grid of images with their captions, at their own contrast
    (grey 0 is black and 255 white), files as the model is given them (``page``: the page hyperparameter); the
    title gives the images' size."""
    plt = _plt()
    rows, cols = _grid(len(items), cols)
    caption_lines = max((str(c).count("\n") + 1 for _, c in items), default=1)
    width = 1.7 if caption_lines < 3 else 2.3
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, (1.6 + 0.18 * caption_lines) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    sizes = set()
    for ax, (image, caption) in zip(axes.flat, items):
        arr, size = _pixels(image, page)
        sizes.add(size)
        _show(ax, arr)
        ax.set_title(caption, fontsize=8)
    size_text = ", ".join(f"{w}x{h} px" for w, h in sorted(sizes))
    fig.suptitle(f"{title} ({size_text})" if title else size_text, fontsize=10)
    fig.tight_layout()
    return fig


def learning_curves(history, best_epoch=None):
    """Per epoch: train and val loss, val AUC and accuracy, and the learning rate; the kept epoch is dashed, and a
    note says when it is the last one (more epochs might help)."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (loss, score, lr) = plt.subplots(1, 3, figsize=(3 * PANEL, 0.85 * PANEL))
    loss.plot(epochs, [h["train_loss"] for h in history], "o-", ms=3, label="train")
    loss.plot(epochs, [h["val_loss"] for h in history], "o-", ms=3, label="val")
    loss.set_ylabel("loss (cross-entropy)")
    score.plot(epochs, [h["val_auc"] for h in history], "o-", ms=3, label="val AUC")
    score.plot(epochs, [h["val_acc"] for h in history], "o-", ms=3, label="val accuracy")
    score.set_ylabel("score")
    lr.plot(epochs, [h["lr"] for h in history], "-", color="grey")
    lr.set_ylabel("learning rate (end of epoch)")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss, score, lr):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept: epoch {best_epoch}")
    loss.legend(fontsize=8)
    score.legend(fontsize=8)
    if best_epoch and epochs and best_epoch == epochs[-1]:
        fig.suptitle("the kept epoch is the last one: validation was still improving, more epochs may help",
                     fontsize=9, color="darkred")
    fig.tight_layout()
    return fig


def confusion_matrix(cm, classes, title="test confusion matrix"):
    """Counts, shaded by the fraction of each true class (rows: true, columns: predicted)."""
    plt = _plt()
    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = max(PANEL, 0.9 * len(classes) + 1.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    return fig


def roc_curves(labels, probs, classes, title="test ROC", operating_point=None, positive=None):
    """Binary: the positive class (index ``positive``; by default the operating point's ``positive_class``, else
    index 1), with the operating point (sensitivity, 1 - specificity) marked. More classes: one-vs-rest per class.
    Multi-label (``labels`` (N, K)): one curve per finding. AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    labels, probs = np.asarray(labels), np.asarray(probs)
    fig, ax = plt.subplots(figsize=(PANEL + 0.6, PANEL + 0.6))
    multilabel = labels.ndim == 2
    if positive is None:
        named = (operating_point or {}).get("positive_class")
        positive = list(classes).index(named) if named in list(classes) else 1
    targets = range(len(classes)) if multilabel or len(classes) > 2 else [positive]
    for c in targets:
        y = labels[:, c] > 0.5 if multilabel else labels == c
        if y.all() or not y.any():
            continue  # a class absent from the split has no ROC curve
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        ax.plot(fpr, tpr, label=f"{classes[c]} (AUC {roc_auc_score(y, probs[:, c]):.3f})")
    if operating_point:
        ax.plot(1 - operating_point["specificity"], operating_point["sensitivity"], "o", color="darkred", ms=8,
                label=f"operating point p >= {operating_point['threshold']:.2f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def reliability_curve(labels, probs, title="test calibration", bins=10, ece=None):
    """Mean predicted confidence against the observed accuracy per bin (top-label; per finding for multi-label,
    pooled), with the diagonal of perfect calibration and the bins' image counts."""
    plt = _plt()
    labels, probs = np.asarray(labels), np.asarray(probs)
    if labels.ndim == 2:
        confidence, correct = probs.ravel(), labels.ravel().astype(float)
    else:
        confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    xs, ys, ns = [], [], []
    for b in range(bins):
        inside = which == b
        if inside.any():
            xs.append(confidence[inside].mean())
            ys.append(correct[inside].mean())
            ns.append(int(inside.sum()))
    fig, ax = plt.subplots(figsize=(PANEL + 0.6, PANEL + 0.6))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    ax.plot(xs, ys, "o-", label="model")
    for x, y, n in zip(xs, ys, ns):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color="grey")
    ax.set_xlabel("predicted probability (confidence)")
    ax.set_ylabel("observed frequency (accuracy)")
    ax.set_title(title + (f", ECE {ece:.3f}" if ece is not None else ""))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def mistakes(items, title="most confident mistakes", cols=6, page=0):
    """``items``: ``[(path, caption), ...]`` of wrongly answered images (the caption gives the true and predicted
    labels and probabilities)."""
    return image_grid(items, cols=cols, title=title, page=page)


def heatmap_grid(results, captions, cols=4, title="Grad-CAM: where the model looked"):
    """Each image beside its Grad-CAM map overlaid (``results`` from medimg.heatmaps.heatmaps)."""
    plt = _plt()
    rows, cols = _grid(len(results), cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(1.8 * 2 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (result, caption) in enumerate(zip(results, captions)):
        r, c = divmod(i, cols)
        _show(axes[r, 2 * c], result["image"])
        axes[r, 2 * c].set_title(caption, fontsize=7)
        _show(axes[r, 2 * c + 1], result["image"])
        axes[r, 2 * c + 1].imshow(result["map"], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[r, 2 * c + 1].set_title("Grad-CAM", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def metric_series(frame, min_points=5):
    """CloudWatch metric series (TrainingJobAnalytics' frame: timestamp, metric_name, value) for the metrics with at
    least ``min_points`` points; None when none has (a short job: read the learning curves instead)."""
    plt = _plt()
    counts = frame.groupby("metric_name")["value"].count()
    names = sorted(n for n, k in counts.items() if k >= min_points and n != "epoch")
    if not names:
        return None
    rows, cols = _grid(len(names), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        part = frame[frame["metric_name"] == name].sort_values("timestamp")
        ax.axis("on")
        ax.plot(part["timestamp"], part["value"], "o-", ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("seconds since start", fontsize=8)
    fig.tight_layout()
    return fig
