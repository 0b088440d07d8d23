"""Manifests, findings and grades through the real toolkit (scripts/local_train.py): a multi-label job reports every
finding (and the notebook's views and the endpoint answer by finding), a single-label manifest job, a manifest
error fails the job with its line, ordinal grades add kappa and grade error. The rules themselves:
tests/unit/code/test_manifests.py."""
import json
import os
import re

import numpy as np
import pytest

import epoch_log
import layout
from conftest import FINDINGS, make_multilabel_dataset, read_failure, run_local_train
from data_factories import single_label_manifest
from medimg import artifacts

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast


@pytest.fixture(scope="module")
def multilabel_job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multilabel")
    root = make_multilabel_dataset(tmp / "data", counts={"train": 150, "test": 30}, images_per_patient=3)
    work = tmp / "work"
    result = run_local_train(root, work, ["epochs=12", "batch-size=16", "patience=0"])
    assert result.returncode == 0, result.stdout[-3000:]
    return root, work, result


def test_a_multilabel_manifest_job_reports_every_finding(multilabel_job):
    root, work, result = multilabel_job
    m = json.loads((work / "output" / "data" / "metrics.json").read_text())
    assert m["task"] == "multilabel" and m["classes"] == FINDINGS
    assert "no patient on both sides" in result.stdout
    for split in ("val", "test"):
        per = m[split]["per_finding"]
        assert sorted(per) == sorted(FINDINGS)
        for finding in FINDINGS:
            assert {"auc", "sensitivity", "specificity", "prevalence", "threshold"} <= set(per[finding])
        assert m[split]["auc"] == pytest.approx(np.mean([per[f]["auc"] for f in FINDINGS]))
    assert m["test"]["auc"] > 0.8, m["test"]  # the synthetic findings are learnable
    # the epoch line keeps its keys, so the metric definitions still match
    lines = [line for line in result.stdout.splitlines() if epoch_log.parse_epoch(line)]
    assert len(lines) == 12
    config = json.loads((work / "model" / "model_config.json").read_text())
    assert config["task"] == "multilabel" and len(config["thresholds"]) == 3


def test_the_notebook_views_of_a_multilabel_run(multilabel_job):
    """What the notebook's results cells show for findings: the per-finding table and a ROC curve per finding, no
    binary clinical table and no single-label mistakes."""
    import matplotlib

    matplotlib.use("Agg")
    from medimg import plots

    _, work, _ = multilabel_job
    m = artifacts.load_metrics(str(work / "output" / "data"))
    table = artifacts.per_finding_table(m)
    assert list(table.index) == FINDINGS
    assert list(table.columns) == ["prevalence", "positives", "AUC", "threshold", "sensitivity", "specificity"]
    assert table.loc[FINDINGS[0], "AUC"] == f"{m['test']['per_finding'][FINDINGS[0]]['auc']:.3f}"
    assert artifacts.clinical_table(m) is None and artifacts.confident_mistakes(m) == []
    assert "test" in artifacts.metrics_table(m).index
    labels, probs, classes = artifacts.test_predictions(m)
    assert labels.shape == probs.shape == (30, len(FINDINGS)) and classes == FINDINGS
    fig = plots.roc_curves(labels, probs, classes)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [t.split(" (AUC")[0] for t in legend] == FINDINGS
    assert artifacts.examples(m) and all(true is None for _, true in artifacts.examples(m))


def test_the_endpoint_answers_findings_with_their_probabilities(multilabel_job):
    root, work, _ = multilabel_job
    with artifacts.LocalModel(str(work / "model")) as model:
        image = (tmp_path_image := os.path.join(root, "test", "images", "0.png"))
        answer = model.invoke(open(tmp_path_image, "rb").read(), "image/png")["predictions"][0]
    assert set(answer) == {"findings", "probabilities", "thresholds"} and image
    assert set(answer["probabilities"]) == set(FINDINGS)
    assert answer["findings"] == [f for f in FINDINGS if answer["probabilities"][f] >= answer["thresholds"][f]]


def test_a_single_label_manifest_job_through_the_toolkit(tmp_path):
    root = single_label_manifest(tmp_path / "data", n=24)
    result = run_local_train(root, tmp_path / "work", ["epochs=2", "batch-size=16"])
    assert result.returncode == 0, result.stdout[-3000:]
    m = json.loads((tmp_path / "work" / "output" / "data" / "metrics.json").read_text())
    assert m["classes"] == ["benign", "malignant"] and m["task"] == "multiclass" and m["val"]["n"] == 24


def test_a_manifest_error_fails_the_job_with_its_line(tmp_path):
    root = single_label_manifest(tmp_path / "data")
    with open(tmp_path / "data" / "val" / "labels.csv", "a") as fh:
        fh.write("extra.png,cancer,p9\n")
    result = run_local_train(root, tmp_path / "work", ["epochs=1"])
    assert result.returncode != 0
    assert re.search(r"labels\.csv line 10: class 'cancer' is not in the class names of the train channel's "
                     r"labels\.csv", read_failure(tmp_path / "work")), read_failure(tmp_path / "work")


def test_ordinal_grades_add_kappa_and_grade_error(tmp_path):
    """Five ordered grades (brightness levels); ordinal=true adds the quadratic weighted kappa and the mean absolute
    grade error to val and test, to the epoch lines (the tuner's objectives) and to metrics.json."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        for grade in range(5):
            os.makedirs(root / split / f"grade {grade}")
            for i in range(n):
                arr = np.full((16, 16), 30 + 45 * grade, np.float64) + rng.normal(0, 6, (16, 16))
                from PIL import Image

                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / split / f"grade {grade}" / f"{i}.png")
        (root / split / "label_dict.json").write_text(json.dumps(layout.label_dict_json(
            [f"grade {g}" for g in range(5)])))
    result = run_local_train(root, tmp_path / "work", ["epochs=4", "batch-size=16", "ordinal=true"])
    assert result.returncode == 0, result.stdout[-3000:]
    m = json.loads((tmp_path / "work" / "output" / "data" / "metrics.json").read_text())
    for split in ("val", "test"):
        assert -1 <= m[split]["kappa"] <= 1 and 0 <= m[split]["mae"] <= 4
    epoch_lines = [epoch_log.parse(line) for line in result.stdout.splitlines() if epoch_log.parse_epoch(line)]
    assert all("val_kappa" in v and "val_mae" in v for v in epoch_lines)
    names = {d["Name"] for d in epoch_log.metric_definitions(test=True, ordinal=True)}
    assert {"val_kappa", "val_mae", "test_kappa", "test_mae"} <= names
    assert re.search(r"test_kappa=[-0-9.]+ test_mae=[0-9.]+", result.stdout)
    # the notebook's views: kappa and grade error beside the usual figures; mistakes in confidence order
    table = artifacts.metrics_table(m)
    assert table.loc["test", "kappa"] == f"{m['test']['kappa']:.3f}" and "grade MAE" in table.columns
    mistakes = artifacts.confident_mistakes(m, limit=50)
    labels = np.asarray(m["test_predictions"]["labels"])
    answered = np.asarray(m["test_predictions"]["probabilities"]).argmax(1)
    assert len(mistakes) == int((labels != answered).sum())
    assert [p for *_, p in mistakes] == sorted((p for *_, p in mistakes), reverse=True)
    assert all(true != said and true.startswith("grade ") for _, true, said, _ in mistakes)
