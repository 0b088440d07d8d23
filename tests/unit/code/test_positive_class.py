"""The positive class of a binary task is the finding, not whatever sorts second (issue 18, part 2): code/layout.py's
rule (a name meaning no finding makes the other class positive; the positive-class hyperparameter chooses), and
every figure that depends on it - sensitivity, specificity, PPV/NPV, the operating threshold, the endpoint's label,
the notebook's tables and curves - is of that class, at index 0 as well as 1. The class order never changes."""
import json
import logging

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score

import calibration
import channels as code_channels
import evaluation
import inference
import layout
import metrics
import model_config
from errors import ConfigError
from medimg import artifacts, prepare_data, show_metrics

BREAST = ["malignant", "normal, benign"]  # BreastMNIST's label dict: the finding sorts first


# ---------------------------------------------------------------- the rule (code/layout.py)
@pytest.mark.parametrize("classes, positive, why", [
    (BREAST, "malignant", "the other class of 'normal, benign', a name meaning no finding"),
    (["covid", "normal"], "covid", "the other class of 'normal', a name meaning no finding"),
    (["normal", "covid"], "covid", "the other class of 'normal', a name meaning no finding"),
    (["abnormal", "normal"], "abnormal", "the other class of 'normal'"),  # whole words: abnormal is not normal
    (["No Finding", "Effusion"], "Effusion", "the other class of 'No Finding'"),
    (["no_finding", "Cardiomegaly"], "Cardiomegaly", "the other class of 'no_finding'"),
    (["Cardiomegaly", "NoFinding"], "Cardiomegaly", "the other class of 'NoFinding'"),
    (["healthy", "tumor"], "tumor", "the other class of 'healthy'"),
    (["tumor", "healthy"], "tumor", "the other class of 'healthy'"),
    (["benign", "malignant"], "malignant", "the other class of 'benign'"),
    (["NORMAL", "PNEUMONIA"], "PNEUMONIA", "the other class of 'NORMAL'"),
    (["COVID negative", "COVID positive"], "COVID positive", "the other class of 'COVID negative'"),
    (["glioma", "no tumor"], "glioma", "the other class of 'no tumor'"),
    (["DR", "No DR"], "DR", "the other class of 'No DR'"),
    (["COVID", "non-COVID"], "COVID", "the other class of 'non-COVID'"),
    (["Control", "Parkinson"], "Parkinson", "the other class of 'Control'"),
    (["lesion", "unremarkable"], "lesion", "the other class of 'unremarkable'"),
    (["Parasitized", "Uninfected"], "Parasitized", "the other class of 'Uninfected'"),  # NIH malaria cells
    (["glioma", "notumor"], "glioma", "the other class of 'notumor'"),  # the Kaggle brain MRI set's folder
    (["Not normal", "Normal"], "Not normal", "the other class of 'Normal'"),  # a negated no-finding is a finding
    (["cat", "dog"], "dog", "the second class, as neither name means no finding"),
    (["abnormality", "anomaly"], "anomaly", "the second class, as neither name means no finding"),
    (["normal", "benign"], "benign", "the second class, as both names mean no finding"),
])
def test_the_positive_class_is_the_finding(classes, positive, why):
    index, source = layout.positive_class(classes)
    assert classes[index] == positive and why in source


@pytest.mark.parametrize("name, meaning", [
    ("normal, benign", True), ("Normal", True), ("HEALTHY", True), ("healthy control", True), ("negative", True),
    ("No Finding", True), ("no finding", True), ("nofinding", True), ("Pneumonia not detected", True),
    ("disease-free", True), ("within normal limits", True), ("none", True),
    ("abnormal", False), ("subnormal", False), ("benignity", False), ("pneumonia", False), ("malignant", False),
    ("no", True), ("Non-COVID", True), ("uninfected", True),
    ("finding", False), ("Nodule", False), ("knot", False), ("Ödem", False), ("not normal", False),
    ("Non-healthy", False), ("infected", False), ("tumor", False),
])
def test_no_finding_names_are_whole_words_or_phrases(name, meaning):
    assert layout.means_no_finding(name) is meaning


@pytest.mark.parametrize("requested, positive", [
    ("malignant", "malignant"), ("MALIGNANT", "malignant"), (" Malignant ", "malignant"),
    ("normal, benign", "normal, benign"), ("Normal, Benign", "normal, benign"), ("normal_benign", "normal, benign"),
    ("auto", "malignant"), ("AUTO", "malignant"), (None, "malignant"),
])
def test_a_requested_positive_class_is_matched_as_class_names_are(requested, positive):
    index, source = layout.positive_class(BREAST, requested)
    assert BREAST[index] == positive
    assert ("hyperparameter" in source) is (requested is not None and requested.strip().lower() != "auto")


