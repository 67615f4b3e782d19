"""Measure how flat trained models' minima are: Hessian top eigenvalues, Hessian trace and
loss landscapes along filter-normalised random directions; one model, or several side by side.

    python tools/flatness.py --cfg CFG --checkpoint CKPT [--batches N] [--topk K]
        [--trace-samples M] [--landscape 1d|2d|both|none] [--steps S] [--span R] [--out DIR]
    python tools/flatness.py --cfg CFG --checkpoint sgd.pth sam.pth bsam.pth \\
        --labels SGD SAM BSAM --landscape both --out DIR       # compare minima (top-50 by default)

The model, data and loss come from the config's task (``task.loss``), so every task is
measured the same way.  A fixed sample of ``--batches`` batches (drawn once, with
``--seed``) defines the loss being measured; the model is in eval mode (BN running stats).
Several checkpoints are measured on those same batches and, through the seed, along the same
random directions, so their numbers and pictures compare.  Writes ``flatness.json`` and PNG
pictures to ``--out`` (default: ``flatness/`` beside the checkpoint, or
``flatness_comparison/`` in the checkpoints' common folder).
"""
from __future__ import annotations

import argparse
import os
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from optim import flatness
from tasks.engine import cli
from tasks.engine import config as config_lib
from tasks.engine import task as task_registry
from tasks.engine.data import seed_everything, to_device
from tasks.engine.device import pick_device
from tasks.engine.errors import UserError
from tasks.engine.io import input_file, save_figure, save_json
from tasks.engine.torchfile import memory_budget

#: Top Hessian eigenvalues measured when comparing models (the paper's flatness figure).
COMPARE_TOPK = 50
#: Contour levels of a 2-D landscape stop at this multiple of the lowest loss on the grids.
LEVEL_CEILING = 10.0


# -- building what is measured -----------------------------------------------------------------
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


# -- pictures ----------------------------------------------------------------------------------
def measured_on(comparison: dict) -> str:
    """What the numbers are of, for picture titles: task, split, batches, seed."""
    n = comparison.get("num_batches", "?")
    return (f"{comparison.get('task', 'model')}, {comparison.get('split', '?')} split, "
            f"{n} batch{'' if n == 1 else 'es'} of {comparison.get('batch_size', '?')}, "
            f"seed {comparison.get('seed', '?')}")


def _entries_with(comparison: dict, key: str) -> list[dict]:
    return [e for e in comparison["entries"] if key in e]


def _colour(comparison: dict, entry: dict) -> str:
    """One colour per model, the same in every picture of a comparison."""
    return f"C{comparison['entries'].index(entry) % 10}"


def draw_landscape_1d(ax, curves: dict[str, dict], title: str = "loss along a filter-normalised direction") -> None:
    """One line per labelled 1-D landscape (several models can share the axes)."""
    for label, land in curves.items():
        ax.plot(land["alphas"], land["loss"], marker=".", label=label)
    losses = [v for land in curves.values() for v in land["loss"]]
    if losses and min(losses) > 0 and max(losses) > 30 * min(losses):
        ax.set_yscale("log")  # far from the minimum the loss explodes; keep the bottom visible
    ax.axvline(0.0, color="0.5", linewidth=0.8, linestyle=":")  # the trained weights
    ax.set_xlabel("step along the direction (x filter norm)")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def landscape_1d_figure(comparison: dict) -> Figure:
    fig = Figure(figsize=(5.6, 4.0), dpi=120)
    entries = _entries_with(comparison, "landscape_1d")
    draw_landscape_1d(fig.add_subplot(), {e["label"]: e["landscape_1d"] for e in entries},
                      title=f"loss along one filter-normalised random direction\n{measured_on(comparison)}")
    fig.tight_layout()
    return fig


