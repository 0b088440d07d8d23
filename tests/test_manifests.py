"""Medical data as hospitals and challenges ship it: labels.csv manifests (one class, or several findings per image),
patient ids and patient-grouped hold-outs, ordered grades."""
import json
import os
import re
import shutil
import types

import numpy as np
import pytest

import channels
import data
import epoch_log
import layout
import metrics
from conftest import FINDINGS, make_dataset, make_image, make_multilabel_dataset, read_failure, run_local_train
from errors import ConfigError, DataError
from medimg import artifacts, prepare_data


def args_for(root, **kw):
    base = {"train": os.path.join(root, "train"), "val": None, "test": None, "label_dict": None, "task": "auto",
            "max_bad_fraction": 0.01}
    if os.path.isdir(os.path.join(root, "val")):
        base["val"] = os.path.join(root, "val")
    base.update(kw)
    return types.SimpleNamespace(**base)


def single_label_manifest(root, names=("benign", "malignant"), n=8, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        folder = os.path.join(root, split)
        os.makedirs(os.path.join(folder, "scans", "a"), exist_ok=True)
        files, labels = [], []
        for i in range(n):
            rel = f"scans/a/{i}.png" if i % 2 else f"{i}.png"  # images anywhere under the channel
            make_image(i % 2, rng).save(os.path.join(folder, *rel.split("/")))
            files.append(rel)
            labels.append(names[i % 2])
        layout.write_manifest(os.path.join(folder, "labels.csv"), files, labels=labels,
                              patients=[f"p{i // 2}" for i in range(n)])
    return str(root)


# ---------------------------------------------------------------- reading manifests
def test_a_single_label_manifest_lists_its_images_anywhere_in_the_channel(tmp_path):
    root = single_label_manifest(tmp_path)
    classes, task, listed = channels.read_channels(args_for(root))
    assert task == "multiclass" and list(classes) == ["benign", "malignant"]
    assert "labels.csv" in classes.source
    assert listed["train"].targets == [0, 1] * 4 and listed["train"].groups[:3] == ["p0", "p0", "p1"]
    assert listed["train"].names[:2] == ["0.png", "scans/a/1.png"]


def test_a_multi_label_manifest_gives_finding_columns_in_label_dict_order(tmp_path):
    root = make_multilabel_dataset(tmp_path, counts={"train": 9, "val": 3})
    classes, task, listed = channels.read_channels(args_for(root))
    assert task == "multilabel" and list(classes) == FINDINGS
    reordered = tmp_path / "findings.json"
    reordered.write_text(json.dumps(layout.label_dict_json(FINDINGS[::-1])))
    classes2, _, listed2 = channels.read_channels(args_for(root, label_dict=str(reordered)))
    assert list(classes2) == FINDINGS[::-1]
    assert listed2["train"].targets == [t[::-1] for t in listed["train"].targets]


MANIFEST_ERRORS = {
    "unknown class": ("image,label\n0.png,benign\n1.png,cancer\n", "line 3: class 'cancer' is not in"),
    "not 0/1": ("image,a,b\n0.png,1,0\n1.png,0,-1\n", "line 3: b='-1' for '1.png'; finding values must be 0 or 1"),
    "empty value": ("image,a,b\n0.png,1,0\n1.png,,1\n", "line 3: a='' for '1.png'"),
    "duplicate row": ("image,label\n0.png,benign\n1.png,malignant\n0.png,benign\n", "lines 2 and 4 both list '0.png'"),
    "climbing path": ("image,label\n../0.png,benign\n1.png,malignant\n", "line 2: image '../0.png' must be a path"),
    "absolute path": ("image,label\n/etc/0.png,benign\n1.png,malignant\n", "line 2: image '/etc/0.png'"),
    "windows path": ("image,label\nscans\\0.png,benign\n1.png,malignant\n", "line 2: image 'scans\\\\0.png'"),
    "drive letter": ("image,label\nC:/0.png,benign\n1.png,malignant\n", "line 2: image 'C:/0.png' must be a path"),
    "no image column": ("file,label\n0.png,benign\n", "must start with a header row whose first column is 'image'"),
    "label beside findings": ("image,label,a\n0.png,x,1\n", "has a 'label' column beside other columns"),
    "unquoted comma": ("image,label\n0.png,normal, benign\n", "line 2 has 3 fields for 2 columns; quote a value"),
    "no rows": ("image,label\n", "lists no images"),
}


@pytest.mark.parametrize("name, ok", [
    ("0.png", True), ("scans/a/0.png", True), ("ñandú α.png", True), ("a..b.png", True),
    ("", False), ("/etc/0.png", False), ("../0.png", False), ("scans/../../0.png", False),
    ("scans\\0.png", False), ("C:/0.png", False), ("C:0.png", False),
])
def test_one_rule_for_a_path_inside_a_channel(name, ok):
    assert layout.is_relative_path(name) is ok


@pytest.mark.parametrize("case", sorted(MANIFEST_ERRORS))
def test_manifest_errors_are_one_clear_line(tmp_path, case):
    text, fragment = MANIFEST_ERRORS[case]
    root = single_label_manifest(tmp_path)
    (tmp_path / "train" / "labels.csv").write_text(text)
    (tmp_path / "label_dict.json").write_text(json.dumps({"0": "benign", "1": "malignant"}))
    with pytest.raises(DataError) as err:
        channels.read_channels(args_for(root, label_dict=str(tmp_path / "label_dict.json")))
    message = str(err.value)
    assert fragment in message and "\n" not in message, message
    assert message.startswith(str(tmp_path / "train" / "labels.csv")) or "class" in fragment, message


def test_missing_files_count_as_unreadable_images(tmp_path, caplog):
    root = single_label_manifest(tmp_path, n=40)
    os.unlink(tmp_path / "train" / "scans" / "a" / "3.png")
    with caplog.at_level("WARNING", logger="train"):
        _, _, listed = channels.read_channels(args_for(root, max_bad_fraction=0.05))
    assert len(listed["train"]) == 39
    assert "1 of the 40 images that" in caplog.text and "(first: 'scans/a/3.png'); they are skipped" in caplog.text
    with pytest.raises(DataError, match=r"1 of the 40 images .* above max-bad-fraction=0.01; upload them"):
        channels.read_channels(args_for(root))


def test_the_same_image_in_two_splits_is_refused(tmp_path):
    root = single_label_manifest(tmp_path)
    shutil.copyfile(tmp_path / "train" / "0.png", tmp_path / "val" / "0.png")  # one scan in both splits
    with pytest.raises(DataError, match=r"the same image is in train \(.*0.png\) and in val \(.*0.png\)"):
        channels.read_channels(args_for(root))


@pytest.mark.parametrize("task, make, fragment", [
    ("multiclass", "multi", "the train channel's labels.csv has finding columns but this run is multiclass"),
    ("multilabel", "folders", "task=multilabel needs a train channel with a labels.csv of 0/1 finding columns"),
    ("multilabel", "single", "task=multilabel needs a train channel with a labels.csv of 0/1 finding columns"),
])
def test_a_task_the_data_cannot_meet_is_refused(tmp_path, task, make, fragment):
    root = {"multi": lambda: make_multilabel_dataset(tmp_path, counts={"train": 3}),
            "folders": lambda: make_dataset(tmp_path / "d", counts={"train": 2}),
            "single": lambda: single_label_manifest(tmp_path)}[make]()
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        channels.read_channels(args_for(root, task=task, val=None))


def test_every_channel_holds_the_same_kind_of_labels(tmp_path):
    root = make_multilabel_dataset(tmp_path, counts={"train": 3})
    make_dataset(tmp_path / "f", counts={"val": 2})
    with pytest.raises(ConfigError, match="the val channel's labels.csv has a label column"):
        shutil.copytree(tmp_path / "f" / "val", tmp_path / "val")
        single_label_manifest(tmp_path / "s")
        shutil.copyfile(tmp_path / "s" / "val" / "labels.csv", tmp_path / "val" / "labels.csv")
        channels.read_channels(args_for(root))


# ---------------------------------------------------------------- patient-level hold-out
def test_the_held_out_val_keeps_every_patient_on_one_side(tmp_path):
    root = make_multilabel_dataset(tmp_path, counts={"train": 90}, images_per_patient=3)
    _, task, listed = channels.read_channels(args_for(root, val=None))
    train, val = data.hold_out_val(listed["train"], 0.2, seed=3, task=task)
    assert set(train.groups).isdisjoint(val.groups) and 12 <= len(val) <= 24
    again = data.hold_out_val(listed["train"], 0.2, seed=3, task=task)[1]
    assert again.names == val.names  # seeded


def test_prepare_data_holds_out_a_test_split_by_the_same_rule():
    split = prepare_data.Split([np.zeros((4, 4), np.uint8)] * 40, [i % 2 for i in range(40)],
                               patients=[f"p{i // 4}" for i in range(40)])
    lines = []
    out = prepare_data.hold_out_test({"train": split}, 0.25, seed=1, log=lines.append)
    assert set(out["train"].patients).isdisjoint(out["test"].patients) and 8 <= len(out["test"]) <= 12
    assert "held out" in lines[0] and "by patient" in lines[0]
    assert prepare_data.hold_out_test(out, 0.25, 1, log=lines.append) is out and "its own test split" in lines[1]


# ---------------------------------------------------------------- metrics
def test_multilabel_metrics_follow_the_medmnist_evaluator():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < 0.3).astype(int)
    p = np.clip(y * 0.6 + rng.random((200, 3)) * 0.5, 0, 1)
    got = metrics.multilabel_metrics(y, p, ["a", "b", "c"])
    assert got["auc"] == pytest.approx(np.mean([roc_auc_score(y[:, k], p[:, k]) for k in range(3)]))
    assert got["accuracy"] == pytest.approx(np.mean([((p[:, k] >= 0.5) == y[:, k]).mean() for k in range(3)]))
    a = got["per_finding"]["a"]
    assert a["prevalence"] == pytest.approx(y[:, 0].mean()) and a["threshold"] == 0.5
    assert a["sensitivity"] == pytest.approx(((p[:, 0] >= 0.5) & (y[:, 0] == 1)).sum() / y[:, 0].sum())


