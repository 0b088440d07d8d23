"""SageMaker script-mode entry point: train an image classifier on class-folder channels.

    python train.py --epochs 30 --batch-size 128 --lr 0.002 ...

Run by the SageMaker training toolkit (``python train.py --key value ...``, keys sorted, values from the
Estimator's ``hyperparameters``), by ``torchrun`` for multi-GPU/multi-node jobs, or by hand. Paths default
to the ``SM_*`` variables with local fallbacks. Every failure leaves one line in ``<SM_OUTPUT_DIR>/failure``
saying what is wrong and what to do, and a non-zero exit.

Outputs: ``<model-dir>/model.pth`` (state_dict of the best-on-validation weights), ``model_config.json``,
``label_dict.json`` and ``code/`` (inference.py and what it imports, so model.tar.gz deploys as is);
``<output-data-dir>/metrics.json``; checkpoints in ``<checkpoint-dir>`` when there is one.
"""
import argparse
import copy
import logging
import math
import os
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import model_def
import utils
from utils import ConfigError, DataError, TrainingError

logger = logging.getLogger("train")

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SAGEMAKER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
INFERENCE_FILES = ("inference.py", "model_def.py", "utils.py")
SIGTERM_EXIT_CODE = 143


# ==================================================================================================
# Hyperparameters
# ==================================================================================================
class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line, into the failure file) instead of exiting."""

    def error(self, message):
        raise ConfigError(f"invalid hyperparameter: {message}")


def str2bool(value):
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False, true/false, 1/0, yes/no), got {value!r}")


def _number(kind, low=None, low_inclusive=True, high=None):
    def parse(value):
        try:
            number = kind(value)
            if kind is float and not math.isfinite(number):
                raise ValueError
        except (TypeError, ValueError):
            what = "a whole number" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
        if low is not None and (number < low if low_inclusive else number <= low):
            raise argparse.ArgumentTypeError(f"must be {'>=' if low_inclusive else '>'} {low}, got {value!r}")
        if high is not None and number > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value!r}")
        return number

    parse.__name__ = kind.__name__
    return parse


def _env(environ, name, fallback):
    return environ.get(name) or fallback


def build_parser(environ):
    p = ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    h = p.add_argument_group("training")
    h.add_argument("--epochs", type=_number(int, 1), default=40)
    h.add_argument("--batch-size", type=_number(int, 1), default=128, help="per process (per GPU)")
    h.add_argument("--lr", type=_number(float, 0, low_inclusive=False), default=2e-3, help="peak learning rate")
    h.add_argument("--weight-decay", type=_number(float, 0), default=0.05)
    h.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    h.add_argument("--warmup-epochs", type=_number(float, 0), default=1.0)
    h.add_argument("--label-smoothing", type=_number(float, 0, high=0.5), default=0.0)
    h.add_argument("--class-weighting", choices=("none", "balanced"), default="none")
    h.add_argument("--patience", type=_number(int, 0), default=10,
                   help="epochs without val improvement before stopping; 0 turns early stopping off")
    h.add_argument("--ema", type=_number(float, 0, high=0.99999), default=0.995,
                   help="decay of the weight EMA used for validation and the saved model; 0 turns it off")
    h.add_argument("--seed", type=_number(int, 0), default=42)
    m = p.add_argument_group("model and data")
    m.add_argument("--model", choices=sorted(model_def.MODELS), default="smallcnn")
    m.add_argument("--pretrained", type=str2bool, default=False, help="ImageNet weights (torchvision models)")
    m.add_argument("--image-size", type=_number(int, 0), default=0, help="0: the training images' own size")
    m.add_argument("--in-channels", type=int, choices=(0, 1, 3), default=0, help="0: detect from the data")
    m.add_argument("--augment", type=str2bool, default=True)
    m.add_argument("--hflip", type=str2bool, default=True)
    m.add_argument("--vflip", type=str2bool, default=False)
    m.add_argument("--tta", type=str2bool, default=False, help="average predictions over flips at evaluation")
    m.add_argument("--val-fraction", type=_number(float, 0, low_inclusive=False, high=0.5), default=0.1,
                   help="held out of train (stratified, seeded) when there is no val channel")
    m.add_argument("--max-bad-fraction", type=_number(float, 0, high=1), default=0.01,
                   help="unreadable images tolerated (skipped and counted) before the job fails")
    m.add_argument("--max-image-pixels", type=_number(int, 1), default=64_000_000)
    m.add_argument("--cache-max-gb", type=_number(float, 0), default=8.0,
                   help="decode the data set once into memory when it fits, else stream it from disk")
    s = p.add_argument_group("speed")
    s.add_argument("--amp", type=str2bool, default=True,
                   help="mixed precision: bf16 (fp16 + GradScaler on older GPUs); bf16 on CPUs that support it")
    s.add_argument("--compile", type=str2bool, default=False, help="torch.compile the model")
    s.add_argument("--channels-last", type=str2bool, default=True)
    s.add_argument("--num-workers", type=_number(int, -1), default=-1,
                   help="data loader processes when streaming; -1: automatic")
    s.add_argument("--max-steps-per-epoch", type=_number(int, 0), default=0, help="0: the whole epoch")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--dist-timeout", type=_number(int, 10), default=600,
                   help="seconds a collective waits for a dead or stuck rank before the job fails")
    d = p.add_argument_group("paths (SageMaker sets these through SM_* variables)")
    d.add_argument("--model-dir", default=_env(environ, "SM_MODEL_DIR", "model"))
    d.add_argument("--train", default=_env(environ, "SM_CHANNEL_TRAIN", os.path.join("data", "train")))
    d.add_argument("--val", default=environ.get("SM_CHANNEL_VAL"))
    d.add_argument("--test", default=environ.get("SM_CHANNEL_TEST"))
    d.add_argument("--output-data-dir", default=_env(environ, "SM_OUTPUT_DATA_DIR", os.path.join("output", "data")))
    d.add_argument("--output-dir", default=_env(environ, "SM_OUTPUT_DIR", "output"))
    d.add_argument("--checkpoint-dir", default=None,
                   help=f"default: $SM_CHECKPOINT_DIR, else {SAGEMAKER_CHECKPOINT_DIR} when it exists")
    d.add_argument("--label-dict", default=os.path.join(HERE, "label_dict.json"))
    return p


def parse_args(argv=None, environ=None):
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = sorted(a for a in unknown if a.startswith("--")) or unknown
        valid = sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help")
        raise ConfigError(f"unknown hyperparameter {flags[0]}; valid ones are {', '.join(v[2:] for v in valid)}")
    if args.checkpoint_dir is None:
        args.checkpoint_dir = environ.get("SM_CHECKPOINT_DIR") or (
            SAGEMAKER_CHECKPOINT_DIR if os.path.isdir(SAGEMAKER_CHECKPOINT_DIR) else "")
    if args.pretrained and args.model == "smallcnn":
        raise ConfigError("invalid hyperparameter: smallcnn has no pretrained weights; set pretrained=false "
                          f"or choose one of {sorted(set(model_def.MODELS) - {'smallcnn'})}")
    return args


# ==================================================================================================
# Set-up
# ==================================================================================================
def setup_logging(rank=0):
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout, force=True)


def select_device(args, dist_info):
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda was asked for but no GPU is visible; use device=auto or a GPU instance")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", dist_info.local_rank)
    return torch.device("cpu")


def autocast_dtype(args, device):
    """bf16 where the hardware does it well, fp16 on older GPUs, None (fp32) when amp is off."""
    if not args.amp:
        return None
    if device.type == "cuda":  # native bf16 from Ampere (sm80) on; is_bf16_supported() also says yes to emulation
        return torch.bfloat16 if torch.cuda.get_device_properties(device).major >= 8 else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def check_writable(folder, what):
    try:
        os.makedirs(folder, exist_ok=True)
        utils.atomic_write_text(os.path.join(folder, ".write-test"), "ok")
        os.unlink(os.path.join(folder, ".write-test"))
    except OSError as exc:
        raise ConfigError(f"the {what} {folder} is not writable ({exc.strerror}); "
                          f"give a writable --{what.replace(' ', '-')} or fix its permissions") from exc


class GracefulStop:
    """SIGTERM (SageMaker's stop, spot reclaim, max_run) sets a flag the training loop checks after each step."""

    def __init__(self):
        self.requested = False
        self.signal_name = None
        try:
            signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not in the main thread (tests calling main() from a thread)
            pass

    def _handle(self, signum, frame):
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        logger.warning("received %s: finishing the current step, then checkpointing and exiting", self.signal_name)


# ==================================================================================================
# Data
# ==================================================================================================
class CachedSplit:
    """A split decoded once into a uint8 NCHW tensor (on the training device when it fits)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.bad = 0

    def __len__(self):
        return len(self.labels)

    def to(self, device):
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def batches(self, indices, batch_size, device, fill=False):
        index = torch.as_tensor(indices, dtype=torch.int64)
        on_images = index.to(self.images.device)  # one copy per epoch, not one per step
        pin = device.type == "cuda" and self.images.device.type == "cpu"
        for start in range(0, len(index), batch_size):
            i = on_images[start:start + batch_size]
            x, y = self.images.index_select(0, i), self.labels.index_select(0, i)
            if pin:  # page-locked, so that the copies to the GPU are asynchronous
                x, y = x.pin_memory(), y.pin_memory()
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), index[start:start + batch_size]


class StreamSplit:
    """A split too large for memory: decoded from disk every epoch by DataLoader workers.

    Unreadable images are only found here, while reading: ``read`` and ``bad`` count them in this process.
    Evaluation drops them. Training (``fill=True``) keeps every batch full instead, so that each rank takes the
    same number of steps (DDP and the stop check are collectives): a bad image is replaced by a readable one of
    the same batch, and a batch with none readable by the previous batch.
    """

    def __init__(self, dataset, workers, pin_memory):
        self.dataset, self.workers, self.pin_memory = dataset, workers, pin_memory
        self.labels = torch.as_tensor(dataset.labels)
        self.read = self.bad = 0
        self._last = None

    def __len__(self):
        return len(self.dataset)

    def batches(self, indices, batch_size, device, fill=False):
        loader = torch.utils.data.DataLoader(
            _Indexed(self.dataset), batch_size=batch_size, sampler=list(indices), num_workers=self.workers,
            pin_memory=self.pin_memory, persistent_workers=False, prefetch_factor=4 if self.workers else None)
        for x, y, idx in loader:
            ok = y >= 0
            self.read += len(y)
            n_bad = len(y) - int(ok.sum())
            if n_bad:
                self.bad += n_bad
                if not fill:
                    x, y, idx = x[ok], y[ok], idx[ok]
                elif n_bad < len(y):
                    good = torch.nonzero(ok).flatten()
                    take = torch.where(ok, torch.arange(len(y)), good[torch.arange(len(y)) % len(good)])
                    x, y, idx = x[take], y[take], idx[take]
                elif self._last is not None:
                    x, y, idx = self._last
                else:
                    raise DataError(f"none of the {len(y)} images of the first training batch could be read; "
                                    "check the files of the train channel")
            if fill:
                self._last = (x, y, idx)
            if len(y):
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), idx


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y, i


class Data:
    def __init__(self, train, val, test, channels, size, mean, std, streamed):
        self.train, self.val, self.test = train, val, test
        self.channels, self.size, self.mean, self.std, self.streamed = channels, size, mean, std, streamed


def _channel_path(path, name, required):
    if path and os.path.exists(path):
        return path
    if path and required is None:  # given explicitly (argument or SM_CHANNEL_*) but missing
        raise DataError(f"the {name} channel {path} does not exist; check the channel's S3 prefix or the path")
    if required:
        raise DataError(f"no training data: the train channel {path} does not exist; pass a 'train' channel "
                        "(fit({'train': 's3://...'})) or --train PATH laid out as <train>/<class name>/<image>")
    return None


def load_data(args, classes, device, dist_info):
    """Read the channels, decode once into memory when they fit (else stream), hold out val if needed."""
    # utils.open_image checks max-image-pixels from the header before decoding; Pillow's own fixed 89 Mpx check
    # would otherwise refuse what the user allowed, with another message
    utils.Image.MAX_IMAGE_PIXELS = None
    train_paths, train_labels = utils.list_channel(_channel_path(args.train, "train", True), classes, "train")
    val_dir = _channel_path(args.val, "val", None) if args.val else None
    test_dir = _channel_path(args.test, "test", None) if args.test else None
    val_paths, val_labels = utils.list_channel(val_dir, classes, "val") if val_dir else (None, None)
    test_paths, test_labels = utils.list_channel(test_dir, classes, "test") if test_dir else (None, None)

    channels, size = utils.probe_images(train_paths, args.max_image_pixels)
    channels = args.in_channels or channels
    size = args.image_size or size
    if val_paths is None:
        tr, va = utils.stratified_split(train_labels, args.val_fraction, args.seed)
        val_paths, val_labels = [train_paths[i] for i in va], [train_labels[i] for i in va]
        train_paths, train_labels = [train_paths[i] for i in tr], [train_labels[i] for i in tr]
        logger.info("no val channel: held out %d of %d training images (val-fraction=%s, stratified)",
                    len(val_paths), len(val_paths) + len(train_paths), args.val_fraction)
    missing = [classes[c] for c in range(len(classes)) if c not in set(train_labels)]
    if missing:
        raise DataError(f"train has no images of class {missing[0]!r} from label_dict.json {classes}; add images "
                        "of every class, or remove classes that have none from label_dict.json")

    total = sum(len(p) for p in (train_paths, val_paths, test_paths or []))
    nbytes = total * channels * size * size
    streamed = nbytes > args.cache_max_gb * 1e9
    workers = args.num_workers if args.num_workers >= 0 else (min(8, os.cpu_count() or 1) if streamed else 0)
    splits = []
    for name, paths, labels in (("train", train_paths, train_labels), ("val", val_paths, val_labels),
                                ("test", test_paths, test_labels)):
        if paths is None:
            splits.append(None)
            continue
        ds = utils.ImageFileDataset(paths, labels, channels, size, args.max_image_pixels)
        if streamed:
            splits.append(StreamSplit(ds, workers, pin_memory=device.type == "cuda"))
            continue
        images, labs, bad = utils.decode_all(ds, workers=max(2, os.cpu_count() or 1))
        utils.check_bad_fraction(len(bad), len(paths), args.max_bad_fraction, name)
        if len(labs) == 0:
            raise DataError(f"none of the {len(paths)} images in {name} could be read; check the files")
        split = CachedSplit(images, labs)
        split.bad = len(bad)
        splits.append(split)
    train, val, test = splits
    if len(val) == 0:
        raise DataError("the validation set is empty; add a val channel or raise val-fraction")
    if device.type == "cuda" and not streamed:
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes < 0.25 * free:
            for split in (train, val, test):
                if split is not None:
                    split.to(device)
    if args.pretrained:
        mean = IMAGENET_MEAN if channels == 3 else [float(np.mean(IMAGENET_MEAN))]
        std = IMAGENET_STD if channels == 3 else [float(np.mean(IMAGENET_STD))]
    elif streamed:
        sample = [train.dataset[i][0] for i in range(0, len(train), max(1, len(train) // 1024))]
        mean, std = utils.channel_stats(torch.stack(sample))
    else:
        mean, std = utils.channel_stats(train.images.cpu())
    logger.info("data: train=%d val=%d test=%s | %d channel(s), %dx%d px, %s (%.1f MB as uint8) | classes %s",
                len(train), len(val), len(test) if test is not None else "none", channels, size, size,
                "streamed from disk" if streamed else "cached in memory", nbytes / 1e6, classes)
    return Data(train, val, test, channels, size, mean, std, streamed)


# ==================================================================================================
# Model, optimizer, schedule
# ==================================================================================================
def build_model(args, data, num_classes, device, dist_info):
    try:
        raw = model_def.create_model(args.model, num_classes, data.channels, args.pretrained)
    except ValueError as exc:
        raise ConfigError(f"invalid hyperparameter: {exc}") from exc
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from exc
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    raw = raw.to(device, memory_format=memory_format)
    model = raw
    if dist_info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)
    return raw, model


def build_optimizer(args, model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms and biases
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # on a GPU: one fused kernel per step, and with a GradScaler no host sync to check for inf/nan
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True, **fused)
    return torch.optim.AdamW(groups, lr=args.lr, **fused)


def build_scheduler(args, optimizer, steps_per_epoch):
    """Linear warm-up, then cosine decay to 1% of the peak, stepped every batch."""
    total = max(1, args.epochs * steps_per_epoch)
    warmup = min(int(args.warmup_epochs * steps_per_epoch), total - 1)

    def factor(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        t = (step - warmup) / max(1, total - warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def class_weights(labels, num_classes, mode, device):
    if mode == "none":
        return None
    counts = torch.bincount(torch.as_tensor(labels).cpu(), minlength=num_classes).double().clamp_min(1)
    return (counts.sum() / (num_classes * counts)).float().to(device)


def train_indices(n, epoch, args, dist_info):
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=dist_info.world_size, rank=dist_info.rank,
                                                  shuffle=True, seed=args.seed, drop_last=False)
    sampler.set_epoch(epoch)
    return list(sampler)


def steps_in_epoch(n_indices, batch_size, max_steps):
    steps = max(1, n_indices // batch_size)  # drop the last partial batch; one batch if the data is smaller
    return min(steps, max_steps) if max_steps else steps


# ==================================================================================================
# One epoch of training, one evaluation
# ==================================================================================================
class NonFiniteLoss(TrainingError):
    pass


def train_one_epoch(model, raw, data, optimizer, scheduler, scaler, ema, criterion, epoch, args, device, amp_dtype,
                    dist_info, stopper, resume_step=0, partial=None):
    """Train one epoch, starting after ``resume_step`` batches (a mid-epoch resume). Returns a dict."""
    model.train()
    indices = train_indices(len(data.train), epoch, args, dist_info)
    bs = min(args.batch_size, len(indices))
    steps = steps_in_epoch(len(indices), bs, args.max_steps_per_epoch)
    indices = indices[:steps * bs]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    gen = torch.Generator()
    if partial is None:
        seed = utils.derived_seed(args.seed, epoch, dist_info.rank)
        utils.seed_everything(seed)
        gen.manual_seed(seed + 1)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
    else:
        gen.set_state(partial["generator"])
        loss_sum = torch.tensor(partial["loss_sum"], dtype=torch.float64, device=device)
        seen = partial["seen"]
    mean, std = (torch.tensor(v, device=device) for v in (data.mean, data.std))  # once: on a GPU, a blocking copy
    start_time, step = time.perf_counter(), resume_step
    images_timed = 0
    read_before, bad_before = getattr(data.train, "read", 0), data.train.bad
    for x, y, _ in data.train.batches(indices[resume_step * bs:], bs, device, fill=True):
        x = x.float().div_(255)
        if args.augment:
            x = utils.augment_batch(x, gen, hflip=args.hflip, vflip=args.vflip)
        x = utils.normalize(x, mean, std, memory_format)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(raw)
        loss_sum += loss.detach().double() * len(y)
        seen += len(y)
        images_timed += len(y)
        step += 1
        if stop_now(stopper, dist_info, step, device):
            break
    elapsed = time.perf_counter() - start_time
    read, bad = getattr(data.train, "read", 0) - read_before, data.train.bad - bad_before  # streamed only
    total_loss, total_seen, total_timed, total_read, total_bad = utils.all_reduce_sum(
        [loss_sum.item(), seen, images_timed, read, bad], dist_info, device)
    return {"train_loss": total_loss / max(total_seen, 1), "images_per_sec": total_timed / max(elapsed, 1e-9),
            "images_read": int(total_read), "bad_images": int(total_bad),
            "steps": step, "steps_in_epoch": steps, "completed": step >= steps,
            "loss_sum": loss_sum.item(), "seen": seen, "generator": gen.get_state()}


def stop_now(stopper, dist_info, step, device):
    """Whether to leave the epoch: a local SIGTERM, or (every 10 steps, in sync) any rank's."""
    if not dist_info.enabled:
        return stopper.requested
    if step % 10:
        return False
    flag = torch.tensor([1.0 if stopper.requested else 0.0], device=device)
    import torch.distributed as dist

    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    stopper.requested = bool(flag.item())
    return stopper.requested


@torch.no_grad()
def predict(model, split, data, args, device, amp_dtype, dist_info):
    """Softmax probabilities for the whole split (each rank a shard, gathered). Returns (labels, probs)."""
    model.eval()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    indices = list(range(dist_info.rank, len(split), dist_info.world_size))
    all_idx, all_prob = [], []
    mean, std = (torch.tensor(v, device=device) for v in (data.mean, data.std))
    for x, _, idx in split.batches(indices, max(args.batch_size, 256), device):
        x = utils.normalize(x.float().div_(255), mean, std, memory_format)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            prob = torch.softmax(model(x).float(), dim=1)
            if args.tta and args.hflip:
                prob = (prob + torch.softmax(model(torch.flip(x, dims=[3])).float(), dim=1)) / 2
        all_idx.append(idx.numpy())
        all_prob.append(prob.cpu().numpy())
    idx = np.concatenate(all_idx) if all_idx else np.zeros(0, dtype=np.int64)
    prob = np.concatenate(all_prob) if all_prob else np.zeros((0, 2), dtype=np.float32)
    idx, prob = utils.gather_predictions(idx, prob, dist_info)
    labels = split.labels.cpu().numpy()[idx]
    return labels, prob


def evaluate(model, split, data, args, device, amp_dtype, dist_info, positive_class, keep_predictions=False):
    # fp32 whatever amp says: the reported metrics are what the fp32 model in model.tar.gz gives when deployed
    labels, prob = predict(model, split, data, args, device, None, dist_info)
    if len(labels) < len(split):  # streamed: the unreadable images were found and dropped while reading
        name = "val" if split is data.val else "test"
        utils.check_bad_fraction(len(split) - len(labels), len(split), args.max_bad_fraction, name)
        if not len(labels):
            raise DataError(f"none of the {len(split)} images in {name} could be read; check the files")
    metrics = utils.compute_metrics(labels, prob, positive_class=positive_class)
    p = np.clip(prob[np.arange(len(labels)), labels], 1e-12, 1.0)
    metrics["loss"] = float(-np.log(p).mean())
    if keep_predictions:  # per-sample probabilities: ROC curves and error analysis without the model
        metrics["predictions"] = {"labels": labels.tolist(), "probabilities": np.round(prob, 6).tolist()}
    return metrics


# ==================================================================================================
# Checkpoints and artefacts
# ==================================================================================================
def fingerprint(args, data, num_classes):
    """What a checkpoint must match to be resumed."""
    return {"model": args.model, "num_classes": num_classes, "in_channels": data.channels,
            "image_size": data.size}


def make_checkpoint(epoch, step, raw, optimizer, scheduler, scaler, ema, state, fp, partial=None):
    return {"epoch": epoch, "step": step, "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None, "train_state": state, "fingerprint": fp,
            "rng": utils.rng_state(), "partial": partial}


def save_model_artifacts(model_dir, best_state, model_config, classes):
    """model.pth, model_config.json, label_dict.json and code/ for inference, each written atomically."""
    utils.atomic_torch_save(best_state, os.path.join(model_dir, "model.pth"))
    utils.atomic_write_json(os.path.join(model_dir, "model_config.json"), model_config)
    utils.atomic_write_json(os.path.join(model_dir, "label_dict.json"), utils.label_dict_json(classes))
    if os.path.isfile(os.path.join(HERE, "inference.py")):
        code_dir = os.path.join(model_dir, "code")
        os.makedirs(code_dir, exist_ok=True)
        for name in INFERENCE_FILES:
            shutil.copyfile(os.path.join(HERE, name), os.path.join(code_dir, name))


def model_config(args, data, classes):
    return {"architecture": args.model, "num_classes": len(classes), "in_channels": data.channels,
            "image_size": data.size, "mean": data.mean, "std": data.std, "classes": classes,
            "tta": bool(args.tta and args.hflip), "format": "state_dict", "weights": "model.pth",
            "torch_version": torch.__version__.split("+")[0],
            "hyperparameters": {k: v for k, v in vars(args).items()
                                if k not in ("model_dir", "train", "val", "test", "output_data_dir", "output_dir",
                                             "checkpoint_dir", "label_dict")}}


def epoch_line(epoch, train_stats, val, lr):
    return (f"epoch={epoch} train_loss={train_stats['train_loss']:.4f} val_loss={val['loss']:.4f} "
            f"val_auc={val['auc']:.4f} val_acc={val['accuracy']:.4f} lr={lr:.6g} "
            f"images_per_sec={train_stats['images_per_sec']:.1f}")


def selection_score(val):
    return val["auc"] if math.isfinite(val["auc"]) else -val["loss"]


# ==================================================================================================
# Main
# ==================================================================================================
def run(args):
    stopper = GracefulStop()  # first: a SIGTERM while the data loads still ends in a clean stop
    dist_info = utils.init_distributed(args.dist_timeout)
    setup_logging(dist_info.rank)
    device = select_device(args, dist_info)
    amp_dtype = autocast_dtype(args, device)
    classes = utils.load_label_dict(args.label_dict)
    positive_class = 1 if len(classes) == 2 else None
    if dist_info.is_main:
        check_writable(args.model_dir, "model dir")
        check_writable(args.output_data_dir, "output data dir")
        if args.checkpoint_dir:
            check_writable(args.checkpoint_dir, "checkpoint dir")
    logger.info("device=%s amp=%s world_size=%d torch=%s", device, amp_dtype, dist_info.world_size, torch.__version__)

    data = load_data(args, classes, device, dist_info)
    utils.seed_everything(args.seed)  # the initial weights: the same seed gives the same model
    raw, model = build_model(args, data, len(classes), device, dist_info)
    eval_model = copy.deepcopy(raw) if args.ema > 0 else raw
    ema = utils.ModelEma(raw, args.ema) if args.ema > 0 else None
    optimizer = build_optimizer(args, raw)
    n_per_rank = math.ceil(len(data.train) / dist_info.world_size)
    steps_per_epoch = steps_in_epoch(n_per_rank, min(args.batch_size, n_per_rank), args.max_steps_per_epoch)
    scheduler = build_scheduler(args, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    weight = class_weights(data.train.labels, len(classes), args.class_weighting, device)
    criterion = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=args.label_smoothing)
    fp = fingerprint(args, data, len(classes))
    config = model_config(args, data, classes)

    state = {"best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "best_val": None}
    best_state = None
    start_epoch, resume_step, partial = 1, 0, None
    if args.checkpoint_dir:
        loaded = utils.load_latest_checkpoint(args.checkpoint_dir)
        if loaded:
            ckpt, path = loaded
            if ckpt["fingerprint"] != fp:
                raise ConfigError(f"the checkpoint dir {args.checkpoint_dir} holds checkpoints of another model "
                                  f"({ckpt['fingerprint']}, this run is {fp}); use an empty checkpoint dir or "
                                  "the same model, image size and classes")
            try:
                raw.load_state_dict(ckpt["model"])
            except RuntimeError as exc:  # same name, other shapes: a checkpoint from another version of the code
                raise ConfigError(f"the checkpoint {path} does not fit this {args.model} model (its weights have "
                                  "other shapes: saved by another version of model_def.py?); use an empty "
                                  "checkpoint dir, or the code that wrote it") from exc
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if scheduler.base_lrs[0] != args.lr:  # a lower lr after a non-finite loss must apply to the resumed run
                logger.warning("lr %g replaces the checkpoint's %g from here on", args.lr, scheduler.base_lrs[0])
                scheduler.base_lrs = [args.lr] * len(optimizer.param_groups)
                for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
                    group["initial_lr"], group["lr"] = args.lr, args.lr * factor(scheduler.last_epoch)
            if scaler is not None and ckpt["scaler"]:
                scaler.load_state_dict(ckpt["scaler"])
            if ema is not None and ckpt["ema"]:
                ema.load_state_dict(ckpt["ema"])
            state = ckpt["train_state"]
            best_state = state.pop("best_model", None)
            start_epoch, resume_step, partial = ckpt["epoch"] + 1, ckpt["step"], ckpt["partial"]
            if partial is not None and dist_info.is_main:
                utils.set_rng_state(ckpt["rng"])
            elif partial is not None:  # other ranks: reproducible, if not identical, continuation
                utils.seed_everything(utils.derived_seed(args.seed, start_epoch, dist_info.rank) + resume_step)
                partial = dict(partial, generator=torch.Generator().manual_seed(resume_step).get_state())
            logger.info("resumed from %s: %d epoch(s) done%s", path, ckpt["epoch"],
                        f", {resume_step} step(s) into epoch {start_epoch}" if resume_step else "")

    def save_checkpoint(epoch, step, partial_state=None):
        if dist_info.is_main and args.checkpoint_dir:
            ck_state = dict(state, best_model=best_state)
            ck = make_checkpoint(epoch, step, raw, optimizer, scheduler, scaler, ema, ck_state, fp, partial_state)
            return utils.save_checkpoint(ck, args.checkpoint_dir, epoch, step)
        return None

    def save_artifacts():
        """On a stop or a failure: the best model so far, unless it predates this run and the model dir already
        holds a model (a stopped or failing run never rewrites what an earlier run saved)."""
        improved_here = state["best_epoch"] >= start_epoch
        if dist_info.is_main and best_state is not None and (
                improved_here or not os.path.exists(os.path.join(args.model_dir, "model.pth"))):
            save_model_artifacts(args.model_dir, best_state, config, classes)

    early_stopped = args.patience and state["bad_epochs"] >= args.patience
    epoch = start_epoch
    while epoch <= args.epochs and not early_stopped:
        stats = train_one_epoch(model, raw, data, optimizer, scheduler, scaler, ema, criterion, epoch, args, device,
                                amp_dtype, dist_info, stopper, resume_step, partial)
        resume_step, partial = 0, None
        if not math.isfinite(stats["train_loss"]):
            save_artifacts()
            kept = (f"the best model so far (epoch {state['best_epoch']}) is in {args.model_dir}"
                    if best_state is not None else "no model was saved")
            if args.checkpoint_dir and epoch > 1:
                kept += (f"; the checkpoint of epoch {epoch - 1} was kept: run again with the same checkpoint dir "
                         "and a lower lr to resume from it")
            raise NonFiniteLoss(
                f"the training loss became {stats['train_loss']} in epoch {epoch}; lower lr (now {args.lr}) or "
                f"turn amp off{', or use class-weighting=none' if args.class_weighting != 'none' else ''}; {kept}")
        if not stats["completed"]:  # SIGTERM: save where we are, exactly, then exit
            path = save_checkpoint(epoch - 1, stats["steps"], {
                "loss_sum": stats["loss_sum"], "seen": stats["seen"], "generator": stats["generator"]})
            save_artifacts()
            best = (f"the best model so far (epoch {state['best_epoch']}) is in {args.model_dir}"
                    if best_state is not None else "no epoch had finished, so no model was saved")
            msg = (f"training stopped by {stopper.signal_name or 'SIGTERM'} during epoch {epoch} after "
                   f"{stats['steps']} of {stats['steps_in_epoch']} steps; checkpoint {path or '(no checkpoint dir)'}"
                   f"; {best}; run again with the same checkpoint dir to resume")
            logger.warning(msg)
            raise _Stopped(msg)
        if stats["bad_images"]:  # streamed: unreadable images are only found while reading, every epoch
            utils.check_bad_fraction(stats["bad_images"], stats["images_read"], args.max_bad_fraction, "train")
        if ema is not None:
            eval_model.load_state_dict(ema.state)
        val = evaluate(eval_model, data.val, data, args, device, amp_dtype, dist_info, positive_class)
        lr = optimizer.param_groups[0]["lr"]
        logger.info(epoch_line(epoch, stats, val, lr))
        state["history"].append({"epoch": epoch, "train_loss": stats["train_loss"], "val_loss": val["loss"],
                                 "val_auc": val["auc"], "val_acc": val["accuracy"], "lr": lr,
                                 "images_per_sec": stats["images_per_sec"]})
        score = selection_score(val)
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0, best_val=val)
            best_state = {k: v.detach().cpu().clone() for k, v in eval_model.state_dict().items()}
            # now, not only at the end: the real toolkit does not pass SageMaker's SIGTERM on to train.py, so a
            # stopped, timed-out or reclaimed job must already hold its best model when it is killed
            save_artifacts()
        else:
            state["bad_epochs"] += 1
        save_checkpoint(epoch, 0)
        early_stopped = bool(args.patience and state["bad_epochs"] >= args.patience)
        if early_stopped:
            logger.info("early stopping: no val improvement for %d epochs (patience=%d); best epoch %d",
                        state["bad_epochs"], args.patience, state["best_epoch"])
        if stop_now(stopper, dist_info, 0, device):  # every rank leaves together, even if one got the signal late
            save_artifacts()
            raise _Stopped(f"training stopped by {stopper.signal_name or 'SIGTERM'} after epoch {epoch}; run again "
                           "with the same checkpoint dir to resume")
        epoch += 1

    finish(args, data, classes, eval_model, best_state, state, config, device, amp_dtype, dist_info, positive_class)


def finish(args, data, classes, eval_model, best_state, state, config, device, amp_dtype, dist_info, positive_class):
    """Evaluate the best weights on val and test, write the model artefacts and metrics.json."""
    eval_model.load_state_dict(best_state)
    val = evaluate(eval_model, data.val, data, args, device, amp_dtype, dist_info, positive_class)
    metrics = {"val": val, "history": state["history"], "best_epoch": state["best_epoch"], "classes": classes,
               "config": config}
    if data.test is not None:
        test = evaluate(eval_model, data.test, data, args, device, amp_dtype, dist_info, positive_class,
                        keep_predictions=True)
        metrics["test_predictions"] = test.pop("predictions")
        metrics["test"] = test
        logger.info("test_loss=%.4f test_acc=%.4f test_auc=%.4f test_sensitivity=%.4f test_specificity=%.4f",
                    test["loss"], test["accuracy"], test["auc"], test["sensitivity"], test["specificity"])
    if dist_info.is_main:
        save_model_artifacts(args.model_dir, best_state, config, classes)
        utils.atomic_write_json(os.path.join(args.output_data_dir, "metrics.json"), utils.json_safe(metrics))
        logger.info("best epoch %d: val_auc=%.4f val_acc=%.4f; model saved to %s, metrics to %s", state["best_epoch"],
                    val["auc"], val["accuracy"], args.model_dir, os.path.join(args.output_data_dir, "metrics.json"))


class _Stopped(Exception):
    """Raised after a SIGTERM once everything is saved."""


def collective_failure(exc):
    """The failure line for a collective that failed because another process died or hung, else None."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    words = ("gloo", "nccl", "connection", "timed out")
    if not (isinstance(exc, dist.DistError) or any(w in text.lower() for w in words)):
        return None
    return (f"a collective failed on rank {dist.get_rank()} of {dist.get_world_size()}: another training process "
            f"died or stopped answering ({utils.one_line(text, 240)}); the other ranks' or hosts' logs say why "
            "(often out of memory: lower batch-size); a hung rank fails the job after dist-timeout seconds; run "
            "again with the same checkpoint dir to resume from the last epoch")


def main(argv=None):
    setup_logging()
    output_dir = os.environ.get("SM_OUTPUT_DIR") or "output"
    try:
        args = parse_args(argv)
        output_dir = args.output_dir
        run(args)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank done before any tears its connections down: a rank that destroyed its gloo group while
            # rank 0 was still saving was seen to abort at exit ("terminate called without an active exception")
            torch.distributed.barrier()
        return 0
    except _Stopped as exc:
        utils.write_failure(output_dir, str(exc))
        return SIGTERM_EXIT_CODE
    except TrainingError as exc:
        logger.error("%s", exc, exc_info=True)
        utils.write_failure(output_dir, str(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 - anything unexpected still leaves one clear line
        logger.exception("unexpected error")
        lost_peer = collective_failure(exc)
        if lost_peer:  # the rank that died first may have written the real cause: keep it
            if not os.path.exists(os.path.join(output_dir, "failure")):
                utils.write_failure(output_dir, lost_peer)
        else:
            utils.write_failure(output_dir, f"unexpected error {type(exc).__name__}: {exc}; "
                                            "the training log has the traceback")
        return 1
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
