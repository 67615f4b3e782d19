"""Loaders that make a run repeatable: the order of every epoch is a function of the seed
and the epoch alone, so a resumed run sees the same batches as an uninterrupted one."""
from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

log = logging.getLogger("bsam.data")  # a child of the run logger: lands in train.log
_capped: set[tuple[int, int]] = set()  # (requested, cores) already reported in this process


class EpochSampler(Sampler[int]):
    """Shuffled (or not) indices for one epoch, sharded over ranks like
    ``DistributedSampler``, that can start part-way through the epoch (``skip``)."""

    def __init__(self, size: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch, self.skip = 0, 0
        self.per_rank = -(-size // world)  # ceil: every rank gets as many samples

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        order += order[: self.per_rank * self.world - self.size]  # pad to equal shards
        return order[self.rank :: self.world]

    def __iter__(self):
        return iter(self._indices()[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


class EvalShard(Sampler[int]):
    """This rank's block of whole evaluation batches, in order: rank r gets batches
    r*q .. (r+1)*q-1 (q = ceil(batches / world)).  Every batch holds exactly the samples
    it holds in a one-process evaluation, and concatenating the ranks' outputs in rank
    order gives the one-process order, so gathered metrics are bit-identical."""

    def __init__(self, size: int, batch_size: int, rank: int = 0, world: int = 1):
        batches = -(-size // batch_size)
        per_rank = -(-batches // world)
        self.start = min(rank * per_rank * batch_size, size)
        self.stop = min((rank + 1) * per_rank * batch_size, size)

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of one rank's augmentations in one epoch (its loader workers'): a pure function
    of its inputs, so ranks draw different streams and a resumed run draws the same."""
    return int(np.random.SeedSequence([seed % 2**64, rank, epoch]).generate_state(1, np.uint64)[0] % 2**63)


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a loader worker from the seed PyTorch gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def available_cores() -> int:
    """The CPU cores this process may run on (what torch's DataLoader checks workers against)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def usable_workers(requested: int) -> int:
    """``requested`` loader workers, at most one per available core: more only compete for
    the same cores (torch warns about it at every epoch); says so once per process."""
    cores = available_cores()
    if requested <= cores:
        return requested
    if (requested, cores) not in _capped:
        _capped.add((requested, cores))
        log.warning(f"WORKERS {requested}: this machine has {cores} CPU cores for this process, "
                    f"so the data loaders use {cores} workers")
    return cores


def make_loader(dataset, batch_size: int, workers: int, sampler, collate_fn=None,
                drop_last: bool = False, pin_memory: bool = False, seed: int = 0,
                persistent_workers: bool = False) -> DataLoader:
    """``generator`` seeds the workers (re-seed it per epoch, see :func:`epoch_seed`);
    persistent workers keep their generators across epochs, so they trade exact resumes
    for faster epoch starts.  ``workers`` is capped at the available cores."""
    workers = usable_workers(workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn, drop_last=drop_last, pin_memory=pin_memory,
                      worker_init_fn=seed_worker, persistent_workers=persistent_workers and workers > 0,
                      generator=torch.Generator().manual_seed(seed))


def to_device(batch, device: torch.device, channels_last: bool = False):
    """Move every tensor of a (nested) batch to ``device``; other values pass through.
    ``channels_last`` lays 4-D floating tensors (images) out as NHWC."""
    if isinstance(batch, torch.Tensor):
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            return batch.to(device, non_blocking=True, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, list):
        return [to_device(v, device, channels_last) for v in batch]
    if isinstance(batch, tuple):
        return tuple(to_device(v, device, channels_last) for v in batch)
    return batch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global generator's state, in types that ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # this process's GPU only: touching the others makes contexts there
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
