"""The ``model`` channel: an earlier job's model to start from (SageMaker's incremental training names this channel
``model``; SDK v2's ``Estimator(model_uri=...)`` makes it).

The channel holds the earlier job's ``model.tar.gz`` (one ``.tar.gz``, ``.tgz`` or ``.tar``), or its extracted files
(``model_config.json`` and the weights file it names, ``model.pth``). A tarball is read in memory and never
extracted: every member is checked first (a plain file or folder whose name stays inside the archive's folder: no
absolute name, no ``..`` that climbs out, no symbolic or hard link, no device or fifo), and one unsafe member refuses
the whole archive. The weights are read with ``torch.load(weights_only=True)``.

What follows from the earlier ``model_config.json`` (``compare``):

* another architecture, another first stage (smallcnn's stem stride follows the image size) or another number of
  colour channels: refused, one line naming the hyperparameter to set;
* the same classes (names and order) and task: **continue** from every weight, the head included;
* other classes or another task: **new head**: the backbone continues, the classifier head (model_def.HEADS) is made
  anew for this run's classes;
* the earlier normalisation (mean, std) is kept, as the network was trained on inputs normalised so.
"""
import dataclasses
import hashlib
import io
import logging
import os
import pickle
import posixpath
import tarfile

import torch

import model_config
import model_def
import weights_channel
from errors import ConfigError

logger = logging.getLogger("train")

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CONTINUE, NEW_HEAD = "continue", "new head"


@dataclasses.dataclass
class EarlierModel:
    """An earlier job's model: its config (model_config.json), its weights (a state dict), where it came from."""

    config: dict
    state: dict
    file: str
    sha256: str


def _refuse(file, why):
    raise ConfigError(f"the model channel's {file} is refused: {why}; give the model.tar.gz an earlier training job "
                      "wrote (nothing of it was extracted)")


def check_member(member, file):
    """Raise ConfigError unless ``member`` is a plain file or folder whose name stays inside the archive's folder."""
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        _refuse(file, f"its member {name!r} has an absolute name")
    if posixpath.normpath(name.replace("\\", "/")).split("/")[0] == "..":
        _refuse(file, f"its member {name!r} would land outside its folder")
    if member.issym() or member.islnk():
        _refuse(file, f"its member {name!r} is a {'symbolic' if member.issym() else 'hard'} link "
                      f"(to {member.linkname!r})")
    if not (member.isfile() or member.isdir()):
        _refuse(file, f"its member {name!r} is not a plain file or folder (a device, fifo or other)")


