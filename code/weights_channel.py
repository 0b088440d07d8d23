"""The ``weights`` channel: an architecture's ImageNet weights for ``pretrained=true`` in a job without internet
(network isolation, a VPC without a route out). With the channel, nothing is downloaded; without it, torchvision's
own path (its cache, then download.pytorch.org) is tried and fails with one line naming the channel (model_def).

What the channel holds (``find``): torchvision's file under torchvision's name (``model_def.weights_file_name``:
``resnet18-f37072fd.pth``, what ``ResNet18_Weights.DEFAULT`` downloads), or one state-dict file under any name
(e.g. weights pretrained on other medical images).

What is checked (``load``), each refusal one ConfigError line:

* a file named as torchvision names weights of this architecture (any of its weights enum's files): the start of
  its SHA-256 must be the hex digits in its name (``torch.hub``'s ``HASH_REGEX``/``check_hash`` rule), so a corrupt,
  truncated or different file under that name is refused; a file named as torchvision names another
  architecture's weights is refused as such;
* ``torch.load(weights_only=True)``: a file holding Python objects (a pickled model, anything that would run code
  when loaded) is refused, never unpickled;
* the state dict: the file's tensors, or those under ``state_dict``/``model`` of a checkpoint dict; then the
  **prefix rule**: while every key starts with one of ``module.`` (DistributedDataParallel), ``model.`` (Lightning),
  ``backbone.`` or ``encoder.``, that prefix is stripped; DenseNet's old key names (``norm.1``) are renamed as
  torchvision renames them;
* keys and shapes against the architecture's ImageNet network (3 channels, 1,000 classes): every tensor but the
  classifier head's must be there with its shape, and no other (the head is made anew for the job's classes, so its
  keys may differ or be absent; BatchNorm's ``num_batches_tracked`` may be absent, as in torchvision's older files).
"""
import functools
import hashlib
import logging
import os
import pickle
import re

import torch

import model_def
from errors import ConfigError

logger = logging.getLogger("train")

HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX: the hash prefix in a torchvision file name
PREFIXES = ("module.", "model.", "backbone.", "encoder.")  # the prefix rule: stripped while every key has one
WRAPPERS = ("state_dict", "model")  # checkpoint dicts that hold the state dict under one of these keys
# torchvision.models.densenet._load_state_dict's pattern (and BatchNorm's counter, which its files lack)
DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
                              r"running_var|num_batches_tracked))$")
UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\. Please use|\n\n|$)", re.DOTALL)


def torchvision_files():
    """``{file name: architecture}`` of every weights file torchvision publishes for the registered architectures
    (all members of each weights enum; resnet18_small shares resnet18's)."""
    files = {}
    for name in model_def.TORCHVISION:
        for weights in model_def.weights_enum(name):
            files.setdefault(weights.url.rsplit("/", 1)[-1], model_def.TORCHVISION[name][0])
    return files


def find(folder, name):
    """The weights file of architecture ``name`` in the channel ``folder``: torchvision's file when it is there, else
    the channel's only file. ConfigError when it holds none, several others, or a format torch cannot read."""
    files = sorted(os.path.relpath(os.path.join(d, f), folder) for d, dirs, names in os.walk(folder)
                   for f in names if not f.startswith(".")) if os.path.isdir(folder) else []
    expected = model_def.weights_file_name(name)
    if not files:
        raise ConfigError(f"the weights channel {folder} holds no file; put the {name} weights there (torchvision's "
                          f"{expected})")
    chosen = next((f for f in files if os.path.basename(f) == expected), None)
    if chosen is None and len(files) > 1:
        raise ConfigError(f"the weights channel holds {len(files)} files ({', '.join(files[:4])}) and none is "
                          f"torchvision's {expected}; put one weights file there")
    chosen = chosen or files[0]
    if chosen.lower().endswith((".tar.gz", ".tgz", ".tar")):
        raise ConfigError(f"the weights channel's {chosen} is a tarball; an earlier job's model.tar.gz goes in the "
                          "model channel (the model_uri of the job), and the weights channel takes one state-dict file")
    if chosen.lower().endswith(".safetensors"):
        raise ConfigError(f"the weights channel's {chosen} is a safetensors file, which the training image cannot "
                          "read; save its tensors as a state dict: torch.save(safetensors.torch.load_file(path), "
                          "'weights.pth')")
    others = [f for f in files if f != chosen]
    if others:
        logger.warning("weights channel: %s is used; %d other file(s) are not: %s", chosen, len(others),
                       ", ".join(others[:5]))
    return os.path.join(folder, chosen)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_name(path, name, digest):
    """What the file's name promises, checked: ``"torchvision"`` (its name is torchvision's for ``name`` and its
    SHA-256 starts with the name's hex) or ``"keys"`` (another name: its keys and shapes decide)."""
    file, owner = os.path.basename(path), torchvision_files().get(os.path.basename(path))
    if owner is None:
        return "keys"
    if owner != model_def.TORCHVISION[name][0]:
        raise ConfigError(f"the weights channel's {file} is torchvision's {owner} file, not {name}'s; put "
                          f"{model_def.weights_file_name(name)} there, or set model={owner}")
    prefix = HASH_REGEX.search(file).group(1)
    if not digest.startswith(prefix):
        raise ConfigError(f"the weights channel's {file} is not the file torchvision publishes under that name: its "
                          f"SHA-256 starts {digest[:len(prefix)]}, the name says {prefix} (a corrupt or incomplete "
                          "download, or another file renamed); download it again")
    return "torchvision"


