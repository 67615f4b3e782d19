"""Flatness of trained checkpoints: each measured through its task's loss, several on the
same batches and random draws, so that their numbers compare (``tools/flatness.py`` and
``benchmarks/reproduce_cifar.py`` call this).

A fixed sample of batches (drawn once, with the seed) defines the loss being measured; the
model is in eval mode (BN running stats).  Through the seed, models of one architecture are
measured along the same random directions.  The numbers come from :mod:`optim.flatness`;
:mod:`tasks.engine.flatness_pictures` draws them.
"""
from __future__ import annotations

import os
import sys
from itertools import islice
from pathlib import Path

import torch

from optim import flatness

from . import task as task_registry
from .data import seed_everything, to_device
from .device import pick_device
from .errors import UserError
from .torchfile import memory_budget

#: Top Hessian eigenvalues measured when comparing models (the paper's flatness figure).
COMPARE_TOPK = 50


def sample_batches(task, split: str, count: int, batch_size: int, seed: int,
                   device: torch.device) -> list:
    """``count`` batches drawn once, in a seeded random order, kept on ``device``.

    Drawing them once makes the measured loss a fixed function of the weights (random
    augmentation included); shuffling keeps class-sorted folders from giving one class.
    """
    train_set, val_set = task.build_datasets()
    dataset = train_set if split == "train" else val_set
    if len(dataset) == 0:
        raise UserError(f"the {split} set of the config is empty; check DATASET.ROOT")
    seed_everything(seed)  # random augmentation draws from the global generators
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=0,
        collate_fn=task.collate_fn(), generator=torch.Generator().manual_seed(seed))
    batches = [to_device(b, device) for b in islice(loader, count)]
    if len(batches) < count:
        print(f"note: the {split} set gives only {len(batches)} batch(es) of {batch_size}; "
              f"measuring on those", file=sys.stderr)
    return batches


def task_loss(task):
    """``task.loss`` without its stats: the scalar the curvature is taken of."""
    return lambda model, batch: task.loss(model, batch)[0]


def check_eigenvalue_memory(model, topk: int, method: str, iters: int | None, checkpoint) -> None:
    """Refuse, before the allocation, ``topk`` eigenvalues that the model has not (one per
    weight) or whose vectors (Lanczos keeps every step's, power iteration ``topk``) would not
    fit in the memory left."""
    if topk <= 0:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    dim = sum(p.numel() for p in params)
    if topk > dim:
        raise UserError(f"--topk {topk}: the model of {checkpoint} has {dim} trainable weights, so at "
                        f"most {dim} Hessian eigenvalues; use a smaller --topk")
    vectors = min(max(topk, iters if iters is not None else max(3 * topk, 30)), dim) \
        if method == "lanczos" else topk
    needed = vectors * dim * params[0].element_size()
    device = params[0].device
    budget = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else memory_budget()
    if needed > budget:
        raise UserError(f"--topk {topk} ({method}) keeps {vectors} vectors of {dim} weights: "
                        f"{needed / 2**30:.1f} GiB, more than the {budget / 2**30:.1f} GiB free; use a "
                        "smaller --topk or --iters")


def default_labels(checkpoints) -> list[str]:
    """Run folder names (``.../sgd0/checkpoint_last.pth`` -> ``sgd0``), else file names, else
    the paths: the first of these that tells the checkpoints apart."""
    paths = [Path(c) for c in checkpoints]
    for names in ([p.parent.name for p in paths], [p.name for p in paths]):
        if len(set(names)) == len(names) and all(names):
            return names
    return [str(p) for p in paths]