def test_an_unknown_positive_class_lists_the_classes():
    with pytest.raises(layout.LayoutError) as err:
        layout.positive_class(BREAST, "cancer")
    assert str(err.value) == ("positive-class 'cancer' is not one of the classes ['malignant', 'normal, benign']; "
                              "give one of them (ignoring case), or auto")


# ---------------------------------------------------------------- train.py's channels: where it is chosen and said
def settings(positive_class="auto", task="auto"):
    return type("Args", (), {"positive_class": positive_class, "task": task, "ordinal": False,
                             "target_sensitivity": 0.0})()


def names(classes, sorted_names=False):
    return code_channels.ClassNames(classes, "the train channel's label_dict.json (/data/train/label_dict.json)",
                                    sorted_names=sorted_names)


def test_the_start_up_log_names_the_positive_class_and_why(caplog):
    classes = names(BREAST)
    with caplog.at_level(logging.INFO, logger="train"):
        code_channels.choose_positive_class(settings(), "multiclass", classes)
    assert (classes.positive, classes[classes.positive]) == (0, "malignant")
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("positive class")]
    assert said == [("INFO", "positive class: malignant (the other class of 'normal, benign', a name meaning no "
                             "finding; set positive-class to choose)")]


def test_the_second_of_sorted_names_is_a_warning(caplog):
    """ImageFolder-sorted folders or labels.csv names, neither meaning no finding: the order is nobody's choice."""
    classes = names(["cat", "dog"], sorted_names=True)
    with caplog.at_level(logging.INFO, logger="train"):
        code_channels.choose_positive_class(settings(), "multiclass", classes)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("positive class")]
    assert said == [("WARNING", "positive class: dog (the second class, as neither name means no finding, and the "
                                "names are in their sorted order only; set positive-class to choose)")]


def test_the_hyperparameter_chooses_and_an_unknown_name_is_one_line():
    classes = names(BREAST)
    code_channels.choose_positive_class(settings("Normal, Benign"), "multiclass", classes)
    assert (classes.positive, classes.positive_from) == (1, "set by the positive-class hyperparameter")
    with pytest.raises(ConfigError) as err:
        code_channels.choose_positive_class(settings("cancer"), "multiclass", names(BREAST))
    assert str(err.value) == (
        "invalid hyperparameter: positive-class 'cancer' is not one of the classes ['malignant', 'normal, benign']; "
        "give one of them (ignoring case), or auto (the classes come from the train channel's label_dict.json "
        "(/data/train/label_dict.json))")


@pytest.mark.parametrize("task, classes, fragment", [
    ("multiclass", ["normal", "glioma", "meningioma"], "but this run has 3 classes; leave it out"),
    ("multilabel", ["Effusion", "Nodule"], "but this run is multilabel (each finding is its own positive) (task=auto"),
])
def test_positive_class_without_a_binary_choice_is_refused(task, classes, fragment):
    with pytest.raises(ConfigError) as err:
        code_channels.check_settings_fit_the_task(settings("glioma"), task, names(classes))
    assert fragment in str(err.value) and "\n" not in str(err.value)
    code_channels.check_settings_fit_the_task(settings("auto"), task, names(classes))  # the default is no choice
    unchosen = names(classes)
    code_channels.choose_positive_class(settings(), task, unchosen)
    assert unchosen.positive is None and unchosen.positive_from is None


