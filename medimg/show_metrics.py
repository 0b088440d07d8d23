#!/usr/bin/env python
"""Print the headline figures of a metrics.json written by train.py (README, "metrics.json").

    python scripts/show_metrics.py work/output/data/metrics.json

For each of val and test: accuracy and AUC (with their bootstrap 95% intervals when the split has them), ECE,
quadratic weighted kappa and MAE for ordinal grades; then, for a binary task, sensitivity and specificity at
argmax (p >= 0.5, the MedMNIST definition) and at the operating point chosen on val (the threshold the endpoint
uses), with PPV and NPV; for more classes, their means and the recall of each class; for multi-label tasks, each
finding at its own threshold. A binary task's positive class (the finding those figures are of) is named first,
with where that choice came from. Confusion matrices: rows are the true class, columns the predicted one. Undefined
values (``null`` in the file) print as ``n/a``, with the reason metrics.json's ``undefined`` gives (a split
without images of a class). Then what the intervals resampled (patients when the split names them, else images)
and the images each split skipped (unreadable, too large, listed but missing), with the first names.
"""
import json
import sys


SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}  # metrics.json's keys are sorted


def _num(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _why(split, key, digits=4, finding=None, of=None):
    """``_num`` of a figure (of ``split``, of one of its findings, or of the dict ``of``: the operating point), and
    when it is null the reason metrics.json's ``undefined`` gives for it."""
    value = (of if of is not None else split["per_finding"][finding] if finding else split).get(key)
    reasons = (split.get("undefined") or {})
    reason = (reasons.get("per_finding") or {}).get(finding) if finding else reasons.get(key)
    return f"n/a ({reason})" if value is None and isinstance(reason, str) else _num(value, digits)


def interval_unit(split):
    """What a split's bootstrap intervals resampled, in words ("57 patients (each patient's images together)",
    "240 images"); None without intervals."""
    if not split.get("ci95"):
        return None
    if split.get("ci95_unit") == "patient":
        return f"{split['n_groups']} patients (each patient's images together)"
    return f"{split['n']} images"


def skipped_lines(metrics):
    """Per split, the images it could not use (metrics.json's ``skipped``): count, reasons and the first names."""
    skipped = metrics.get("skipped")
    if skipped is None:
        return []
    lines = []
    for split, entry in sorted(skipped.items(), key=lambda kv: SPLIT_ORDER.get(kv[0], 9)):
        if not entry["count"]:
            continue
        names = entry.get("images") or entry.get("first_images") or []
        more = entry["count"] - len(names)
        where = f" (every name: {entry['images_file']})" if entry.get("images_file") else ""
        reasons = ", ".join(f"{why}: {n}" for why, n in entry.get("reasons", {}).items())
        lines.append(f"skipped from {split}: {entry['count']} image(s) ({reasons}): {', '.join(names)}"
                     f"{f' and {more} more' if more > 0 else ''}{where}")
    return lines or ["skipped: none (every image of every split was used)"]


def _ci(split, key):
    interval = (split.get("ci95") or {}).get(key)
    return f" [{_num(interval[0], 3)}, {_num(interval[1], 3)}]" if interval else ""


def format_split(name, m, classes=()):
    """The lines for one split's entry of metrics.json (``m``: its dict; ``classes``: metrics.json's names)."""
    head = f"{name} (n={m['n']}): accuracy {_num(m['accuracy'])}{_ci(m, 'accuracy')}, AUC {_why(m, 'auc')}" \
           f"{_ci(m, 'auc')}"
    if "ece" in m:
        head += f", ECE {_num(m['ece'], 3)}"
    if "kappa" in m:
        head += f", quadratic weighted kappa {_num(m['kappa'])}, MAE {_num(m['mae'], 3)} grades"
    lines = [head]
    if "per_finding" in m:
        for finding, v in m["per_finding"].items():
            lines.append(f"    {finding}: AUC {_why(m, 'auc', finding=finding)}, sensitivity {_num(v['sensitivity'])}, "
                         f"specificity {_num(v['specificity'])} at p >= {_num(v['threshold'], 3)} (prevalence "
                         f"{_num(v['prevalence'], 3)})")
        return lines + _unit_line(m)
    op = m.get("operating_point")
    if "per_class_recall" in m:  # more than two classes: argmax, sensitivity and specificity as macro means
        names = list(classes) or list(range(len(m["per_class_recall"])))
        recall = {c: None if r is None else round(r, 3) for c, r in zip(names, m["per_class_recall"])}
        lines.append(f"    at argmax: sensitivity {_num(m['sensitivity'])}, specificity {_num(m['specificity'])} "
                     f"(means over the classes), recall per class {recall}, "
                     f"confusion matrix {m['confusion_matrix']}")
        for cls, why in ((m.get("undefined") or {}).get("per_class_recall") or {}).items():
            lines.append(f"    recall of {cls!r} n/a: {why}")
    elif "sensitivity" in m:
        lines.append(f"    at argmax (p >= 0.5): sensitivity {_why(m, 'sensitivity')}{_ci(m, 'sensitivity')}, "
                     f"specificity {_why(m, 'specificity')}{_ci(m, 'specificity')}, confusion matrix "
                     f"{m['confusion_matrix']}")
    if op:
        lines.append(f"    at the operating point p({op['positive_class']}) >= {_num(op['threshold'])} ({op['rule']}, "
                     f"what the endpoint uses): sensitivity {_why(m, 'sensitivity', of=op)}{_ci(m, 'op_sensitivity')}, "
                     f"specificity {_why(m, 'specificity', of=op)}{_ci(m, 'op_specificity')}, PPV {_num(op['ppv'])}, "
                     f"NPV {_num(op['npv'])}, confusion matrix {op['confusion_matrix']}")
    return lines + _unit_line(m)


def _unit_line(m):
    unit = interval_unit(m)
    return [f"    95% intervals [low, high]: bootstrap resampling {unit}"] if unit else []


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if len(argv) != 1:
        print("usage: show_metrics.py METRICS_JSON", file=sys.stderr)
        return 2
    try:
        with open(argv[0], encoding="utf-8") as fh:
            metrics = json.load(fh)
    except (OSError, ValueError) as exc:
        print(f"show_metrics: cannot read {argv[0]}: {exc}", file=sys.stderr)
        return 2
    print(f"classes: {metrics['classes']} ({metrics.get('task', 'multiclass')}); best epoch {metrics['best_epoch']} "
          f"of {len(metrics['history'])}")
    if metrics.get("positive_class") is not None:
        print(f"positive class: {metrics['positive_class']} ({metrics.get('positive_class_from') or 'unknown'}): "
              "sensitivity, specificity, PPV and NPV below are of this class")
    for split in ("val", "test"):
        if split in metrics:
            print("\n".join(format_split(split, metrics[split], metrics["classes"])))
    if "test" not in metrics:
        print("no test split: the val figures chose the epoch and the operating point, so they are optimistic")
    for line in skipped_lines(metrics):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