def compare_checkpoints(cfgs_and_ckpts, labels=None, *, batches: int = 4,
                        batch_size: int | None = None, split: str = "train",
                        topk: int = COMPARE_TOPK, trace_samples: int = 50, landscape: str = "1d",
                        steps: int = 21, method: str = "lanczos", iters: int | None = None,
                        seed: int = 0, span: float = 1.0) -> dict:
    """Measure several ``(config, checkpoint)`` pairs on the same batches and random draws.

    The batches come from the first config (on its ``DEVICE``, with its batch size unless
    ``batch_size`` is given); every config must name the same task and dataset.  Each model
    is measured with its own config's model and loss.  Returns the shared settings and
    ``entries``: one :func:`optim.flatness.measure` result per checkpoint, with its ``label``
    and ``checkpoint`` -- the numbers a single run with the same seed gives.
    """
    pairs = list(cfgs_and_ckpts)
    if not pairs:
        raise UserError("nothing to compare: pass at least one checkpoint")
    labels = list(labels) if labels is not None else default_labels(c for _, c in pairs)
    if len(labels) != len(pairs) or len(set(labels)) != len(labels):
        raise UserError(f"give one distinct label per checkpoint: {len(pairs)} checkpoint(s), "
                        f"labels {labels}")
    first = pairs[0][0]
    for cfg, checkpoint in pairs[1:]:
        if cfg.TASK != first.TASK or cfg.DATASET != first.DATASET:
            raise UserError(f"checkpoint {checkpoint}: its config's TASK/DATASET differ from the "
                            "first one's; compare models of one task on one dataset")
    dev = pick_device(first.DEVICE)
    size = batch_size or first.TRAIN.BATCH_SIZE_PER_GPU
    task = task_registry.get(first.TASK)(first)
    check_eigenvalue_memory(task.build_model(pretrained=False), topk, method, iters, pairs[0][1])
    data = sample_batches(task, split, batches, size, seed, dev)
    entries = []
    for n, ((cfg, checkpoint), label) in enumerate(zip(pairs, labels), 1):
        if len(pairs) > 1:
            print(f"[{n}/{len(pairs)}] measuring {label} ({checkpoint})", file=sys.stderr)
        task = task_registry.get(cfg.TASK)(cfg)
        model = task.load_trained(checkpoint).to(dev)
        check_eigenvalue_memory(model, topk, method, iters, checkpoint)
        result = flatness.measure(model, task_loss(task), data, topk=topk,
                                  trace_samples=trace_samples, landscape=landscape, steps=steps,
                                  method=method, iters=iters, seed=seed, span=span)
        entries.append({"label": label, "checkpoint": str(checkpoint), **result})
        del model
    return {"task": first.TASK, "split": split, "batch_size": size, "num_batches": len(data),
            "seed": seed, "span": span, "device": str(dev), "entries": entries}


def measure_checkpoint(cfg, checkpoint, *, batches: int = 4, batch_size: int | None = None,
                       split: str = "train", topk: int = 3, trace_samples: int = 50,
                       landscape: str = "1d", steps: int = 21, method: str = "lanczos",
                       iters: int | None = None, seed: int = 0, span: float = 1.0,
                       label: str | None = None) -> dict:
    """Everything :func:`optim.flatness.measure` reports, for one config + checkpoint, with
    the settings it was measured under: the one-model case of :func:`compare_checkpoints`."""
    comparison = compare_checkpoints(
        [(cfg, checkpoint)], [label or default_labels([checkpoint])[0]], batches=batches,
        batch_size=batch_size, split=split, topk=topk, trace_samples=trace_samples,
        landscape=landscape, steps=steps, method=method, iters=iters, seed=seed, span=span)
    (entry,) = comparison.pop("entries")
    return {**comparison, **entry}


def as_comparison(result: dict) -> dict:
    """A one-model result (:func:`measure_checkpoint`) in the shape of a comparison."""
    if "entries" in result:
        return result
    shared = ("task", "split", "batch_size", "num_batches", "seed", "span", "device")
    entry = dict(result)
    entry.setdefault("label", default_labels([result.get("checkpoint", "model")])[0])
    return {**{k: result[k] for k in shared if k in result}, "entries": [entry]}


def default_out(checkpoints: list[str]) -> Path:
    """``flatness/`` beside one checkpoint, ``flatness_comparison/`` in several's common folder."""
    folders = [str(Path(c).resolve().parent) for c in checkpoints]
    if len(folders) == 1:
        return Path(folders[0]) / "flatness"
    return Path(os.path.commonpath(folders)) / "flatness_comparison"