# ---------------------------------------------------------------- metrics of the right class
def scores(seed=0, n=400):
    """Labels in BREAST's order (0: malignant, the finding, 30%) and logits that separate it imperfectly."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) > 0.3).astype(int)  # 1 (normal, benign) is the majority
    logits = np.stack([(1 - y) * 1.6 + rng.normal(0, 1.2, n), np.zeros(n)], 1)
    return y, logits


def test_sensitivity_of_class_0_is_the_specificity_seen_from_class_1():
    y, logits = scores()
    prob = evaluation.probabilities(logits, "multiclass", 1.0)
    as0, as1 = metrics.compute_metrics(y, prob, positive_class=0), metrics.compute_metrics(y, prob, positive_class=1)
    assert as0["sensitivity"] == pytest.approx(as1["specificity"]) and as0["sensitivity"] != as1["sensitivity"]
    assert as0["specificity"] == pytest.approx(as1["sensitivity"])
    assert as0["sensitivity"] == pytest.approx(recall_score(y, prob.argmax(1), pos_label=0))
    assert as0["auc"] == as1["auc"] == pytest.approx(roc_auc_score(y == 0, prob[:, 0]))  # AUC does not change
    assert as0["confusion_matrix"] == as1["confusion_matrix"]  # class order, whichever is positive
    got = metrics.evaluate_predictions(y, prob, task="multiclass", classes=BREAST, positive=0)
    assert got["sensitivity"] == as0["sensitivity"]


def test_the_operating_point_of_class_0_is_on_its_own_probability():
    y, logits = scores(1)
    prob = evaluation.probabilities(logits, "multiclass", 1.0)
    op = metrics.binary_at_threshold(y, prob[:, 0], 0.4, positive_class=0)
    called = prob[:, 0] >= 0.4
    assert op["sensitivity"] == pytest.approx(called[y == 0].mean())
    assert op["specificity"] == pytest.approx((~called)[y == 1].mean())
    assert op["ppv"] == pytest.approx((y[called] == 0).mean()) and op["prevalence"] == pytest.approx((y == 0).mean())
    answered = np.where(called, 0, 1)  # rows the true class, columns the answer, in class order
    assert op["confusion_matrix"] == [[int(((y == t) & (answered == a)).sum()) for a in (0, 1)] for t in (0, 1)]


def test_decisions_and_report_are_of_the_positive_class():
    y, logits = scores(2)
    d0 = evaluation.fit_decisions(y, logits, task="multiclass", classes=BREAST, positive=0)
    d1 = evaluation.fit_decisions(y, logits, task="multiclass", classes=BREAST, positive=1)
    prob = evaluation.probabilities(logits, "multiclass", d0.temperature)
    assert d0.positive == 0 and d0.temperature == d1.temperature
    assert (d0.threshold, d0.rule) == calibration.choose_threshold(y == 0, prob[:, 0])
    out0, _ = evaluation.report(y, logits, list(range(len(y))), d0, task="multiclass", classes=BREAST, resamples=50)
    out1, _ = evaluation.report(y, logits, list(range(len(y))), d1, task="multiclass", classes=BREAST, resamples=50)
    assert out0["operating_point"]["positive_class"] == "malignant"
    assert out1["operating_point"]["positive_class"] == "normal, benign"
    assert out0["auc"] == out1["auc"] and out0["accuracy"] == out1["accuracy"]
    assert out0["sensitivity"] == pytest.approx(out1["specificity"])
    op = out0["operating_point"]
    assert op["sensitivity"] == pytest.approx((prob[y == 0, 0] >= d0.threshold).mean())
    assert out0["ci95"]["op_sensitivity"][0] <= op["sensitivity"] <= out0["ci95"]["op_sensitivity"][1]
    assert out0["ci95"]["sensitivity"][0] <= out0["sensitivity"] <= out0["ci95"]["sensitivity"][1]
    target = evaluation.fit_decisions(y, logits, task="multiclass", classes=BREAST, positive=0,
                                      target_sensitivity=0.95)
    assert (prob[y == 0, 0] >= target.threshold).mean() >= 0.95  # target-sensitivity protects the finding


# ---------------------------------------------------------------- the model's config and the endpoint
def test_the_endpoint_labels_the_positive_class_at_index_0():
    said = "the other class of 'normal, benign', a name meaning no finding"
    ask = [0.7, 0.3], [0.2, 0.8], [0.35, 0.65]
    got = [inference.answer(np.array(p), BREAST, 0.3, "Youden's J on val", positive=0, positive_from=said)
           for p in ask]
    assert [(a["label"], a["index"]) for a in got] == [("malignant", 0), ("normal, benign", 1), ("malignant", 0)]
    assert got[0]["decision"] == {"rule": "Youden's J on val", "positive_class": "malignant", "threshold": 0.3,
                                  "positive_class_from": said}
    old = inference.answer(np.array([0.7, 0.3]), ["normal", "pneumonia"], 0.3, "Youden's J on val")
    assert old["label"] == "pneumonia" and old["decision"]["positive_class"] == "pneumonia"  # index 1 as before


def write_config(folder, **extra):
    config = model_config.build(architecture="smallcnn", classes=BREAST, in_channels=1, image_size=16, mean=[0.5],
                                std=[0.2], tta=False, hyperparameters={}, torch_version="2.6.0", **extra)
    model_config.write(str(folder), config)
    return config


def test_model_config_records_the_positive_class_and_old_configs_mean_index_1(tmp_path):
    config = write_config(tmp_path, positive=(0, "why"))
    assert (config["positive_class"], config["positive_index"], config["positive_class_from"]) == (
        "malignant", 0, "why")
    assert model_config.read(str(tmp_path))["positive_index"] == 0
    old = {k: v for k, v in config.items() if not k.startswith("positive")}  # written before positive-class
    (tmp_path / "model_config.json").write_text(json.dumps(old))
    read = model_config.read(str(tmp_path))
    assert (read["positive_index"], read["positive_class"]) == (1, "normal, benign")
    (tmp_path / "model_config.json").write_text(json.dumps(dict(config, positive_index=2)))
    with pytest.raises(model_config.ModelLoadError, match="positive_index=2; it must be 0 or 1"):
        model_config.read(str(tmp_path))


# ---------------------------------------------------------------- the client: tables, curves, show_metrics
@pytest.fixture(scope="module")
def breast_metrics():
    """A metrics.json as train.py writes it for BREAST with malignant (index 0) positive."""
    y, logits = scores(3)
    d = evaluation.fit_decisions(y, logits, task="multiclass", classes=BREAST, positive=0)
    out, predictions = evaluation.report(y, logits, [f"{i}.png" for i in range(len(y))], d, task="multiclass",
                                         classes=BREAST, resamples=20)
    return {"classes": BREAST, "task": "multiclass", "positive_class": "malignant", "best_epoch": 1,
            "positive_class_from": "the other class of 'normal, benign', a name meaning no finding",
            "decisions": {"threshold": d.threshold, "positive": 0}, "history": [{}], "test": out,
            "test_predictions": predictions}


def test_the_clinical_table_and_the_answers_are_of_the_positive_class(breast_metrics):
    m = breast_metrics
    table = artifacts.clinical_table(m, digits=4)
    assert table.attrs["positive_class"] == "malignant" and "no finding" in table.attrs["positive_class_from"]
    argmax, operating = table.iloc[0], table.iloc[1]
    assert argmax["sensitivity"].startswith(f"{m['test']['sensitivity']:.4f}")
    assert operating["sensitivity"].startswith(f"{m['test']['operating_point']['sensitivity']:.4f}")
    assert operating["PPV"] == f"{m['test']['operating_point']['ppv']:.4f}"
    prob = np.asarray(m["test_predictions"]["probabilities"])
    answered = artifacts.decided(m, prob)
    assert (answered == np.where(prob[:, 0] >= m["decisions"]["threshold"], 0, 1)).all()
    labels = np.asarray(m["test_predictions"]["labels"])
    assert [[int(((labels == t) & (answered == a)).sum()) for a in (0, 1)] for t in (0, 1)] == \
        m["test"]["operating_point"]["confusion_matrix"]
    mistakes = artifacts.confident_mistakes(m, limit=5)
    assert mistakes
    for image, true, said, p in mistakes:
        i = int(image.split(".")[0])
        assert (true, said) == (BREAST[labels[i]], BREAST[answered[i]]) and true != said
        assert p == pytest.approx(prob[i, answered[i]])
    assert artifacts.positive_index({"classes": ["normal", "pneumonia"], "task": "multiclass"}) == 1  # old files


def test_the_roc_curve_is_of_the_positive_class(breast_metrics):
    import matplotlib

    matplotlib.use("Agg")
    from medimg import plots

    labels, probs, classes = artifacts.test_predictions(breast_metrics)
    fig = plots.roc_curves(labels, probs, classes, operating_point=breast_metrics["test"]["operating_point"])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0] == f"malignant (AUC {roc_auc_score(labels == 0, probs[:, 0]):.3f})"


def test_show_metrics_names_the_positive_class(breast_metrics, tmp_path, capsys):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(breast_metrics))
    assert show_metrics.main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == ("positive class: malignant (the other class of 'normal, benign', a name meaning no finding): "
                      "sensitivity, specificity, PPV and NPV below are of this class")
    assert any("at the operating point p(malignant) >= " in line for line in out)


def test_prepare_data_says_which_class_will_be_positive(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = {f"{s}_{k}": v for s in ("train", "test") for k, v in (
        ("images", rng.integers(0, 255, (6, 16, 16), dtype=np.uint8)), ("labels", (np.arange(6) % 2)[:, None]))}
    np.savez(tmp_path / "breast.npz", **arrays)
    (tmp_path / "names.json").write_text(json.dumps(layout.label_dict_json(BREAST)))
    assert prepare_data.main(["--npz", str(tmp_path / "breast.npz"), "--label-dict", str(tmp_path / "names.json"),
                              "--out", str(tmp_path / "out")]) == 0
    assert ("positive class: malignant (the other class of 'normal, benign', a name meaning no finding): train.py "
            "reports its sensitivity, PPV and operating point; set train.py's positive-class hyperparameter to "
            "choose the other") in capsys.readouterr().out.splitlines()
    assert prepare_data.positive_note(["normal", "glioma", "meningioma"]) is None