def contour_levels(grids, ceiling: float = LEVEL_CEILING, step: float = 1.4,
                   count: int = 15) -> tuple[np.ndarray, str]:
    """Contour levels shared by the 2-D landscapes ``grids``, and a note saying how they were
    chosen (printed on the picture).

    Log-spaced (at least ``count``, each at most ``step`` times the last) from the lowest loss
    on the grids to ``ceiling`` times the highest of the grids' own minima, or the highest
    loss if lower: a basin spans a factor of a few in loss while the edges of a plane often
    reach thousands of times it, so linear levels up to the edges paint the whole basin one
    colour; and every model's basin, also the one with the highest minimum, gets levels.
    A loss that is not positive somewhere falls back to linear levels over the whole range.
    """
    grids = [np.asarray(g, dtype=float) for g in grids]
    low = min(float(g.min()) for g in grids)
    high = max(float(g.max()) for g in grids)
    if low > 0:
        top = max(min(high, ceiling * max(float(g.min()) for g in grids)), low * 1.001)
        count = max(count, int(np.ceil(np.log(top / low) / np.log(step))) + 1)
        if top < high:
            note = (f"{count} log-spaced levels from {low:.3g} (lowest loss) to {top:.3g} "
                    f"({ceiling:g}x {'the highest model minimum' if len(grids) > 1 else 'it'}); grey above")
        else:
            note = f"{count} log-spaced levels from {low:.3g} (lowest loss) to {top:.3g} (highest)"
        return np.geomspace(low, top, count), note
    top = high if high > low else low + 1.0
    return np.linspace(low, top, count), f"{count} linear levels from {low:.3g} to {top:.3g}"


