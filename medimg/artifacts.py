"""A training job's artefacts on the client: download, extract safely, read, and predict with the model.

    model.tar.gz   model.pth, model_config.json, label_dict.json, code/ (inference.py and what it imports)
    output.tar.gz  metrics.json (val/test metrics, per-epoch history, confusion matrices)

``safe_extract`` refuses, rather than skips, anything that is not a plain file or folder inside the target:
absolute names, ``..`` that climbs out, symbolic and hard links, devices. A tarball from S3 is input like any
other.
"""
import base64
import json
import os
import stat
import tarfile

import numpy as np

from medimg.data_folders import list_images
from medimg.progress import progress
from medimg.serving import ModelServer
from medimg.show_metrics import SPLIT_ORDER, interval_unit

MODEL_TAR, OUTPUT_TAR = "model.tar.gz", "output.tar.gz"


class UnsafeArchive(Exception):
    pass


# ==================================================================================================
# Safe extraction
# ==================================================================================================
def check_member(member, root):
    """Raise UnsafeArchive unless ``member`` is a plain file or folder that lands inside ``root``."""
    name = member.name
    if not name or name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"refusing {name!r}: absolute path")
    target = os.path.realpath(os.path.join(root, name))
    if target != root and not target.startswith(root + os.sep):
        raise UnsafeArchive(f"refusing {name!r}: it would be written outside {root}")
    if member.issym() or member.islnk():
        raise UnsafeArchive(f"refusing {name!r}: {'symbolic' if member.issym() else 'hard'} link to "
                            f"{member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchive(f"refusing {name!r}: not a regular file or folder (device, fifo or other)")


def safe_extract(tar_path, dest):
    """Extract ``tar_path`` into ``dest`` after checking every member; nothing is written if any is unsafe."""
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    with tarfile.open(tar_path, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            check_member(member, root)
        for member in members:
            member.mode = (member.mode | stat.S_IRUSR | stat.S_IWUSR) & 0o777  # no setuid, always readable
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the standard library checks once more
                tar.extract(member, root, filter="data")
            else:
                tar.extract(member, root)
    return dest


# ==================================================================================================
# Download
# ==================================================================================================
def download_job_artifacts(s3, model_data_uri, dest):
    """Download a job's model.tar.gz and the output.tar.gz beside it (with their progress, medimg.progress), extract
    them into ``dest/model`` and ``dest/output``. Returns ``{"model": dir, "output": dir or None}`` (output is None
    when the job wrote none)."""
    if not model_data_uri.startswith("s3://") or not model_data_uri.endswith("/" + MODEL_TAR):
        raise ValueError(f"expected s3://.../{MODEL_TAR}, got {model_data_uri!r}")
    bucket, key = model_data_uri[5:].split("/", 1)
    os.makedirs(dest, exist_ok=True)
    out = {}
    for name, tar_name in (("model", MODEL_TAR), ("output", OUTPUT_TAR)):
        tar_key = key[: -len(MODEL_TAR)] + tar_name
        local = os.path.join(dest, tar_name)
        try:
            size = s3.head_object(Bucket=bucket, Key=tar_key)["ContentLength"]
        except Exception as exc:  # noqa: BLE001
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if name == "output" and code in ("404", "NoSuchKey"):
                out[name] = None
                continue
            raise
        with progress(total=size, desc=tar_name, unit="B") as bar:
            s3.download_file(bucket, tar_key, local, Callback=bar.update)
        out[name] = safe_extract(local, os.path.join(dest, name))
    return out


# ==================================================================================================
# Metrics
# ==================================================================================================
METRIC_COLUMNS = ("n", "accuracy", "auc", "sensitivity", "specificity", "balanced_accuracy", "loss")
SHOWN = (("accuracy", "accuracy"), ("AUC", "auc"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
         ("ECE", "ece"), ("kappa", "kappa"), ("grade MAE", "mae"))


def load_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json"), encoding="utf-8") as fh:
        return json.load(fh)


def metrics_rows(metrics):
    """``[{"split": "val", "n": ..., "accuracy": ..., ...}, ...]`` for the splits metrics.json has."""
    rows = []
    for split in ("val", "test"):
        if split in metrics:
            rows.append({"split": split, **{c: metrics[split].get(c) for c in METRIC_COLUMNS}})
    return rows


def _cell(value, interval=None, digits=3):
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text} ({interval[0]:.{digits}f}-{interval[1]:.{digits}f})" if interval else text


def metrics_table(metrics, digits=3):
    """The headline figures per split, as text with 3 decimals: test values carry their bootstrap 95% interval
    (``metrics.json``'s ci95); ``accuracy`` is at argmax (MedMNIST's ACC), sensitivity and specificity too (the
    operating point is in ``clinical_table``). A pandas DataFrame, one row per split."""
    import pandas as pd

    rows = []
    for split in ("val", "test"):
        if split not in metrics:
            continue
        m, ci = metrics[split], metrics[split].get("ci95", {})
        row = {"split": split if split == "test" else "val (chose the epoch: optimistic)", "images": m["n"]}
        row.update({label: _cell(m.get(key), ci.get(key), digits) for label, key in SHOWN if key in m})
        rows.append(row)
    return pd.DataFrame(rows).set_index("split")


def intervals_note(metrics, split="test"):
    """What ``split``'s 95% intervals resampled, in a sentence ("95% intervals: bootstrap resampling 57 patients
    (each patient's images together)"); None when it has none."""
    unit = interval_unit(metrics.get(split) or {})
    return f"95% intervals ({split}): bootstrap resampling {unit}" if unit else None


def skipped_table(metrics, first=5):
    """The images each split could not use (metrics.json's ``skipped``): per split the count, the reasons and the
    first ``first`` names (every name is in metrics.json, or in the file it names when there are many). A pandas
    DataFrame, one row per split; None for a metrics.json written before train.py recorded them."""
    import pandas as pd

    skipped = metrics.get("skipped")
    if skipped is None:
        return None
    rows = []
    for split, entry in sorted(skipped.items(), key=lambda kv: SPLIT_ORDER.get(kv[0], 9)):
        names = entry.get("images") or entry.get("first_images") or []
        more = entry["count"] - len(names[:first])
        rows.append({"split": split, "skipped": entry["count"],
                     "reasons": ", ".join(f"{why}: {n}" for why, n in entry.get("reasons", {}).items()) or "-",
                     "images": ", ".join(names[:first]) + (f" and {more} more" if more > 0 else "") or "-",
                     "every name": entry.get("images_file", "metrics.json" if entry["count"] else "-")})
    return pd.DataFrame(rows).set_index("split")


def positive_index(metrics):
    """The index of a binary single-label model's positive class (metrics.json's ``positive_class``; 1 in files
    written before there was a choice), else None."""
    classes = list(metrics.get("classes") or [])
    if metrics.get("task") == "multilabel" or len(classes) != 2:
        return None
    name = metrics.get("positive_class")
    return classes.index(name) if name in classes else 1


def _binary_rows(m, split, positive):
    """Sensitivity, specificity, PPV, NPV, prevalence (of the class at index ``positive``) at argmax and at the
    operating point, for one split."""
    cm, negative = m["confusion_matrix"], 1 - positive  # rows the true class, columns the answer, in class order
    tp, fn, fp, tn = cm[positive][positive], cm[positive][negative], cm[negative][positive], cm[negative][negative]
    ratio = lambda a, b: a / b if b else None  # noqa: E731
    argmax = {"decision": "argmax (p >= 0.5)", "sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
              "PPV": ratio(tp, tp + fp), "NPV": ratio(tn, tn + fn), "prevalence": ratio(tp + fn, tn + fp + fn + tp)}
    rows = [dict(split=split, **argmax)]
    op, ci = m.get("operating_point"), m.get("ci95", {})
    if op:
        rows.append({"split": split, "decision": f"operating point p >= {op['threshold']:.3f} ({op['rule']})",
                     "sensitivity": op["sensitivity"], "specificity": op["specificity"], "PPV": op["ppv"],
                     "NPV": op["npv"], "prevalence": op["prevalence"],
                     "_ci": {"sensitivity": ci.get("op_sensitivity"), "specificity": ci.get("op_specificity")}})
    rows[0]["_ci"] = {"sensitivity": ci.get("sensitivity"), "specificity": ci.get("specificity")}
    return rows


def clinical_table(metrics, digits=3):
    """What clinicians read, for a binary model: sensitivity, specificity, PPV, NPV and prevalence of the positive
    class, at argmax and at the operating point chosen on val, for val and test (test with 95% intervals). None
    for models of more classes or findings. ``attrs``: ``positive_class`` and ``positive_class_from`` (why)."""
    import pandas as pd

    classes, positive = metrics["classes"], positive_index(metrics)
    if positive is None:
        return None
    rows = []
    for split in ("val", "test"):
        if split in metrics:
            for row in _binary_rows(metrics[split], split, positive):
                ci = row.pop("_ci")
                rows.append({k: (_cell(v, ci.get(k), digits) if isinstance(v, float) or v is None else v)
                             for k, v in row.items()})
    table = pd.DataFrame(rows).set_index(["split", "decision"])
    table.attrs["positive_class"] = classes[positive]
    table.attrs["positive_class_from"] = metrics.get("positive_class_from") or "the second class (a metrics.json " \
                                                                               "written before positive-class)"
    return table


def per_finding_table(metrics, split="test", digits=3):
    """Multi-label models: per finding (in the model's output order) its prevalence, AUC, and sensitivity and
    specificity at its threshold."""
    import pandas as pd

    per = metrics[split]["per_finding"]  # metrics.json's keys are sorted
    per = {name: per[name] for name in [*metrics.get("classes", []), *sorted(per)] if name in per}
    return pd.DataFrame([{"finding": name, "prevalence": _cell(v["prevalence"], None, digits),
                          "positives": v["n_positive"], "AUC": _cell(v["auc"], None, digits),
                          "threshold": _cell(v["threshold"], None, digits),
                          "sensitivity": _cell(v["sensitivity"], None, digits),
                          "specificity": _cell(v["specificity"], None, digits)} for name, v in per.items()]
                        ).set_index("finding")


def decided(metrics, probabilities):
    """The class indices the model answers for rows of (calibrated) probabilities: the operating threshold on the
    positive class's probability of a binary model (that class at or above it, else the other), else the argmax."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    threshold = (metrics.get("decisions") or {}).get("threshold")
    positive = positive_index(metrics)
    if threshold is not None and positive is not None:
        return np.where(probabilities[:, positive] >= threshold, positive, 1 - positive)
    return probabilities.argmax(axis=1)


def confident_mistakes(metrics, split="test", limit=12):
    """The images the model got wrong with the most confidence: ``[(image, true, answered, p(answered)), ...]``,
    most confident first (single-label models; images are paths relative to the split's channel)."""
    saved = metrics.get(f"{split}_predictions")
    if not saved or metrics.get("task") == "multilabel":
        return []
    labels, prob = np.asarray(saved["labels"]), np.asarray(saved["probabilities"])
    answered = decided(metrics, prob)
    wrong = np.flatnonzero(answered != labels)
    order = wrong[np.argsort(-prob[wrong, answered[wrong]])][:limit]
    classes = metrics["classes"]
    return [(saved["images"][i], classes[labels[i]], classes[answered[i]], float(prob[i, answered[i]]))
            for i in order]


def examples(metrics, split="test", per_class=2, mistakes=2, seed=0):
    """Images of ``split`` to show or send to an endpoint: up to ``per_class`` right ones of each class and up to
    ``mistakes`` wrong ones (when there are any): ``[(image, true class), ...]``."""
    saved = metrics.get(f"{split}_predictions")
    if not saved:
        return []
    rng = np.random.default_rng(seed)
    labels = np.asarray(saved["labels"])
    if labels.ndim == 2:  # multi-label: a few images of each finding and some with none
        picks = [rng.choice(np.flatnonzero(labels[:, k]), min(per_class, int(labels[:, k].sum())), replace=False)
                 for k in range(labels.shape[1]) if labels[:, k].any()]
        chosen = sorted({int(i) for part in picks for i in part})
        return [(saved["images"][i], None) for i in chosen]
    answered = decided(metrics, saved["probabilities"])
    chosen = []
    for c in range(len(metrics["classes"])):
        right = np.flatnonzero((labels == c) & (answered == c))
        chosen += rng.choice(right, min(per_class, len(right)), replace=False).tolist()
    wrong = np.flatnonzero(answered != labels)
    chosen += rng.choice(wrong, min(mistakes, len(wrong)), replace=False).tolist()
    return [(saved["images"][i], metrics["classes"][labels[i]]) for i in sorted(set(chosen))]


# ==================================================================================================
# Predictions with the trained model (what the endpoint will answer)
# ==================================================================================================
class LocalModel:
    """The model of an extracted model.tar.gz, answering requests through its own ``code/inference.py`` in a
    separate process (``medimg.serving.ModelServer``), exactly as the endpoint will."""

    def __init__(self, model_dir):
        self.model_dir = model_dir
        self.server = ModelServer(model_dir)  # first: it says what is missing when there is no code/inference.py
        with open(os.path.join(model_dir, "model_config.json"), encoding="utf-8") as fh:
            self.classes = list(json.load(fh)["classes"])

    def invoke(self, body, content_type, accept="application/json"):
        """One request, as the endpoint gets it: returns the parsed JSON response; raises RuntimeError with the
        status and message for an error answer."""
        status, _, out = self.server.invoke(body, content_type, accept)
        if status != 200:
            raise RuntimeError(f"the model answered {status}: {out.decode('utf-8', 'replace')}")
        return json.loads(out)

    def predict_files(self, paths, batch_size=32):
        """Probabilities (N, K) for image files, sent in batches as {"instances": [{"b64": ...}, ...]}."""
        probs = []
        for start in range(0, len(paths), batch_size):
            instances = []
            for path in paths[start:start + batch_size]:
                with open(path, "rb") as fh:
                    instances.append({"b64": base64.b64encode(fh.read()).decode("ascii")})
            out = self.invoke(json.dumps({"instances": instances}).encode(), "application/json")
            probs += [[p["probabilities"][c] for c in self.classes] for p in out["predictions"]]
        return np.asarray(probs, dtype=np.float64).reshape(len(paths), len(self.classes))

    def close(self):
        self.server.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_predictions(metrics, model_dir=None, test_dir=None):
    """``(labels, probabilities, classes)`` for the test split, for ROC curves (labels are (N, K) 0/1 for a
    multi-label model).

    From metrics.json's ``test_predictions`` (``{"labels": [...], "probabilities": [[...], ...]}``) when
    train.py wrote them; else by running the trained model over the local test channel ``test_dir``.
    Returns None when neither is available.
    """
    classes = list(metrics.get("classes") or [])
    saved = metrics.get("test_predictions")
    if saved:
        return np.asarray(saved["labels"], dtype=int), np.asarray(saved["probabilities"], dtype=np.float64), classes
    if not (model_dir and test_dir and os.path.isdir(test_dir)):
        return None
    items = list_images(test_dir)
    if not items:
        return None
    with LocalModel(model_dir) as model:
        classes = model.classes
        known = [(p, c) for p, c in items if c in classes]
        probs = model.predict_files([p for p, _ in known])
    labels = np.asarray([classes.index(c) for _, c in known], dtype=int)
    return labels, probs, classes
