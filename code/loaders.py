"""Splits as train.py iterates them: decoded once into a uint8 tensor when the data set fits in memory
(``CachedSplit``, on the GPU when it fits there too), else decoded from disk every epoch by DataLoader workers
(``StreamSplit``). Both yield ``(uint8 NCHW images, targets, indices)`` batches on the training device.
"""
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

import images
import shards
from errors import BadImageError, DataError, ImageTooLargeError
from images import Notes

logger = logging.getLogger("train")

# why an image was skipped, as metrics.json's ``skipped`` says it; a bad image's target is -(1 + the index here)
SKIP_REASONS = images.SKIP_REASONS + (shards.DAMAGED,)


def skip_code(exc_or_reason):
    """The target a bad image gets for a BadImageError (or a reason of SKIP_REASONS): -(1 + its reason's index in
    SKIP_REASONS), so that the reason crosses DataLoader workers with the batch."""
    reason = exc_or_reason if isinstance(exc_or_reason, str) else images.bad_image_reason(exc_or_reason)
    return -1 - SKIP_REASONS.index(reason if reason in SKIP_REASONS else "cannot decode")


def skip_reason(target):
    """The reason (SKIP_REASONS) a bad image's target says."""
    return SKIP_REASONS[-int(torch.as_tensor(target).flatten()[0]) - 1]


class ImageFileDataset(torch.utils.data.Dataset):
    """Decodes one image per item to ``(uint8 CHW tensor, target)``. Targets are class indices (int64) or per-finding
    0/1 vectors (float32); a bad image's target is -1 (every entry), so that it is counted, then dropped. ``page``:
    which page of a multi-page file is read (images.open_image)."""

    def __init__(self, paths, labels, channels, size, max_pixels, names=None, page=0):
        self.paths = list(paths)
        self.names = list(names) if names is not None else list(self.paths)  # how reports name each image
        self.labels = torch.as_tensor(list(labels), dtype=torch.float32 if labels and isinstance(
            labels[0], (list, tuple)) else torch.int64)
        self.channels, self.size, self.max_pixels, self.page = channels, size, max_pixels, page

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.item(i)[:2]

    def item(self, i):
        """``(image, target, notes)``: notes is the file's images.Notes as an int64 tensor (pages, non-finite
        pixels, pixels), zeros for a bad image; carried back from DataLoader workers as the target -1 is."""
        try:
            arr, notes = images.read(self.paths[i], self.channels, self.size, self.max_pixels, self.page)
            return (torch.from_numpy(arr).permute(2, 0, 1).contiguous(), self.labels[i],
                    torch.tensor(notes, dtype=torch.int64))
        except BadImageError as exc:
            hint = " (the max-image-pixels hyperparameter is that limit)" if isinstance(exc, ImageTooLargeError) else ""
            logger.warning("skipping %s: %s%s", self.paths[i], exc, hint)
            return (torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8),
                    torch.full_like(self.labels[i], skip_code(exc)), torch.zeros(len(Notes._fields), dtype=torch.int64))