def read_state_dict(path):
    """The tensors of a weights file, read with ``torch.load(weights_only=True)`` (never unpickling objects), from
    a bare state dict or a checkpoint dict's ``state_dict``/``model``. ConfigError for anything else."""
    file = os.path.basename(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a pickled object, or bytes the safe unpickler cannot read
        raise ConfigError(f"the weights file {file} is refused: torch.load(weights_only=True) reads tensors only and "
                          f"this file holds something else ({unpickler_reason(exc)}); a file that would run code "
                          "when loaded is never unpickled; save a state dict: torch.save(model.state_dict(), path)") \
            from exc
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, a zip that is not torch's
        raise ConfigError(f"the weights file {file} cannot be read by torch.load ({type(exc).__name__}: "
                          f"{str(exc).strip()[:200]}); give a state dict saved with torch.save") from exc
    for key in WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"the weights file {file} does not hold a state dict (a mapping of names to tensors); "
                          "save one with torch.save(model.state_dict(), path)")
    return dict(obj)


def unpickler_reason(exc):
    """The one reason in torch's long weights-only message (``Unsupported global: GLOBAL os.system ...``)."""
    found = UNPICKLER_REASON.search(str(exc))
    return " ".join((found.group(1) if found else type(exc).__name__).split())[:200]


def strip_prefixes(state):
    """The prefix rule (module docstring): ``(state without the shared prefixes, [prefixes stripped])``."""
    stripped = []
    while True:
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            return state, stripped
        state = {k[len(prefix):]: v for k, v in state.items()}
        stripped.append(prefix)


def rename_densenet_keys(state):
    return {(lambda m: m.group(1) + m.group(2) if m else k)(DENSENET_OLD_KEY.match(k)): v for k, v in state.items()}


@functools.lru_cache(maxsize=None)
def imagenet_shapes(name):
    """``{key: shape}`` of ``name``'s ImageNet network, built on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in model_def.imagenet_model(name).state_dict().items()}


def fit_backbone(state, name, file):
    """``state`` without the head's keys, after checking every other key and shape against ``name``'s ImageNet
    network; ConfigError naming what does not fit."""
    reference = imagenet_shapes(name)
    _, _, stem, head = model_def.TORCHVISION[name]
    is_head = lambda key: key.startswith(head + ".")  # noqa: E731
    optional = lambda key: is_head(key) or key.endswith("num_batches_tracked")  # noqa: E731
    missing = [k for k in reference if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in reference and not is_head(k)]
    if missing or unexpected:
        raise ConfigError(f"the weights file {file} does not fit {name}: {len(missing)} of its tensors are missing "
                          f"(e.g. {', '.join(missing[:2]) or '-'}) and {len(unexpected)} are not {name}'s (e.g. "
                          f"{', '.join(unexpected[:2]) or '-'}); give {name}'s weights (torchvision's "
                          f"{model_def.weights_file_name(name)}) or set model to the architecture they are for")
    stem_key = stem + ".weight"
    if stem_key in state and state[stem_key].ndim == 4 and state[stem_key].shape[1] != reference[stem_key][1]:
        raise ConfigError(f"the weights file {file}'s first convolution takes {state[stem_key].shape[1]} channel(s), "
                          f"ImageNet weights take {reference[stem_key][1]}: it is not an ImageNet backbone; to start "
                          "from an earlier model of this project give it as the model channel")
    wrong = [k for k in state if not is_head(k) and tuple(state[k].shape) != tuple(reference[k])]
    if wrong:
        raise ConfigError(f"the weights file {file} does not fit {name}: {len(wrong)} tensors have other shapes (e.g. "
                          f"{wrong[0]} {tuple(state[wrong[0]].shape)}, {name} has {tuple(reference[wrong[0]])}); give "
                          f"{name}'s weights or set model to the architecture they are for")
    return {k: v for k, v in state.items() if not is_head(k)}


def load(folder, name):
    """The weights channel's backbone state dict for architecture ``name`` and what was done, as a dict for the log
    and model_config.json's ``initialised_from``. ConfigError (one line) for anything refused."""
    return check_file(find(folder, name), name)


def check_file(path, name):
    """``load``'s checks of one weights file (the notebook runs them before it uploads one, medimg.weights)."""
    file, digest = os.path.basename(path), sha256(path)
    checked = check_name(path, name, digest)
    state, stripped = strip_prefixes(read_state_dict(path))
    if model_def.TORCHVISION[name][0] == "densenet121":
        state = rename_densenet_keys(state)
    backbone = fit_backbone(state, name, file)
    info = {"source": "weights channel", "file": file, "sha256": digest,
            "checked": ("SHA-256 starts with the hex in torchvision's file name, keys and shapes"
                        if checked == "torchvision" else "keys and shapes"),
            "prefixes_stripped": stripped, "tensors": len(backbone)}
    return backbone, info
