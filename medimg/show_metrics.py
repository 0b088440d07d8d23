#!/usr/bin/env python
"""Print the headline figures of a metrics.json written by train.py.

    python scripts/show_metrics.py work/output/data/metrics.json
"""
import json
import sys


def format_split(name, m):
    line = f"{name:>5}: accuracy={m['accuracy']:.4f} auc={m['auc'] if m['auc'] is None else round(m['auc'], 4)}"
    if "sensitivity" in m:
        line += f" sensitivity={m['sensitivity']:.4f} specificity={m['specificity']:.4f}"
    return line + f" (n={m['n']}) confusion_matrix={m['confusion_matrix']}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: show_metrics.py METRICS_JSON", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        metrics = json.load(fh)
    print(f"classes: {metrics['classes']}; best epoch {metrics['best_epoch']} of {len(metrics['history'])}")
    for split in ("val", "test"):
        if split in metrics:
            print(format_split(split, metrics[split]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
