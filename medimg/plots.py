"""The notebook's figures (matplotlib): sample images, learning curves, confusion matrix, ROC curves and
predictions next to true labels. Each function returns the Figure; the notebook shows it."""
import math

import numpy as np


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _grid(n, cols):
    cols = max(1, min(cols, n))
    return math.ceil(n / cols), cols


def image_grid(items, cols=8, title=None):
    """``items``: ``[(path or array, caption), ...]``; a grid of images with their captions."""
    from PIL import Image

    plt = _plt()
    rows, cols = _grid(len(items), cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, caption) in zip(axes.flat, items):
        if isinstance(image, str):
            with Image.open(image) as im:
                image = np.asarray(im.convert("L") if im.mode not in ("RGB", "RGBA") else im.convert("RGB"))
        ax.imshow(image, cmap="gray" if np.ndim(image) == 2 else None)
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def learning_curves(history, best_epoch=None):
    """Loss (train and val) and val AUC/accuracy per epoch from metrics.json's ``history``."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    left.plot(epochs, [h["val_loss"] for h in history], "o-", label="val loss")
    left.set_xlabel("epoch")
    left.set_title("loss")
    right.plot(epochs, [h["val_auc"] for h in history], "o-", label="val AUC")
    right.plot(epochs, [h["val_acc"] for h in history], "o-", label="val accuracy")
    right.set_xlabel("epoch")
    right.set_title("validation")
    for ax in (left, right):
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_matrix(cm, classes, title="test confusion matrix"):
    """Counts with row-normalised shading (rows: true class, columns: predicted)."""
    plt = _plt()
    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.6 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def roc_curves(labels, probs, classes, title="test ROC"):
    """Binary: the positive class (index 1). More classes: one-vs-rest per class. AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    labels, probs = np.asarray(labels), np.asarray(probs)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    targets = [1] if len(classes) == 2 else range(len(classes))
    for c in targets:
        y = labels == c
        if y.all() or not y.any():
            continue  # a class absent from the test set has no ROC curve
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        ax.plot(fpr, tpr, label=f"{classes[c]} (AUC {roc_auc_score(y, probs[:, c]):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def metric_series(frame):
    """CloudWatch metric series from TrainingJobAnalytics' DataFrame (timestamp, metric_name, value)."""
    plt = _plt()
    names = sorted(frame["metric_name"].unique())
    rows, cols = _grid(len(names), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        part = frame[frame["metric_name"] == name].sort_values("timestamp")
        ax.axis("on")
        ax.plot(part["timestamp"], part["value"], "o-")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("seconds since start", fontsize=8)
    fig.tight_layout()
    return fig
