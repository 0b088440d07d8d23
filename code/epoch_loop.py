"""One training epoch of an engine.Trainer (as Lightning's training epoch loop is to its fit loop): this rank's
shuffled shard of the train split in batches, each one optimiser step (augment, normalise, autocast forward,
backward, update, EMA), its running sums reduced over ranks into ``EpochStats``.

A stop request ends the epoch after the current step; its ``partial`` (this rank's running sums and augmentation
generator) goes into the checkpoint, and ``resume_step``/``partial`` (set by checkpoint_connector.py) make the
resumed epoch go on from exactly that step.
"""
import dataclasses
import math
import time

import torch

import augment
import distributed
import prediction
import schedule
import utils


@dataclasses.dataclass
class EpochStats:
    """One epoch of training, summed over ranks: the mean loss, throughput, and where it ended."""

    train_loss: float
    images_per_sec: float
    steps: int
    steps_in_epoch: int
    images_read: int = 0  # streamed data only: images read and unreadable ones (found while reading)
    bad_images: int = 0
    partial: dict = None  # this rank's running sums and augmentation RNG when a stop cut the epoch short

    @property
    def completed(self):
        return self.steps >= self.steps_in_epoch


class EpochLoop:
    """Trains one epoch of ``trainer`` (its model, optimiser, scaler, loss, EMA, plan, data, stop request and
    callbacks); ``resume_step``/``partial``: where a resume inside the next epoch starts (0/None otherwise)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.resume_step, self.partial = 0, None

    def indices(self, epoch):
        """This rank's shuffled sample indices for ``epoch`` (DistributedSampler: a disjoint shard per rank); when
        each host holds its own part of train (``data.train_part``), the ranks of a host split only that, and a
        smaller part wraps around its own images to the largest part's count, so every rank takes the same steps."""
        t = self.trainer
        part = getattr(t.data, "train_part", None)
        replicas, rank = (part.replicas, part.rank) if part is not None else (t.dist.world_size, t.dist.rank)
        sampler = torch.utils.data.DistributedSampler(range(len(t.data.train)), num_replicas=replicas, rank=rank,
                                                      shuffle=True, seed=t.args.seed, drop_last=False)
        sampler.set_epoch(epoch)
        indices = list(sampler)
        if part is not None and indices:
            indices = (indices * math.ceil(part.per_rank / len(indices)))[:part.per_rank]
        return indices

    def run(self, epoch):
        """Train ``epoch`` (from ``resume_step`` after a resume inside it); returns EpochStats."""
        t, device = self.trainer, self.trainer.device
        t.wrapped.train()
        t.emit("on_train_epoch_start", epoch)
        indices = self.indices(epoch)
        bs = min(t.plan.batch_size, len(indices))
        steps = schedule.steps_in_epoch(len(indices), bs, t.args.max_steps_per_epoch)
        indices = indices[:steps * bs]
        gen, loss_sum, seen = self._rng_and_sums(epoch)
        resume_step, self.resume_step, self.partial = self.resume_step, 0, None
        mean, std = (torch.tensor(v, device=device) for v in (t.data.mean, t.data.std))  # one copy per epoch
        start_time, step, images_timed = time.perf_counter(), resume_step, 0
        read_before, bad_before = getattr(t.data.train, "read", 0), t.data.train.bad
        for x, y, _ in t.data.train.batches(indices[resume_step * bs:], bs, device, fill=True):
            loss = self.step(x, y, gen, mean, std)
            loss_sum += loss.detach().double() * len(y)
            seen += len(y)
            images_timed += len(y)
            step += 1
            t.emit("on_step_end", epoch, step)
            if t.stop.agreed(step, t.dist, device):
                break
        elapsed = time.perf_counter() - start_time
        read, bad = getattr(t.data.train, "read", 0) - read_before, t.data.train.bad - bad_before
        total_loss, total_seen, total_timed, total_read, total_bad = distributed.all_reduce_sum(
            [loss_sum.item(), seen, images_timed, read, bad], t.dist, device)
        stats = EpochStats(train_loss=total_loss / max(total_seen, 1), images_per_sec=total_timed / max(elapsed, 1e-9),
                           steps=step, steps_in_epoch=steps, images_read=int(total_read), bad_images=int(total_bad),
                           partial={"loss_sum": loss_sum.item(), "seen": seen, "generator": gen.get_state()})
        t.emit("on_train_epoch_end", epoch, stats)
        return stats

    def _rng_and_sums(self, epoch):
        """The augmentation generator and running sums: fresh (seeded by epoch and rank) or a resumed epoch's."""
        t, gen = self.trainer, torch.Generator()
        if self.partial is None:
            seed = utils.derived_seed(t.args.seed, epoch, t.dist.rank)
            utils.seed_everything(seed)
            gen.manual_seed(seed + 1)
            return gen, torch.zeros((), dtype=torch.float64, device=t.device), 0
        gen.set_state(self.partial["generator"])
        return gen, torch.tensor(self.partial["loss_sum"], dtype=torch.float64, device=t.device), self.partial["seen"]

    def step(self, x, y, gen, mean, std):
        """One optimiser step on a uint8 batch: augment, normalise, forward (autocast), backward, update, EMA."""
        t = self.trainer
        x = x.float().div_(255)
        if t.args.augment:
            x = augment.augment_batch(x, gen, hflip=t.args.hflip, vflip=t.args.vflip)
        x = prediction.normalize(x, mean, std, t.memory_format)
        for group in t.optimizer.param_groups:
            group["lr"] = t.lr(t.state.global_step) * group.get("lr_scale", 1.0)
        with torch.autocast(t.device.type, dtype=t.amp_dtype or torch.float32, enabled=t.amp_dtype is not None):
            loss = t.criterion(t.wrapped(x), y)
        t.optimizer.zero_grad(set_to_none=True)
        if t.scaler is not None:
            t.scaler.scale(loss).backward()
            t.scaler.step(t.optimizer)
            t.scaler.update()
        else:
            loss.backward()
            t.optimizer.step()
        t.state.global_step += 1
        if t.ema is not None:
            t.ema.update(t.model)
        return loss