class ShardDataset(ImageFileDataset):
    """ImageFileDataset's items read from shards (code/shards.py): ``paths`` are shards.ShardRef, the pixels are
    already at the training size and channels, so an item is a copy of bytes. A sample the client could not decode
    (or whose shard is damaged: said once when the channel was listed) is a bad image with its reason; one whose
    bytes fail their CRC-32 is named in a warning."""

    def item(self, i):
        ref = self.paths[i]
        try:
            if ref.skip:
                raise BadImageError(ref.skip)
            arr = shards.read_pixels(ref)
        except (BadImageError, shards.ShardError) as exc:
            return self._bad(i, exc)
        return (torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), self.labels[i],
                torch.tensor((1, 0, arr.shape[0] * arr.shape[1]), dtype=torch.int64))

    def by_shard(self):
        """The sample indices grouped by shard file, in order."""
        parts = {}
        for i, ref in enumerate(self.paths):
            parts.setdefault(ref.shard, []).append(i)
        return list(parts.values())

    def copy_into(self, indices, images, labels, held):
        """``item`` for ``indices`` (all of one shard), reading the shard once: pixels into ``images``. The loop
        copies with numpy only: a torch operation per image hands work to its intra-op threads, which costs
        milliseconds per image on a busy machine."""
        try:
            data = shards.read_shard(self.paths[indices[0]].shard)
        except OSError:
            data = None
        pixels, bad = images.numpy(), []
        for i in indices:
            ref = self.paths[i]
            try:
                if data is None or ref.skip:
                    raise BadImageError(ref.skip or shards.DAMAGED)
                np.copyto(pixels[i], shards.pixels_in(ref, data).transpose(2, 0, 1))
            except (BadImageError, shards.ShardError) as exc:
                bad.append((i, exc))
        index = torch.as_tensor(indices)
        labels[index] = self.labels[index]
        held[index] = torch.tensor((1, 0, self.size * self.size))
        for i, exc in bad:
            images[i], labels[i], held[i] = self._bad(i, exc)

    def _bad(self, i, exc):
        ref = self.paths[i]
        if ref.skip != shards.DAMAGED:  # a damaged shard was named once, when the channel was listed
            logger.warning("skipping %s: %s%s", self.names[i], exc, " (found by prepare_data)" if ref.skip else "")
        return (torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8),
                torch.full_like(self.labels[i], skip_code(ref.skip if ref.skip else shards.DAMAGED)),
                torch.zeros(len(Notes._fields), dtype=torch.int64))


def dataset(listing_paths, targets, channels, size, max_pixels, names=None, page=0):
    """The dataset of a listing: ShardDataset when its paths are shard samples, else ImageFileDataset."""
    kind = ShardDataset if listing_paths and isinstance(listing_paths[0], shards.ShardRef) else ImageFileDataset
    return kind(listing_paths, targets, channels, size, max_pixels, names=names, page=page)


class PixelNotes:
    """What a split's files held beyond one plain picture, said once in the log (one line each): how many were
    multi-page or animated files, read at ``page``, and how many had NaN or infinite pixels (shown as the darkest
    or brightest value), each with one example file."""

    def __init__(self, split, page):
        self.split, self.page = split, page
        self.read, self.multipage, self.nonfinite = 0, 0, 0
        self.multipage_example = self.nonfinite_example = None
        self.said = False

    def add(self, name, notes):
        """One readable image: its name and its notes (pages, non-finite pixels, pixels)."""
        pages, nonfinite, pixels = (int(v) for v in notes)
        self.read += 1
        if pages > 1:
            self.multipage += 1
            self.multipage_example = self.multipage_example or (name, pages)
        if nonfinite:
            self.nonfinite += 1
            self.nonfinite_example = self.nonfinite_example or (name, nonfinite, pixels)

    def say(self):
        """Log the lines (once)."""
        if self.said:
            return
        self.said = True
        if self.multipage:
            name, pages = self.multipage_example
            logger.info("%s: %d of the %d images read are multi-page or animated files, read at page %d (e.g. %s "
                        "has %d pages); the page hyperparameter chooses another", self.split, self.multipage,
                        self.read, self.page, name, pages)
        if self.nonfinite:
            name, nonfinite, pixels = self.nonfinite_example
            logger.warning("%s: %d of the %d images read have NaN or infinite pixels, shown as black (NaN, -inf) or "
                           "white (+inf) beside their finite pixels' range (e.g. %s: %d of %d pixels)", self.split,
                           self.nonfinite, self.read, name, nonfinite, pixels)


def readable(targets):
    """Which targets (from ImageFileDataset) belong to images that could be read."""
    return targets >= 0 if targets.ndim == 1 else (targets >= 0).all(dim=1)