def test_ordinal_metrics_match_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 300)
    prob = np.eye(5)[np.clip(y + rng.integers(-1, 2, 300), 0, 4)] * 0.9 + 0.02
    got = metrics.ordinal_metrics(y, prob)
    assert got["kappa"] == pytest.approx(cohen_kappa_score(y, prob.argmax(1), weights="quadratic"))
    assert got["mae"] == pytest.approx(np.abs(prob.argmax(1) - y).mean())


# ---------------------------------------------------------------- through the real toolkit
@pytest.fixture(scope="module")
def multilabel_job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multilabel")
    root = make_multilabel_dataset(tmp / "data", counts={"train": 150, "test": 30}, images_per_patient=3)
    work = tmp / "work"
    result = run_local_train(root, work, ["epochs=12", "batch-size=16", "patience=0"])
    assert result.returncode == 0, result.stdout[-3000:]
    return root, work, result


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_endpoint_answers_findings_with_their_probabilities(multilabel_job):
    root, work, _ = multilabel_job
    with artifacts.LocalModel(str(work / "model")) as model:
        image = (tmp_path_image := os.path.join(root, "test", "images", "0.png"))
        answer = model.invoke(open(tmp_path_image, "rb").read(), "image/png")["predictions"][0]
    assert set(answer) == {"findings", "probabilities", "thresholds"} and image
    assert set(answer["probabilities"]) == set(FINDINGS)
    assert answer["findings"] == [f for f in FINDINGS if answer["probabilities"][f] >= answer["thresholds"][f]]


@pytest.mark.slow
def test_a_single_label_manifest_job_through_the_toolkit(tmp_path):
    root = single_label_manifest(tmp_path / "data", n=24)
    result = run_local_train(root, tmp_path / "work", ["epochs=2", "batch-size=16"])
    assert result.returncode == 0, result.stdout[-3000:]
    m = json.loads((tmp_path / "work" / "output" / "data" / "metrics.json").read_text())
    assert m["classes"] == ["benign", "malignant"] and m["task"] == "multiclass" and m["val"]["n"] == 24


@pytest.mark.slow
def test_a_manifest_error_fails_the_job_with_its_line(tmp_path):
    root = single_label_manifest(tmp_path / "data")
    with open(tmp_path / "data" / "val" / "labels.csv", "a") as fh:
        fh.write("extra.png,cancer,p9\n")
    result = run_local_train(root, tmp_path / "work", ["epochs=1"])
    assert result.returncode != 0
    assert re.search(r"labels\.csv line 10: class 'cancer' is not in the class names of the train channel's "
                     r"labels\.csv", read_failure(tmp_path / "work")), read_failure(tmp_path / "work")


@pytest.mark.slow
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
