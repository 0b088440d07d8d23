"""scripts/show_metrics.py (what make demo ends with): the headline figures of every kind of metrics.json, binary at
argmax and at the operating point the endpoint uses, more classes, ordinal grades and findings, undefined values."""
import json

from medimg import show_metrics

BINARY = {
    "n": 524, "accuracy": 0.9676, "auc": 0.9956, "ece": 0.0143, "sensitivity": 0.9692, "specificity": 0.9630,
    "confusion_matrix": [[130, 5], [12, 377]],
    "ci95": {"accuracy": [0.952, 0.981], "auc": [0.9917, 0.9987], "sensitivity": [0.951, 0.985],
             "specificity": [0.931, 0.992], "op_sensitivity": [0.919, 0.967], "op_specificity": [0.952, 1.0]},
    "operating_point": {"threshold": 0.6525, "rule": "Youden's J on val", "positive_class": "pneumonia",
                        "sensitivity": 0.9434, "specificity": 0.9778, "ppv": 0.9919, "npv": 0.8571,
                        "confusion_matrix": [[132, 3], [22, 367]]},
}


def run(tmp_path, capsys, metrics):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    assert show_metrics.main([str(path)]) == 0
    return capsys.readouterr().out


def test_binary_shows_argmax_and_the_operating_point_with_intervals(tmp_path, capsys):
    val = {k: v for k, v in BINARY.items() if k != "ci95"}
    out = run(tmp_path, capsys, {"classes": ["normal", "pneumonia"], "task": "multiclass", "best_epoch": 34,
                                 "history": [{}] * 46, "val": val, "test": BINARY})
    lines = out.splitlines()
    assert lines[0] == "classes: ['normal', 'pneumonia'] (multiclass); best epoch 34 of 46"
    test = lines[lines.index(next(l for l in lines if l.startswith("test "))):]
    assert test[0] == "test (n=524): accuracy 0.9676 [0.952, 0.981], AUC 0.9956 [0.992, 0.999], ECE 0.014"
    assert test[1].startswith("    at argmax (p >= 0.5): sensitivity 0.9692 [0.951, 0.985], specificity 0.9630")
    assert ("at the operating point p(pneumonia) >= 0.6525 (Youden's J on val, what the endpoint uses): "
            "sensitivity 0.9434 [0.919, 0.967], specificity 0.9778 [0.952, 1.000], PPV 0.9919, NPV 0.8571") in test[2]
    assert "no test split" not in out


def test_more_classes_ordinal_and_undefined_values(tmp_path, capsys):
    split = {"n": 30, "accuracy": 0.4333, "auc": None, "ece": 0.02, "sensitivity": 0.3333, "specificity": 0.6667,
             "per_class_recall": [0.0, 1.0, None], "kappa": 0.41, "mae": 0.77,
             "confusion_matrix": [[0, 6, 0], [0, 13, 0], [0, 11, 0]]}
    out = run(tmp_path, capsys, {"classes": ["grade 0", "grade 1, mild", "grade 2"], "best_epoch": 1,
                                 "history": [{}], "val": split})
    assert "val (n=30): accuracy 0.4333, AUC n/a, ECE 0.020, quadratic weighted kappa 0.4100, MAE 0.770" in out
    assert "recall per class {'grade 0': 0.0, 'grade 1, mild': 1.0, 'grade 2': None}" in out
    assert "p >= 0.5" not in out  # argmax over three classes is not a 0.5 cut-off
    assert out.rstrip().endswith("no test split: the val figures chose the epoch and the operating point, so they "
                                 "are optimistic")


def test_findings_each_at_their_threshold(tmp_path, capsys):
    split = {"n": 20, "accuracy": 0.7, "auc": 0.5962, "ece": 0.015, "sensitivity": 0.73, "specificity": 0.62,
             "per_finding": {"Effusion": {"auc": 0.88, "sensitivity": 0.6, "specificity": 1.0, "threshold": 0.508,
                                          "prevalence": 0.5, "n_positive": 10},
                             "Nodule": {"auc": None, "sensitivity": None, "specificity": 0.25, "threshold": 0.423,
                                        "prevalence": 0.0, "n_positive": 0}}}
    out = run(tmp_path, capsys, {"classes": ["Effusion", "Nodule"], "task": "multilabel", "best_epoch": 3,
                                 "history": [{}] * 3, "val": split, "test": split})
    assert "    Effusion: AUC 0.8800, sensitivity 0.6000, specificity 1.0000 at p >= 0.508 (prevalence 0.500)" in out
    assert "    Nodule: AUC n/a, sensitivity n/a, specificity 0.2500 at p >= 0.423 (prevalence 0.000)" in out
    assert "confusion matrix" not in out


def test_a_file_that_cannot_be_read_is_one_line(tmp_path, capsys):
    assert show_metrics.main([str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("show_metrics: cannot read ") and err.count("\n") == 1


def test_help_is_the_usage_not_a_file_name(capsys):
    assert show_metrics.main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("Print the headline figures of a metrics.json")