def landscape_2d_figure(comparison: dict) -> Figure:
    """One panel per model, side by side, on one colour scale (:func:`contour_levels`)."""
    entries = _entries_with(comparison, "landscape_2d")
    grids = [np.asarray(e["landscape_2d"]["loss"], dtype=float) for e in entries]
    levels, note = contour_levels(grids)
    cmap = colormaps["viridis"].with_extremes(over="0.85")
    norm = BoundaryNorm(levels, cmap.N, extend="max")
    fig = Figure(figsize=(max(6.4, 0.8 + 3.4 * len(entries)), 4.6), dpi=120, layout="constrained")
    axes = fig.subplots(1, len(entries), squeeze=False, sharex=True, sharey=True)[0]
    for ax, entry, grid in zip(axes, entries, grids):
        land = entry["landscape_2d"]
        a, b = np.meshgrid(land["alphas"], land["betas"], indexing="ij")
        filled = ax.contourf(a, b, grid, levels=levels, cmap=cmap, norm=norm, extend="max")
        ax.contour(a, b, grid, levels=levels, colors="k", linewidths=0.4, alpha=0.5)
        i, j = np.unravel_index(np.argmin(grid), grid.shape)
        ax.plot([a[i, j]], [b[i, j]], "*", color="red", markeredgecolor="white", markersize=13,
                label="lowest loss on the grid")
        ax.plot([0.0], [0.0], "+", color="white", markersize=11, markeredgewidth=1.6,
                label="trained weights")
        ax.set_aspect("equal")
        ax.set_title(f"{entry['label']}\nloss {entry['loss']:.3g} at the weights, "
                     f"lowest {grid[i, j]:.3g}", fontsize=9)
        ax.set_xlabel("direction 1 (x filter norm)")
    axes[0].set_ylabel("direction 2 (x filter norm)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8,
               facecolor="0.6")
    bar = fig.colorbar(filled, ax=list(axes), shrink=0.9, label="loss")
    bar.set_ticks(levels[:: max(1, len(levels) // 8)])
    bar.ax.yaxis.set_major_formatter("{x:.3g}")
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(f"loss on a plane of two filter-normalised random directions\n"
                 f"{measured_on(comparison)}\n{note}", fontsize=9)
    return fig


def format_trace(trace: dict) -> str:
    stderr = trace["stderr"]
    return f"{trace['trace']:.4g}" + (f" ± {stderr:.2g}" if stderr is not None else "")


def eigenvalue_axis(values: np.ndarray) -> tuple[dict, np.ndarray]:
    """Axis scale and 15 shared histogram bins for eigenvalues: when a few large ones dominate
    (the usual spectrum), log-like (``log`` if all are positive, else ``asinh``, which keeps
    the negative tail) so the bulk near zero is not one bar; linear otherwise."""
    low, high = float(values.min()), float(values.max())
    magnitudes = np.abs(values)
    if high == low or magnitudes.max() <= 10 * np.median(magnitudes):
        return {"value": "linear"}, np.linspace(low, high if high > low else low + 1.0, 16)
    if low > 0:
        return {"value": "log"}, np.geomspace(low, high, 16)
    width = float(magnitudes.max()) / 30
    return ({"value": "asinh", "linear_width": width},
            width * np.sinh(np.linspace(np.arcsinh(low / width), np.arcsinh(high / width), 16)))


def spectrum_figure(comparison: dict) -> Figure:
    """The top eigenvalues against their rank, and (for ten or more) their distribution per
    model on shared bins: the paper's picture of how sharp each minimum is."""
    entries = _entries_with(comparison, "eigenvalues")
    tops = [np.asarray(e["eigenvalues"]["top"], dtype=float) for e in entries]
    k = max(len(t) for t in tops)
    scale, bins = eigenvalue_axis(np.concatenate(tops))
    with_density = k >= 10
    fig = Figure(figsize=(10.5 if with_density else 5.6, 4.0), dpi=120)
    ax = fig.add_subplot(1, 2 if with_density else 1, 1)
    for entry, top in zip(entries, tops):
        legend = f"{entry['label']}: largest {top[0]:.4g}"
        if "trace" in entry:
            legend += f", trace {format_trace(entry['trace'])}"
        ax.plot(range(1, len(top) + 1), top, marker="o", markersize=3, color=_colour(comparison, entry),
                label=legend)
    ax.set_yscale(**scale)
    ax.yaxis.set_major_formatter("{x:.3g}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_xlabel("rank")
    ax.set_ylabel(f"Hessian eigenvalue ({scale['value']} scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if with_density:
        hist = fig.add_subplot(1, 2, 2)
        for entry, top in zip(entries, tops):
            colour = _colour(comparison, entry)
            hist.hist(top, bins=bins, histtype="stepfilled", alpha=0.25, color=colour)
            hist.hist(top, bins=bins, histtype="step", linewidth=1.5, color=colour, label=entry["label"])
        hist.set_xscale(**scale)
        hist.xaxis.set_major_formatter("{x:.3g}")
        hist.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        hist.set_xlabel(f"Hessian eigenvalue ({scale['value']} scale)")
        hist.set_ylabel(f"how many of the top {k}")
        hist.grid(alpha=0.3)
        hist.legend(fontsize=8)
    method = entries[0]["eigenvalues"]["method"]
    fig.suptitle(f"top-{k} Hessian eigenvalues ({method}); {measured_on(comparison)}", fontsize=9)
    fig.tight_layout()
    return fig


def draw_comparison(results: dict, out_dir: str | Path) -> list[Path]:
    """The pictures of :func:`compare_checkpoints` (or of one :func:`measure_checkpoint`
    result) in ``out_dir``: ``flatness_spectrum.png``, ``flatness_landscape_1d.png`` and
    ``flatness_landscape_2d.png``, each drawn if some model has that measurement."""
    comparison = as_comparison(results)
    out_dir = Path(out_dir)
    pictures = (("eigenvalues", spectrum_figure, "flatness_spectrum.png"),
                ("landscape_1d", landscape_1d_figure, "flatness_landscape_1d.png"),
                ("landscape_2d", landscape_2d_figure, "flatness_landscape_2d.png"))
    return [save_figure(draw(comparison), out_dir / name)
            for key, draw, name in pictures if _entries_with(comparison, key)]


def write_report(results: dict, out_dir: str | Path) -> list[Path]:
    """``flatness.json`` plus the pictures (:func:`draw_comparison`)."""
    return [save_json(results, Path(out_dir) / "flatness.json"), *draw_comparison(results, out_dir)]


# -- command line ------------------------------------------------------------------------------
def _at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = cli.config_parser(__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, nargs="+",
                   help="trainer checkpoint(s) or plain state_dict(s); several are compared")
    p.add_argument("--labels", nargs="+", default=None,
                   help="one name per checkpoint for the pictures (default: their run folders)")
    p.add_argument("--batches", type=_at_least(1), default=4, help="batches measured (default 4)")
    p.add_argument("--batch-size", type=_at_least(1), default=None,
                   help="default: TRAIN.BATCH_SIZE_PER_GPU")
    p.add_argument("--split", choices=["train", "val"], default="train")
    p.add_argument("--topk", type=_at_least(0), default=None,
                   help=f"Hessian eigenvalues (0: skip; default 3, or {COMPARE_TOPK} when comparing)")
    p.add_argument("--method", choices=["lanczos", "power"], default="lanczos")
    p.add_argument("--iters", type=_at_least(1), default=None,
                   help="Lanczos steps / power iterations (default max(3k, 30) / 100)")
    p.add_argument("--trace-samples", type=_at_least(0), default=50, help="Hutchinson samples (0: skip)")
    p.add_argument("--landscape", choices=list(flatness.LANDSCAPES), default="1d")
    p.add_argument("--steps", type=_at_least(2), default=21, help="points per landscape axis")
    p.add_argument("--span", type=_positive_float, default=1.0,
                   help="landscapes cover [-span, span] filter norms (default 1)")
    p.add_argument("--seed", type=int, default=0, help="batch sample and random vectors")
    p.add_argument("--out", default=None,
                   help="output folder (default: flatness/ beside the checkpoint, "
                        "flatness_comparison/ in the common folder of several)")
    return p


def default_out(checkpoints: list[str]) -> Path:
    folders = [str(Path(c).resolve().parent) for c in checkpoints]
    if len(folders) == 1:
        return Path(folders[0]) / "flatness"
    return Path(os.path.commonpath(folders)) / "flatness_comparison"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for checkpoint in args.checkpoint:
        input_file(checkpoint, "checkpoint", "; pass the path of a checkpoint_last.pth / "
                   "model_best.pth or a state_dict file")
    if args.labels is not None and len(args.labels) != len(args.checkpoint):
        raise UserError(f"--labels gives {len(args.labels)} name(s) for {len(args.checkpoint)} "
                        "checkpoint(s); give one per checkpoint, in the same order")
    cfg = config_lib.load(args.cfg, args.opts)
    single = len(args.checkpoint) == 1
    topk = args.topk if args.topk is not None else (3 if single else COMPARE_TOPK)
    options = dict(batches=args.batches, batch_size=args.batch_size, split=args.split, topk=topk,
                   trace_samples=args.trace_samples, landscape=args.landscape, steps=args.steps,
                   method=args.method, iters=args.iters, seed=args.seed, span=args.span)
    if single:
        results = measure_checkpoint(cfg, args.checkpoint[0], label=(args.labels or [None])[0],
                                     **options)
    else:
        results = compare_checkpoints([(cfg, c) for c in args.checkpoint], args.labels, **options)
    results["config"] = str(args.cfg)
    written = write_report(results, Path(args.out) if args.out else default_out(args.checkpoint))
    for entry in as_comparison(results)["entries"]:
        summary = [f"{entry['label']}: loss {entry['loss']:.4f}"]
        if "eigenvalues" in entry:
            summary.append("top eigenvalues " + ", ".join(f"{v:.4g}" for v in entry["eigenvalues"]["top"][:5])
                           + (", ..." if len(entry["eigenvalues"]["top"]) > 5 else ""))
        if "trace" in entry:
            summary.append(f"trace {format_trace(entry['trace'])}")
        print("; ".join(summary))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
