"""Helpers for train.py and inference.py: errors, labels, images and datasets, batch augmentation,
metrics, checkpoints, distributed training.

Only packages that the SageMaker PyTorch containers ship are used: torch, torchvision, numpy, pillow.
Nothing here reads the environment at import time.
"""
import glob
import io
import json
import logging
import math
import os
import random
import re
import tempfile
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

logger = logging.getLogger("train")

# ==================================================================================================
# Errors: a TrainingError's message is the one line that goes to /opt/ml/output/failure
# ==================================================================================================


class TrainingError(Exception):
    """A problem the user can fix. The message says what is wrong and what to do, on one line."""


class ConfigError(TrainingError):
    """Invalid hyperparameters or paths."""


class DataError(TrainingError):
    """Missing, malformed or inconsistent data or labels."""


class BadImageError(DataError):
    """One image that cannot be used (corrupt, truncated, too large)."""


class ImageTooLargeError(BadImageError):
    """An image with more pixels than allowed (a decompression bomb, or simply too large)."""


def one_line(message, limit=1000):
    """Collapse a message to a single line of at most ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_failure(output_dir, message):
    """Write the one-line failure reason where the SageMaker toolkit (and the job's FailureReason) reads it."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        atomic_write_text(os.path.join(output_dir, "failure"), one_line(message) + "\n")
    except OSError as exc:  # never let reporting hide the original error
        logger.error("could not write the failure file in %s: %s", output_dir, exc)


# ==================================================================================================
# Small I/O helpers
# ==================================================================================================


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; artefacts are read by other users and services
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_torch_save(obj, path):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def json_safe(value):
    """Floats that JSON cannot hold (nan, inf) become None; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# ==================================================================================================
# Seeding
# ==================================================================================================


def seed_everything(seed):
    """Seed Python, NumPy and torch (all devices)."""
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derived_seed(seed, epoch, rank=0):
    """A seed per (run seed, epoch, rank), so each epoch is reproducible on its own, resumed or not."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + int(rank) * 104_729) % (2**31 - 1)


def rng_state():
    """All RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ==================================================================================================
# Labels
# ==================================================================================================


def load_label_dict(path):
    """Read ``{"0": "normal", "1": "pneumonia"}`` (index -> class name) and return names in index order."""
    if not os.path.isfile(path):
        raise DataError(f"label_dict.json not found at {path}; put one next to train.py "
                        '(e.g. {"0": "normal", "1": "pneumonia"}) or pass --label-dict')
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"label_dict.json at {path} is not valid JSON ({exc}); "
                        'write it as {"0": "normal", "1": "pneumonia"}') from exc
    return parse_label_dict(raw, source=path)


def parse_label_dict(raw, source="label_dict.json"):
    shape = 'an object mapping indices 0..K-1 to class names, e.g. {"0": "normal", "1": "pneumonia"}'
    if not isinstance(raw, dict) or len(raw) < 2:
        raise DataError(f"{source} must be {shape}, with at least 2 classes")
    try:
        items = {int(k): v for k, v in raw.items()}
    except (TypeError, ValueError):
        raise DataError(f"{source} has a key that is not an integer index ({sorted(raw)}); it must be {shape}")
    if sorted(items) != list(range(len(items))):
        raise DataError(f"{source} indices must be 0..{len(items) - 1} without gaps, got {sorted(items)}; "
                        f"it must be {shape}")
    names = [items[i] for i in range(len(items))]
    for name in names:
        if not isinstance(name, str) or not name.strip() or name != os.path.basename(name) or name.startswith("."):
            raise DataError(f"{source} has an invalid class name {name!r}; names are non-empty folder names")
    if len(set(names)) != len(names):
        raise DataError(f"{source} has duplicate class names {names}; each class needs its own name")
    return names


def label_dict_json(classes):
    return {str(i): name for i, name in enumerate(classes)}


# ==================================================================================================
# Images on disk
# ==================================================================================================

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "P"}


def list_channel(root, classes, channel):
    """Return (paths, labels) of the images under ``root/<class name>/``, sorted for reproducibility.

    Hidden files and folders and files that are not images are ignored; a class folder that is not in
    ``classes`` is an error, as is a channel that is a file, missing, or holds no class folders.
    """
    if not os.path.exists(root):
        raise DataError(f"the {channel} channel folder {root} does not exist; give the {channel} channel "
                        f"as a folder of class folders (<{channel}>/<class name>/<image>)")
    if not os.path.isdir(root):
        raise DataError(f"the {channel} channel {root} is a single file, not a folder; upload a folder laid out "
                        f"as <{channel}>/<class name>/<image> and point the channel at that folder's prefix")
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    folders = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    if not folders:
        raise DataError(f"the {channel} channel {root} holds no class folders; lay it out as "
                        f"<{channel}>/<class name>/<image> with class names from label_dict.json {classes}")
    unknown = [f for f in folders if f not in classes]
    if unknown:
        raise DataError(f"class folder {unknown[0]!r} in {channel} is not in label_dict.json {classes}; "
                        "add it there or remove the folder")
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for folder in folders:
        found = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    found.append(os.path.join(dirpath, name))
        if not found:
            logger.warning("class folder %r in %s holds no images; it is ignored", folder, channel)
        paths += found
        labels += [index[folder]] * len(found)
    if not paths:
        raise DataError(f"the {channel} channel {root} holds no images (.png, .jpg, ...) in its class folders; "
                        "check that the upload put the images under <channel>/<class name>/")
    return paths, labels


def _to_uint8(arr):
    """Scale any integer or float array to uint8: 8-bit as is, wider ranges by their own min and max."""
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def open_image(fp, max_pixels):
    """Open an image with a decompression-bomb guard; raise BadImageError with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp)
            width, height = im.size
            if width * height > max_pixels:
                raise ImageTooLargeError(f"{width}x{height} pixels is above the limit of {max_pixels}")
            im.load()
            return im
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"too many pixels ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # PIL's ways of saying corrupt/truncated
        raise BadImageError(f"cannot decode ({type(exc).__name__}: {exc})") from exc