def read_tar(path):
    """``{normalised member name: bytes}`` of a tarball's files, after checking every member (``check_member``)."""
    file = os.path.basename(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                check_member(member, file)
            return {posixpath.normpath(m.name.replace("\\", "/")): tar.extractfile(m).read()
                    for m in members if m.isfile()}
    except (tarfile.TarError, OSError, EOFError) as exc:
        _refuse(file, f"it is not a readable tar archive ({type(exc).__name__}: {exc})")


def read_folder(folder):
    """``{relative name: bytes}`` of model_config.json and the weights file it names, from extracted files."""
    files = {}
    with open(os.path.join(folder, model_config.FILE), "rb") as fh:
        files[model_config.FILE] = fh.read()
    return files, folder


def find(folder):
    """``{name: bytes}`` of the earlier model's files and the name of what held them (a tarball or the folder)."""
    if os.path.isfile(os.path.join(folder, model_config.FILE)):
        return read_folder(folder)
    tars = sorted(f for f in os.listdir(folder) if f.lower().endswith(TAR_SUFFIXES) and not f.startswith(".")) \
        if os.path.isdir(folder) else []
    if len(tars) != 1:
        held = f"{len(tars)} tarballs ({', '.join(tars[:3])})" if tars else f"no model.tar.gz or {model_config.FILE}"
        raise ConfigError(f"the model channel {folder} holds {held}; give one earlier job's model.tar.gz (its S3 "
                          "URI, e.g. Estimator(model_uri=...)) or its extracted files")
    return read_tar(os.path.join(folder, tars[0])), os.path.join(folder, tars[0])


def read(folder):
    """The earlier model in the model channel ``folder`` (EarlierModel); ConfigError (one line) if refused."""
    files, source = find(folder)
    file = os.path.basename(source) if source != folder else f"{model_config.FILE} and its weights"
    if model_config.FILE not in files:
        _refuse(file, f"it has no {model_config.FILE}, so it is not a model train.py wrote")
    try:
        config = model_config.parse(files[model_config.FILE].decode("utf-8"), file)
    except (model_config.ModelLoadError, UnicodeDecodeError) as exc:
        _refuse(file, str(exc))
    weights = config["weights"]
    if "/" in weights or "\\" in weights or weights in ("", ".", ".."):
        _refuse(file, f"its {model_config.FILE} names the weights file {weights!r}, not a file beside it")
    if source == folder and os.path.isfile(os.path.join(folder, weights)):
        with open(os.path.join(folder, weights), "rb") as fh:
            files[weights] = fh.read()
    if weights not in files:
        _refuse(file, f"it has no {weights}, the weights its {model_config.FILE} names")
    data = files[weights]
    return EarlierModel(config=config, state=load_state(data, weights), file=file,
                        sha256=hashlib.sha256(data).hexdigest())


def load_state(data, name):
    """A state dict from ``data`` with ``torch.load(weights_only=True)``; ConfigError for anything else."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a pickled object, or bytes the safe unpickler cannot read
        raise ConfigError(f"the model channel's {name} is refused: torch.load(weights_only=True) reads tensors only "
                          f"and it holds something else ({weights_channel.unpickler_reason(exc)}); a file that would "
                          "run code when loaded is never unpickled; give the model.tar.gz an earlier training job "
                          "wrote") from exc
    except Exception as exc:  # noqa: BLE001 - truncated or not a torch file
        raise ConfigError(f"the model channel's {name} cannot be read by torch.load ({type(exc).__name__}); give the "
                          "model.tar.gz an earlier training job wrote") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"the model channel's {name} is not a state dict; give the model.tar.gz an earlier "
                          "training job wrote")
    return state


def compare(config, *, architecture, options, in_channels, classes, task):
    """``CONTINUE`` or ``NEW_HEAD`` for this run (module docstring); ConfigError when the earlier model cannot be the
    start."""
    earlier = config["architecture"]
    if earlier != architecture:
        raise ConfigError(f"the model channel holds a {earlier} model and this job trains model={architecture}; set "
                          f"model={earlier} to start from it, or leave the model channel out")
    if dict(config.get("architecture_options") or {}) != dict(options):
        raise ConfigError(f"the model channel's {earlier} model was built for {config['image_size']} px "
                          f"({config.get('architecture_options')}), this run's image size needs {options}; set "
                          f"image-size={config['image_size']}")
    if int(config["in_channels"]) != int(in_channels):
        raise ConfigError(f"the model channel's model takes {config['in_channels']} colour channel(s) and this run's "
                          f"images {in_channels}; set in-channels={config['in_channels']}")
    same = list(config["classes"]) == list(classes) and config.get("task", "multiclass") == task
    return CONTINUE if same else NEW_HEAD


def apply(model, earlier, mode, architecture):
    """Load the earlier weights into ``model``: all of them (continue) or all but the head's (new head)."""
    head = model_def.HEADS[architecture]
    state = earlier.state if mode == CONTINUE else {
        k: v for k, v in earlier.state.items() if not k.startswith(head + ".")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes
        raise ConfigError(f"the model channel's weights do not fit this {architecture} model (other shapes: saved by "
                          "another version of model_def.py?); give a model this code trained") from exc
    missing = [k for k in missing if mode == CONTINUE or not k.startswith(head + ".")]
    if missing or unexpected:
        raise ConfigError(f"the model channel's weights do not fit this {architecture} model (missing "
                          f"{missing[:2]}, unexpected {unexpected[:2]}); give a model this code trained")
    return [] if mode == CONTINUE else [head]


def describe(earlier, mode, classes, image_size):
    """What was done, for the log and model_config.json's ``initialised_from``."""
    config = earlier.config
    info = {"source": "model channel", "file": earlier.file, "sha256": earlier.sha256,
            "architecture": config["architecture"], "classes": list(config["classes"]),
            "image_size": config["image_size"], "mode": mode,
            "head": ("kept: the same classes" if mode == CONTINUE else
                     f"new: {len(classes)} outputs for {list(classes)} (the earlier model's classes were "
                     f"{list(config['classes'])})"),
            "normalisation": "the earlier model's mean and std", "mean": config["mean"], "std": config["std"]}
    if int(config["image_size"]) != int(image_size):
        info["note"] = f"the earlier model was trained at {config['image_size']} px, this run trains at {image_size}"
    return info
