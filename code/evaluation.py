"""Evaluation: a model's predictions on a whole split (``SplitPredictor``, for each epoch's validation and for the
kept model), the decisions fitted on validation (temperature, operating thresholds) and the report of the kept
model on val and test (metrics.json): calibrated probabilities, ECE, the operating point beside the argmax figures,
bootstrap confidence intervals, and every image's prediction. Test data is only ever evaluated here, never fitted.
"""
import dataclasses
import logging

import numpy as np
import torch

import calibration
import distributed
import hyperparameters
import metrics
import prediction
from errors import DataError
from loaders import check_bad_fraction

CI_METRICS = ("accuracy", "auc", "sensitivity", "specificity")
logger = logging.getLogger("train")


class SplitPredictor:
    """(labels, logits, indices) of a whole split, by the endpoint's forward pass (prediction.logits: fp32, the flip
    TTA of ``hyperparameters.flip_tta``): each rank predicts a shard, and every rank gets all of them back in the
    split's order (``indices`` index ``split.names``). A streamed split drops its unreadable images here; above
    max-bad-fraction, or when none is left, they end the run."""

    def __init__(self, args, data, plan, device, dist):
        self.mean, self.std, self.num_classes = data.mean, data.std, len(data.classes)
        self.tta, self.memory_format = hyperparameters.flip_tta(args), hyperparameters.memory_format(args)
        self.batch_size, self.max_bad_fraction = max(plan.batch_size, 256), args.max_bad_fraction
        self.device, self.dist = device, dist

    @torch.no_grad()
    def __call__(self, model, split, name):
        model.eval()
        indices = list(range(self.dist.rank, len(split), self.dist.world_size))
        all_idx, all_out = [], []
        for x, _, idx in split.batches(indices, self.batch_size, self.device):
            out = prediction.logits(model, x, mean=self.mean, std=self.std, tta=self.tta,
                                    memory_format=self.memory_format)
            all_idx.append(idx.numpy())
            all_out.append(out.cpu().numpy())
        idx = np.concatenate(all_idx) if all_idx else np.zeros(0, dtype=np.int64)
        out = np.concatenate(all_out) if all_out else np.zeros((0, self.num_classes), dtype=np.float32)
        idx, out = distributed.gather_predictions(idx, out, self.dist)
        if len(idx) < len(split):  # streamed: the unreadable images were found and dropped while reading
            check_bad_fraction(len(split) - len(idx), len(split), self.max_bad_fraction, name)
            if not len(idx):
                raise DataError(f"none of the {len(split)} images in {name} could be read; check the files")
        return split.labels.cpu().numpy()[idx], out, idx


@dataclasses.dataclass
class Decisions:
    """Fitted on validation: the temperature (a float, or one per finding), the operating threshold(s) and the rule
    that chose them; ``threshold`` is on the probability of a binary task's positive class (``positive``: its index,
    channels.choose_positive_class), ``thresholds`` per finding."""

    temperature: object = 1.0
    threshold: float = None
    thresholds: list = None
    rule: str = "argmax"
    positive: int = None


def fit_decisions(labels, logits, *, task, classes, calibrate=True, target_sensitivity=0.0, positive=1):
    """Temperature (when ``calibrate``) and operating threshold(s) from the val split's labels and logits; a binary
    task's threshold is on p(class ``positive``)."""
    multilabel = task == "multilabel"
    temperature = calibration.fit_temperature(logits, labels, multilabel) if calibrate else (
        [1.0] * len(classes) if multilabel else 1.0)
    at_bound = [name for name, t in zip(classes if multilabel else ["the model"],
                                          temperature if multilabel else [temperature])
                if min(abs(np.log(t / b)) for b in calibration.TEMPERATURE_RANGE) < 1e-3]
    if calibrate and at_bound:
        logger.warning("temperature scaling ended at a bound of %s for %s (%d val images): the val split is too "
                       "small or too easily separated for a reliable calibration; more val images would help",
                       list(calibration.TEMPERATURE_RANGE), ", ".join(map(str, at_bound)), len(logits))
    prob = probabilities(logits, task, temperature)
    if multilabel:
        chosen = [calibration.choose_threshold(labels[:, k] > 0.5, prob[:, k], target_sensitivity)
                  for k in range(len(classes))]
        return Decisions(temperature, thresholds=[t for t, _ in chosen], rule=chosen[0][1] if len(
            {r for _, r in chosen}) == 1 else "per finding: " + "; ".join(r for _, r in chosen))
    if len(classes) == 2:
        positive = 1 if positive is None else int(positive)
        threshold, rule = calibration.choose_threshold(labels == positive, prob[:, positive], target_sensitivity)
        return Decisions(temperature, threshold=threshold, rule=rule, positive=positive)
    return Decisions(temperature)