def image_to_array(im, channels, size):
    """PIL image of any mode and bit depth -> uint8 array (size, size, channels), resized with antialiasing."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        im = Image.fromarray(_to_uint8(np.asarray(im)), mode="L")
    if channels == 1:
        im = im.convert("L")
    elif im.mode != "RGB":
        im = im.convert("RGBA").convert("RGB") if im.mode == "P" else im.convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
    arr = np.array(im, dtype=np.uint8)  # a writable copy
    return arr[:, :, None] if arr.ndim == 2 else arr


def load_image_array(path, channels, size, max_pixels):
    with open_image(path, max_pixels) as im:
        return image_to_array(im, channels, size)


def probe_images(paths, max_pixels, limit=256):
    """Look at up to ``limit`` evenly spread images: (channels 1 or 3, most common size)."""
    step = max(1, len(paths) // limit)
    colour, sizes = False, Counter()
    for path in paths[::step][:limit]:
        try:
            with Image.open(path) as im:
                colour |= im.mode not in GRAY_MODES
                sizes[max(im.size)] += 1
        except Exception:  # noqa: BLE001 - a bad file is counted when the data is decoded
            continue
    if not sizes:
        raise DataError("none of the sampled training images could be opened; check the files are images")
    return (3 if colour else 1), sizes.most_common(1)[0][0]


# ==================================================================================================
# Datasets: decode once into a uint8 tensor when it fits, stream from disk otherwise
# ==================================================================================================


class ImageFileDataset(torch.utils.data.Dataset):
    """Decodes one image per item to a uint8 CHW tensor; a bad image gives label -1 (counted, then dropped)."""

    def __init__(self, paths, labels, channels, size, max_pixels):
        self.paths, self.labels = list(paths), list(labels)
        self.channels, self.size, self.max_pixels = channels, size, max_pixels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            arr = load_image_array(self.paths[i], self.channels, self.size, self.max_pixels)
            return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), self.labels[i]
        except BadImageError as exc:
            logger.warning("skipping %s: %s", self.paths[i], exc)
            return torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8), -1


def decode_all(dataset, workers):
    """Decode a whole ImageFileDataset with a thread pool: (uint8 NCHW tensor, int64 labels, bad paths)."""
    n = len(dataset)
    images = torch.empty(n, dataset.channels, dataset.size, dataset.size, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)

    def work(start, chunk=256):  # a range per task: a future per image costs ~1/3 of a small image's decode
        for i in range(start, min(start + chunk, n)):
            images[i], labels[i] = dataset[i]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(work, range(0, n, 256)))
    good = labels >= 0
    bad = [dataset.paths[i] for i in torch.nonzero(~good).flatten().tolist()]
    return images[good].contiguous(), labels[good], bad


def check_bad_fraction(bad, total, limit, channel):
    if bad and bad / max(total, 1) > limit:
        raise DataError(f"{bad} of {total} images in {channel} could not be read (corrupt, truncated, empty or too "
                        f"large), above max-bad-fraction={limit}; fix or remove them, or raise max-bad-fraction")
    if bad:
        logger.warning("%d of %d images in %s could not be read and were skipped", bad, total, channel)


def stratified_split(labels, fraction, seed):
    """Indices (train, val) holding out ``fraction`` of each class, reproducibly for a seed."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val_idx += idx[:k].tolist()
        train_idx += idx[k:].tolist()
    return sorted(train_idx), sorted(val_idx)


