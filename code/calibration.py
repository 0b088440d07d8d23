"""What is fitted on validation after training, and applied identically by evaluation and the endpoint: the
temperature that calibrates the probabilities, and the operating threshold of a binary decision. Nothing here is
ever fitted on a test split. NumPy only.
"""
import numpy as np

# A val split that the model separates perfectly has no finite maximum-likelihood temperature (T -> 0): the bounds
# keep temperature scaling from more than quadrupling the logits or dividing them by more than 8.
TEMPERATURE_RANGE = (0.25, 8.0)


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _nll(logits, labels, temperature, multilabel):
    z = logits / temperature
    if multilabel:  # binary cross-entropy of sigmoid(z), stable: log(1 + e^-|z|) + max(z, 0) - y z
        return float((np.logaddexp(0, -np.abs(z)) + np.maximum(z, 0) - labels * z).mean())
    return float(-_log_softmax(z)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits, labels, multilabel=False, iterations=80):
    """Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): the T > 0 that
    minimises the negative log-likelihood of ``softmax(logits / T)`` on validation. Multi-label: one T per finding
    (each is its own binary problem). Golden-section search on log T within TEMPERATURE_RANGE.

    ``logits``: (N, K) float; ``labels``: (N,) int class indices, or (N, K) 0/1. Returns a float, or a list of K
    floats (multi-label)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if multilabel:
        return [_golden_section(logits[:, k:k + 1], labels[:, k:k + 1].astype(np.float64), True, iterations)
                if 0 < labels[:, k].sum() < len(labels) else 1.0 for k in range(logits.shape[1])]
    return _golden_section(logits, labels, False, iterations)


def _golden_section(logits, labels, multilabel, iterations):
    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(logits, labels, np.exp(a), multilabel), _nll(logits, labels, np.exp(b), multilabel)
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(logits, labels, np.exp(a), multilabel)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(logits, labels, np.exp(b), multilabel)
    return float(np.exp((lo + hi) / 2))


def choose_threshold(is_positive, score, target_sensitivity=0.0):
    """The operating threshold on a positive-class probability, chosen on validation: the one that maximises
    Youden's J = sensitivity + specificity - 1 (Youden 1950), or, with ``target_sensitivity`` > 0, the highest
    threshold whose sensitivity is at least that (screening: miss few). The threshold sits halfway between the
    chosen val score and the next lower one, so that it does not hang on one image's exact score. An image is
    called positive when its score is >= the threshold. Returns ``(threshold, rule)``; (0.5, "default: ...") when
    val lacks positives or negatives."""
    y = np.asarray(is_positive, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    if y.all() or not y.any():
        return 0.5, "default: the val split lacks positives or negatives"
    candidates = np.unique(s)[::-1]  # high to low: sensitivity grows along
    pos, neg = y.sum(), (~y).sum()
    tp = np.array([(s[y] >= t).sum() for t in candidates])
    fp = np.array([(s[~y] >= t).sum() for t in candidates])
    sensitivity, specificity = tp / pos, 1 - fp / neg
    if target_sensitivity > 0:
        best, rule = int(np.flatnonzero(sensitivity >= target_sensitivity)[0]), (
            f"target sensitivity {target_sensitivity:g} on val")
    else:
        best, rule = int(np.argmax(sensitivity + specificity - 1)), "Youden's J on val"
    below = candidates[best + 1] if best + 1 < len(candidates) else 0.0
    return float((candidates[best] + below) / 2), rule