def decode_all(dataset, workers, notes=None):
    """Decode a whole ImageFileDataset with a thread pool: (uint8 NCHW tensor, targets, ``{bad path: reason}``);
    the readable images' notes are added to ``notes`` (a PixelNotes) in the listing's order."""
    n = len(dataset)
    images = torch.empty(n, dataset.channels, dataset.size, dataset.size, dtype=torch.uint8)
    labels = torch.empty_like(dataset.labels)
    held = torch.zeros(n, len(Notes._fields), dtype=torch.int64)

    def work(start, chunk=256):  # a range per task: a future per image costs ~1/3 of a small image's decode
        for i in range(start, min(start + chunk, n)):
            images[i], labels[i], held[i] = dataset.item(i)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        if isinstance(dataset, ShardDataset):  # one sequential read per shard, its images copied out of it
            list(pool.map(lambda part: dataset.copy_into(part, images, labels, held), dataset.by_shard()))
        else:
            list(pool.map(work, range(0, n, 256)))
    good = readable(labels)
    if bool(good.all()):  # no copy of the whole split when every image was read
        kept_images, kept_labels = images, labels
    else:
        kept_images, kept_labels = images[good].contiguous(), labels[good]
    if notes is not None:
        rows = held.tolist()
        for i in torch.nonzero(good).flatten().tolist():
            notes.add(dataset.names[i], rows[i])
    bad = {dataset.paths[i]: skip_reason(labels[i]) for i in torch.nonzero(~good).flatten().tolist()}
    return kept_images, kept_labels, bad


def check_bad_fraction(bad, total, limit, channel):
    if bad and bad / max(total, 1) > limit:
        raise DataError(f"{bad} of {total} images in {channel} could not be read (corrupt, truncated, empty or too "
                        f"large), above max-bad-fraction={limit}; fix or remove them, or raise max-bad-fraction")
    if bad:
        logger.warning("%d of %d images in %s could not be read and were skipped", bad, total, channel)


class CachedSplit:
    """A split decoded once into a uint8 NCHW tensor (on the training device when it fits); ``names`` say which
    image each row is (its path relative to the channel), for per-image reports, and ``groups`` its patient (or
    None); ``skipped``: ``{name: reason}`` of the images left out (metrics.json's ``skipped``)."""

    def __init__(self, images, labels, names=None, groups=None):
        self.images, self.labels = images, labels
        self.names = list(names) if names is not None else [str(i) for i in range(len(labels))]
        self.groups = list(groups) if groups is not None else None
        self.bad = 0
        self.skipped = {}

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

    Unreadable images are only found here, while reading: ``read`` and ``bad`` count them in this process (every
    time they are read), ``skipped`` names them (``{name: reason}``, each image once). Evaluation drops them. Training (``fill=True``) keeps every batch full instead, so that each rank takes the
    same number of steps (DDP and the stop check are collectives): a bad image is replaced by a readable one of
    the same batch, and a batch with none readable by the previous batch. ``notes`` (a PixelNotes) gathers the
    first pass's multi-page and non-finite images and is said when that pass ends.
    """

    def __init__(self, dataset, workers, pin_memory, groups=None, notes=None):
        self.dataset, self.workers, self.pin_memory, self.notes = dataset, workers, pin_memory, notes
        self.labels = torch.as_tensor(dataset.labels)
        self.names = dataset.names
        self.groups = list(groups) if groups is not None else None
        self.read = self.bad = 0
        self.skipped = {}
        self._last = None

    def __len__(self):
        return len(self.dataset)

    def loader(self, indices, batch_size):
        """``(x, y, idx, notes)`` batches of ``indices`` in that order (DataLoader workers decode the files)."""
        return torch.utils.data.DataLoader(
            _Indexed(self.dataset), batch_size=batch_size, sampler=list(indices), num_workers=self.workers,
            pin_memory=self.pin_memory, persistent_workers=False, prefetch_factor=4 if self.workers else None)

    def batches(self, indices, batch_size, device, fill=False):
        notes = self.notes if self.notes is not None and not self.notes.said else None
        for x, y, idx, held in self.loader(indices, batch_size):
            ok = readable(y)
            if notes is not None:
                for i in torch.nonzero(ok).flatten().tolist():
                    notes.add(self.names[int(idx[i])], held[i])
            self.read += len(y)
            n_bad = len(y) - int(ok.sum())
            if n_bad:
                self.bad += n_bad
                for j in torch.nonzero(~ok).flatten().tolist():
                    self.skipped.setdefault(self.names[int(idx[j])], skip_reason(y[j]))
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
        if notes is not None:
            notes.say()


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y, notes = self.dataset.item(i)
        return x, y, i, notes


class ShardStreamSplit(StreamSplit):
    """A split of shards too large for memory, read shard by shard every epoch (sequential reads: what FastFile
    streams from S3 well): the requested images are grouped by shard, the shards shuffled (seeded by the epoch's
    order) and dealt to the DataLoader workers, each of which passes its images through a shuffle buffer of
    ``buffer`` images and sends them in chunks; batches are then cut to ``batch_size`` here, so a rank yields
    exactly ``ceil(len(indices) / batch_size)`` batches, as StreamSplit does (the ``fill`` rule holds). Memory:
    ``bound_bytes()``, said in the ``data:`` line."""

    CHUNK = 32  # images a worker sends at once

    def __init__(self, dataset, workers, pin_memory, groups=None, notes=None, buffer=1024):
        super().__init__(dataset, workers, pin_memory, groups, notes)
        self.buffer = buffer

    def bound_bytes(self):
        """At most this many bytes of pixels held: every worker's buffer and prefetched chunks, and a batch."""
        image = self.dataset.channels * self.dataset.size ** 2
        workers = max(1, self.workers)
        return image * (workers * (self.buffer + 4 * self.CHUNK) + 2 * self.CHUNK)

    def loader(self, indices, batch_size):
        indices = list(indices)
        seed = zlib.crc32(torch.as_tensor(indices[:64], dtype=torch.int64).numpy().tobytes())
        stream = _ShardStream(self.dataset, indices, self.buffer, self.CHUNK, seed)
        chunks = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=self.workers,
                                             pin_memory=self.pin_memory, prefetch_factor=4 if self.workers else None)
        parts, held = [], 0
        for chunk in chunks:
            parts.append(chunk)
            held += len(chunk[1])
            while held >= batch_size:
                batch, parts, held = _cut(parts, batch_size)
                yield batch
        if held:
            yield _cut(parts, held)[0]