def channel_stats(images, limit=4096):
    """Per-channel mean and std of a uint8 NCHW tensor (a sample of it), on the 0..1 scale."""
    step = max(1, len(images) // limit)
    x = images[::step].float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(v, 5) for v in mean.tolist()], [round(v, 5) for v in std.tolist()]


# ==================================================================================================
# Preprocessing and batch augmentation (on whatever device the batch lives on)
# ==================================================================================================


def normalize(x, mean, std, memory_format=torch.contiguous_format):
    """Float NCHW on the 0..1 scale -> normalized, in the given memory format."""
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous(memory_format=memory_format)


def augment_batch(x, generator, *, hflip=True, vflip=False, degrees=10.0, scale=(0.9, 1.1),
                  translate=0.08, brightness=0.1, contrast=0.1):
    """Random affine (rotation, scale, translation, flips) and brightness/contrast, per sample, on a
    float batch in [0, 1]. One ``grid_sample`` for the whole batch; randomness drawn on the CPU from
    ``generator`` so results do not depend on the device."""
    n = x.shape[0]

    def uniform(lo, hi):
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    angle = uniform(-degrees, degrees) * (math.pi / 180)
    s = uniform(*scale)
    sx = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    sy = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if vflip else torch.ones(n)
    tx, ty = uniform(-translate, translate) * 2, uniform(-translate, translate) * 2
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos * sx, -sin * sy, tx], 1), torch.stack([sin * sx, cos * sy, ty], 1)], 1)
    b = uniform(-brightness, brightness).view(n, 1, 1, 1)
    c = uniform(1 - contrast, 1 + contrast).view(n, 1, 1, 1)
    params = torch.cat([theta.reshape(n, 6), b.reshape(n, 1), c.reshape(n, 1)], 1)
    if x.is_cuda:  # one page-locked copy: asynchronous, no host sync per step
        params = params.pin_memory()
    params = params.to(x.device, non_blocking=True)
    theta, b, c = params[:, :6].reshape(n, 2, 3), params[:, 6].reshape(n, 1, 1, 1), params[:, 7].reshape(n, 1, 1, 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean + b).clamp_(0, 1)


# ==================================================================================================
# Metrics (the MedMNIST evaluator's definitions, plus what clinicians read)
# ==================================================================================================