def probabilities(logits, task, temperature):
    """Calibrated probabilities from logits (N, K), by the endpoint's own function (prediction.activate); from a
    K-fold ensemble's member logits (M, N, K), the mean of the members' calibrated probabilities
    (prediction.mean_probabilities, as the endpoint averages them)."""
    logits = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    if logits.ndim == 3:
        return prediction.mean_probabilities(logits, task == "multilabel", temperature).numpy()
    return prediction.activate(logits, task == "multilabel", temperature).numpy()


def report(labels, logits, names, decisions, *, task, classes, ordinal=False, resamples=0, seed=0, groups=None):
    """Every figure of one split for metrics.json, and its per-image predictions (``names``: the images). With
    ``groups`` (each image's patient) the intervals resample patients (``ci95_unit`` "patient", ``n_groups``), else
    images."""
    prob = probabilities(logits, task, decisions.temperature)
    raw = probabilities(logits, task, 1.0)
    if task == "multilabel":
        out = metrics.multilabel_metrics(labels, prob, list(classes), decisions.thresholds)
    else:
        out = metrics.evaluate_predictions(labels, prob, task=task, classes=list(classes), ordinal=ordinal,
                                           positive=decisions.positive)
    out["loss"] = metrics.log_loss(labels, prob, task)
    out["ece"] = metrics.expected_calibration_error(labels, prob, task)
    out["ece_uncalibrated"] = metrics.expected_calibration_error(labels, raw, task)
    if decisions.threshold is not None:
        k = _positive(decisions)
        out["operating_point"] = dict(metrics.binary_at_threshold(labels, prob[:, k], decisions.threshold, k),
                                      rule=decisions.rule, positive_class=classes[k])
    if resamples:
        out["ci95"] = confidence_intervals(labels, prob, decisions, task=task, classes=classes,
                                           resamples=resamples, seed=seed, groups=groups)
        out["ci95_unit"] = "image" if groups is None else "patient"
        if groups is not None:
            out["n_groups"] = len(set(groups))
    predictions = {"images": list(names), "labels": np.asarray(labels).tolist(),
                   "probabilities": np.round(prob, 6).tolist()}
    return out, predictions


def confidence_intervals(labels, prob, decisions, *, task, classes, resamples, seed, groups=None):
    """Bootstrap 95% intervals (seeded) of accuracy, AUC, sensitivity and specificity; for a binary task the
    accuracy, sensitivity and specificity at the operating threshold too (``op_accuracy``, ``op_sensitivity``,
    ``op_specificity``: the decisions the endpoint makes, which the Model Registry's statistics report). With
    ``groups`` (patient ids) whole patients are resampled (metrics.bootstrap_ci's cluster bootstrap)."""
    labels = np.asarray(labels)

    def statistics(idx):
        y, p = labels[idx], prob[idx]
        if task == "multilabel":
            m = metrics.multilabel_metrics(y, p, list(classes), decisions.thresholds)
        else:
            m = metrics.compute_metrics(y, p, positive_class=_positive(decisions) if len(classes) == 2 else None)
        out = {k: m[k] for k in CI_METRICS}
        if decisions.threshold is not None:
            op = metrics.binary_at_threshold(y, p[:, _positive(decisions)], decisions.threshold, _positive(decisions))
            out.update(op_accuracy=op["accuracy"], op_sensitivity=op["sensitivity"], op_specificity=op["specificity"])
        return out

    return metrics.bootstrap_ci(statistics, len(labels), resamples=resamples, seed=seed, groups=groups)


def _positive(decisions):
    """The positive class's index of a binary task's decisions (1 for decisions made before there was a choice)."""
    return 1 if decisions.positive is None else decisions.positive