def _cut(parts, n):
    """The first ``n`` images of a list of (x, y, idx, notes) chunks as one batch, and the rest."""
    joined = [torch.cat(column) for column in zip(*parts)]
    rest = [c[n:] for c in joined]
    return tuple(c[:n] for c in joined), ([tuple(rest)] if len(rest[1]) else []), len(rest[1])


class _ShardStream(torch.utils.data.IterableDataset):
    """The images ``indices`` of a ShardDataset, shard by shard (shards in a seeded order, dealt round-robin to the
    workers), in increasing offset within a shard, through a shuffle buffer, as chunks of (x, y, idx, notes)."""

    def __init__(self, dataset, indices, buffer, chunk, seed):
        self.dataset, self.buffer, self.chunk, self.seed = dataset, max(1, buffer), chunk, seed
        by_shard = {}
        for i in indices:
            by_shard.setdefault(dataset.paths[i].shard, []).append(i)
        order = torch.randperm(len(by_shard), generator=torch.Generator().manual_seed(seed)).tolist()
        names = sorted(by_shard)
        self.shards = [sorted(by_shard[names[k]], key=lambda i: dataset.paths[i].offset) for k in order]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        gen = torch.Generator().manual_seed(self.seed + worker)
        buffer, out = [], []
        for shard in self.shards[worker::workers]:
            for i in shard:
                x, y, notes = self.dataset.item(i)
                buffer.append((x, y, i, notes))
                if len(buffer) >= self.buffer:
                    out.append(buffer.pop(int(torch.randint(len(buffer), (), generator=gen))))
                    if len(out) == self.chunk:
                        yield _stack(out)
                        out = []
        order = torch.randperm(len(buffer), generator=gen).tolist()
        out += [buffer[k] for k in order]
        for start in range(0, len(out), self.chunk):
            yield _stack(out[start:start + self.chunk])


def _stack(samples):
    xs, ys, idx, notes = zip(*samples)
    return torch.stack(xs), torch.stack(ys), torch.as_tensor(idx, dtype=torch.int64), torch.stack(notes)