def roc_auc(is_positive, score):
    """Area under the ROC curve by the rank (Mann-Whitney) formula, ties counted half, as scikit-learn's."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(score, dtype=np.float64), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each distinct score
    rank_sum = average_rank[inverse][is_positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def compute_metrics(y_true, y_prob, positive_class=1):
    """Accuracy at argmax and AUC on softmax probabilities (binary: the positive column; more classes:
    macro one-vs-rest), sensitivity, specificity and the confusion matrix (rows true, columns predicted).
    NumPy only (checked against scikit-learn in the tests), so no process pays for importing sklearn."""
    y_true = np.asarray(y_true).astype(int)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    k = y_prob.shape[1]
    y_pred = y_prob.argmax(axis=1)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    present = np.unique(y_true)
    if len(present) < 2:
        auc = float("nan")
    elif k == 2:
        auc = roc_auc(y_true == positive_class, y_prob[:, positive_class])
    else:  # mean of per-class one-vs-rest AUCs over the classes present, as MedMNIST's getAUC
        auc = float(np.mean([roc_auc(y_true == c, y_prob[:, c]) for c in present]))
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    negatives = cm.sum() - support
    fp = cm.sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / support
        specificity = (negatives - fp) / negatives
    out = {"accuracy": float((y_pred == y_true).mean()), "auc": auc, "n": int(len(y_true)),
           "confusion_matrix": cm.tolist()}
    if k == 2:
        out["sensitivity"] = float(recall[positive_class])
        out["specificity"] = float(specificity[positive_class])
    else:
        out["sensitivity"] = float(np.nanmean(recall[support > 0]))
        out["specificity"] = float(np.nanmean(specificity[support > 0]))
        out["per_class_recall"] = [float(v) for v in recall]
    out["balanced_accuracy"] = float(np.nanmean(recall[support > 0]))
    return out


# ==================================================================================================
# Exponential moving average of weights
# ==================================================================================================


class ModelEma:
    """EMA of parameters and buffers; decay warms up as min(decay, (1 + t) / (10 + t))."""

    def __init__(self, model, decay):
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        floats, targets, others = [], [], []
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                floats.append(self.state[k])
                targets.append(v.detach())
            else:
                others.append((k, v))
        torch._foreach_lerp_(floats, targets, 1 - d)
        for k, v in others:
            self.state[k].copy_(v)

    def state_dict(self):
        return {"decay": self.decay, "updates": self.updates, "state": self.state}

    def load_state_dict(self, sd):
        self.decay, self.updates = sd["decay"], sd["updates"]
        for k, v in sd["state"].items():
            self.state[k].copy_(v)


# ==================================================================================================
# Checkpoints: atomic, last N kept, newest loadable one wins
# ==================================================================================================

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)-(\d+)\.pt$")


def list_checkpoints(folder):
    """Checkpoint files in ``folder``, newest first. ``checkpoint-EEEE-SSSSSS.pt`` holds the state after
    EEEE completed epochs and SSSSSS steps into the next one (non-zero only when a SIGTERM stopped it)."""
    if not folder or not os.path.isdir(folder):
        return []
    found = []
    for path in glob.glob(os.path.join(folder, "checkpoint-*.pt")):
        m = CHECKPOINT_PATTERN.match(os.path.basename(path))
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), path))
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(state, folder, epoch, step=0, keep=2):
    """Write atomically, then keep only the newest ``keep`` checkpoints."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"checkpoint-{epoch:04d}-{step:06d}.pt")
    atomic_torch_save(state, path)
    for old in list_checkpoints(folder)[keep:]:
        os.unlink(old)
    for stale in glob.glob(os.path.join(folder, ".tmp-*checkpoint-*.pt")):  # a process killed while writing
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    return path


def load_latest_checkpoint(folder, map_location="cpu"):
    """(state, path) of the newest checkpoint that loads, skipping broken ones with a warning; None if none."""
    for path in list_checkpoints(folder):
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
            if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
                raise ValueError("not a checkpoint written by train.py")
            return state, path
        except Exception as exc:  # noqa: BLE001 - truncated, corrupt or foreign files are skipped
            logger.warning("skipping unreadable checkpoint %s (%s: %s)", path, type(exc).__name__, exc)
    return None


# ==================================================================================================
# Distributed training (torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)
# ==================================================================================================


class DistInfo:
    def __init__(self, rank=0, local_rank=0, world_size=1):
        self.rank, self.local_rank, self.world_size = rank, local_rank, world_size

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def init_distributed(timeout_s, environ=None):
    """Join the process group when launched by torchrun with more than one process; else a single process."""
    import datetime

    import torch.distributed as dist

    environ = os.environ if environ is None else environ
    world = int(environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(environ["RANK"]), int(environ.get("LOCAL_RANK", "0")), world)
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    logger.info("distributed: backend=%s rank=%d/%d local_rank=%d", backend, info.rank, world, info.local_rank)
    return info


def all_reduce_sum(values, dist_info, device):
    """Sum a list of floats over all ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist_info.enabled:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t.tolist()


def gather_predictions(indices, probs, dist_info):
    """Reassemble every rank's (indices, probabilities) into full, ordered arrays on every rank."""
    if not dist_info.enabled:
        order = np.argsort(indices)
        return np.asarray(indices)[order], np.asarray(probs)[order]
    import torch.distributed as dist

    parts = [None] * dist_info.world_size
    dist.all_gather_object(parts, (np.asarray(indices), np.asarray(probs)))
    idx = np.concatenate([p[0] for p in parts])
    prob = np.concatenate([p[1] for p in parts])
    order = np.argsort(idx)
    return idx[order], prob[order]
