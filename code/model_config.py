"""model_config.json: what train.py saves beside the weights and what the endpoint needs to serve them.

One schema, written by train.py (``write``) and read by inference.py and the client (``read``):

    architecture   model_def registry name ("smallcnn", "resnet18", ...)
    architecture_options  the architecture's own options (model_def.create_model), e.g. {"stem_stride": 2}
    num_classes    outputs of the model (classes, or findings for multi-label)
    classes        class (finding) names in output order
    in_channels    1 or 3
    image_size     side in pixels the model takes
    page           which page (frame) of a multi-page or animated image file is read (0 for configs without it)
    mean, std      per-channel normalisation on the 0..1 scale
    tta            average the probabilities of the image and its horizontal flip
    task           "multiclass" (softmax over classes) or "multilabel" (a sigmoid per finding)
    temperature    temperature scaling fitted on val: probabilities are softmax (sigmoid) of logits / temperature
                   (a float; one per finding for multilabel); 1.0 when not calibrated
    positive_class, positive_index, positive_class_from
                   binary: the positive class (the finding: its sensitivity and operating point are reported), its
                   index in classes and where that choice came from (code/layout.py's positive_class); a config
                   without them means index 1, as train.py chose before there was a choice
    threshold      binary: the operating threshold on the positive class's probability, chosen on val (the label
                   is the positive class when p >= threshold, else the other); threshold_rule says how it was chosen
    thresholds     multilabel: the probability at which each finding is reported (in class order), chosen on val
    initialised_from  where the training started: random, ImageNet weights (the weights channel's file or
                   torchvision's), or an earlier model (the model channel), and what was done with its first
                   convolution and head (code/initialisation.py)
    ensemble       a K-fold ensemble (code/ensemble.py): {"members": K, "files": [model.pth, members/model-1.pth,
                   ...] (member 0 first, so readers of model.pth alone get one member), "epochs": each member's
                   kept epoch, "rule": why, "oof": the out-of-fold figures}; the endpoint averages the members'
                   calibrated probabilities; absent for one model
    format, weights, torch_version, hyperparameters
"""
import json
import os

from utils import atomic_write_json, json_safe

FILE = "model_config.json"
REQUIRED = ("architecture", "num_classes", "in_channels", "image_size", "mean", "std", "classes")
OPTIONAL = {"architecture_options": {}, "tta": False, "format": "state_dict", "weights": "model.pth", "task": "multiclass", "temperature": 1.0,
            "threshold": None, "threshold_rule": "argmax", "page": 0}


class ModelLoadError(RuntimeError):
    """The model directory does not hold what train.py writes."""


def build(*, architecture, classes, in_channels, image_size, mean, std, tta, hyperparameters, torch_version,
          task="multiclass", architecture_options=None, page=0, positive=(None, None), initialised_from=None):
    """The config of a trained model (a plain dict, the file's content); ``positive``: (index, where it came from)
    of a binary task's positive class; ``initialised_from``: where training started (a dict)."""
    config = {"architecture": architecture, "architecture_options": dict(architecture_options or {}),
              "num_classes": len(classes), "classes": list(classes),
              "in_channels": int(in_channels), "image_size": int(image_size), "mean": list(mean), "std": list(std),
              "tta": bool(tta), "task": task, "page": int(page), "format": "state_dict", "weights": "model.pth",
              "torch_version": torch_version, "hyperparameters": dict(hyperparameters)}
    if initialised_from is not None:
        config["initialised_from"] = dict(initialised_from)
    if task == "multilabel":
        config["thresholds"] = [0.5] * len(classes)
    elif len(classes) == 2 and positive[0] is not None:
        config.update(positive_class=classes[positive[0]], positive_index=int(positive[0]),
                      positive_class_from=positive[1])
    return config


def with_decisions(config, decisions):
    """The config with what evaluation.fit_decisions chose on val (temperature, threshold or thresholds)."""
    out = dict(config, temperature=decisions.temperature, threshold_rule=decisions.rule)
    if decisions.threshold is not None:
        out["threshold"] = decisions.threshold
    if decisions.thresholds is not None:
        out["thresholds"] = list(decisions.thresholds)
    return out


def write(model_dir, config):
    atomic_write_json(os.path.join(model_dir, FILE), json_safe(config))


def read(model_dir):
    """The config in ``model_dir`` with defaults for optional keys; raises ModelLoadError saying what is wrong."""
    path = os.path.join(model_dir, FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path} ({exc}); deploy the model.tar.gz that train.py wrote") from exc
    return parse(text, path)


def parse(text, path=FILE):
    """The config in the JSON ``text`` (of ``path``, for messages) with defaults for optional keys; raises
    ModelLoadError saying what is wrong."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ModelLoadError(f"cannot read {path} ({exc}); deploy the model.tar.gz that train.py wrote") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} is not a JSON object; deploy the model.tar.gz that train.py wrote")
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ModelLoadError(f"{path} lacks {missing}; deploy the model.tar.gz that train.py wrote")
    if len(config["classes"]) != config["num_classes"]:
        raise ModelLoadError(f"{path} lists {len(config['classes'])} classes for num_classes={config['num_classes']}")
    config = {**OPTIONAL, **config}
    if config["task"] == "multilabel":
        config.setdefault("thresholds", [0.5] * config["num_classes"])
    elif config["num_classes"] == 2:
        config.setdefault("positive_index", 1)
        if config["positive_index"] not in (0, 1):
            raise ModelLoadError(f"{path} has positive_index={config['positive_index']!r}; it must be 0 or 1")
        config.setdefault("positive_class", config["classes"][config["positive_index"]])
    return config
