"""Measure how flat a trained model's minimum is: Hessian top eigenvalues, Hessian trace and
loss landscapes along filter-normalised random directions.

    python tools/flatness.py --cfg CFG --checkpoint CKPT [--batches N] [--topk K]
        [--trace-samples M] [--landscape 1d|2d|none] [--steps S] [--out DIR] [--opts K V ...]

The model, data and loss come from the config's task (``task.loss``), so every task is
measured the same way.  A fixed sample of ``--batches`` training batches (drawn once, with
``--seed``) defines the loss being measured; the model is in eval mode (BN running stats).
Writes ``flatness.json`` and PNG plots to ``--out`` (default: ``flatness/`` beside the
checkpoint).
"""
from __future__ import annotations

import argparse
import sys
from itertools import islice
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from matplotlib.figure import Figure

from tasks.engine import cli, flatness
from tasks.engine import config as config_lib
from tasks.engine import task as task_registry
from tasks.engine.data import seed_everything, to_device
from tasks.engine.errors import UserError
from tasks.engine.io import save_figure, save_json
from tasks.engine.checkpoint import load_model_weights
from tasks.engine.trainer import pick_device


# -- building what is measured -----------------------------------------------------------------
def load_model(task, checkpoint: str | Path, device: torch.device) -> torch.nn.Module:
    """The task's model with the checkpoint's weights (a trainer checkpoint or a state_dict)."""
    model = task.build_model()
    load_model_weights(model, checkpoint)
    return model.to(device)


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


def measure_checkpoint(cfg, checkpoint, *, batches: int = 4, batch_size: int | None = None,
                       split: str = "train", topk: int = 3, trace_samples: int = 50,
                       landscape: str = "1d", steps: int = 21, method: str = "lanczos",
                       iters: int | None = None, seed: int = 0) -> dict:
    """Everything :func:`tasks.engine.flatness.measure` reports, for a config + checkpoint
    (on the config's ``DEVICE``)."""
    dev = pick_device(cfg.DEVICE)
    seed_everything(seed)  # the sampled batches (augmentation included) repeat for a seed
    task = task_registry.get(cfg.TASK)(cfg)
    model = load_model(task, checkpoint, dev)
    size = batch_size or cfg.TRAIN.BATCH_SIZE_PER_GPU
    data = sample_batches(task, split, batches, size, seed, dev)
    result = flatness.measure(model, task_loss(task), data, topk=topk, trace_samples=trace_samples,
                              landscape=landscape, steps=steps, method=method, iters=iters, seed=seed)
    result.update(checkpoint=str(checkpoint), task=cfg.TASK, split=split, batch_size=size,
                  device=str(dev))
    return result


# -- pictures ----------------------------------------------------------------------------------
def draw_landscape_1d(ax, curves: dict[str, dict], title: str = "loss along a filter-normalised direction") -> None:
    """One line per labelled 1-D landscape (several models can share the axes)."""
    for label, land in curves.items():
        ax.plot(land["alphas"], land["loss"], marker=".", label=label)
    losses = [v for land in curves.values() for v in land["loss"]]
    if losses and min(losses) > 0 and max(losses) > 30 * min(losses):
        ax.set_yscale("log")  # far from the minimum the loss explodes; keep the bottom visible
    ax.set_xlabel("step along direction (x filter norm)")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def landscape_1d_figure(curves: dict[str, dict]) -> Figure:
    fig = Figure(figsize=(5, 3.6), dpi=120)
    draw_landscape_1d(fig.add_subplot(), curves)
    fig.tight_layout()
    return fig


def landscape_2d_figure(land: dict, title: str = "loss on a filter-normalised plane") -> Figure:
    fig = Figure(figsize=(5, 4.2), dpi=120)
    ax = fig.add_subplot()
    grid = np.asarray(land["loss"])
    alphas, betas = np.meshgrid(land["alphas"], land["betas"], indexing="ij")
    filled = ax.contourf(alphas, betas, grid, levels=20, cmap="viridis")
    ax.contour(alphas, betas, grid, levels=20, colors="k", linewidths=0.3)
    fig.colorbar(filled, ax=ax, label="loss")
    ax.plot([0], [0], "r+", markersize=10)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def format_trace(trace: dict) -> str:
    stderr = trace["stderr"]
    return f"{trace['trace']:.4g}" + (f" ± {stderr:.2g}" if stderr is not None else "")


def spectrum_figure(result: dict) -> Figure:
    fig = Figure(figsize=(5, 3.2), dpi=120)
    ax = fig.add_subplot()
    top = result["eigenvalues"]["top"]
    ax.bar(range(1, len(top) + 1), top, color="tab:blue")
    ax.set_xlabel("rank")
    ax.set_ylabel("Hessian eigenvalue")
    title = f"top-{len(top)} Hessian eigenvalues ({result['eigenvalues']['method']})"
    if "trace" in result:
        title += f"; trace {format_trace(result['trace'])}"
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def write_report(result: dict, out_dir: str | Path) -> list[Path]:
    """``flatness.json`` plus one PNG per measurement that has a picture."""
    out_dir = Path(out_dir)
    written = [save_json(result, out_dir / "flatness.json")]
    if "eigenvalues" in result:
        written.append(save_figure(spectrum_figure(result), out_dir / "flatness_spectrum.png"))
    if "landscape_1d" in result:
        fig = landscape_1d_figure({Path(result.get("checkpoint", "model")).name: result["landscape_1d"]})
        written.append(save_figure(fig, out_dir / "flatness_landscape_1d.png"))
    if "landscape_2d" in result:
        written.append(save_figure(landscape_2d_figure(result["landscape_2d"]),
                                   out_dir / "flatness_landscape_2d.png"))
    return written


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


def build_parser() -> argparse.ArgumentParser:
    p = cli.config_parser(__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="trainer checkpoint or plain state_dict")
    p.add_argument("--batches", type=_at_least(1), default=4, help="training batches measured (default 4)")
    p.add_argument("--batch-size", type=_at_least(1), default=None,
                   help="default: TRAIN.BATCH_SIZE_PER_GPU")
    p.add_argument("--split", choices=["train", "val"], default="train")
    p.add_argument("--topk", type=_at_least(0), default=3, help="Hessian eigenvalues (0: skip)")
    p.add_argument("--method", choices=["lanczos", "power"], default="lanczos")
    p.add_argument("--iters", type=_at_least(1), default=None,
                   help="Lanczos steps / power iterations (default max(3k, 30) / 100)")
    p.add_argument("--trace-samples", type=_at_least(0), default=50, help="Hutchinson samples (0: skip)")
    p.add_argument("--landscape", choices=["1d", "2d", "none"], default="1d")
    p.add_argument("--steps", type=_at_least(2), default=21, help="points per landscape axis")
    p.add_argument("--seed", type=int, default=0, help="batch sample and random vectors")
    p.add_argument("--out", default=None, help="output folder (default: flatness/ beside the checkpoint)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint {args.checkpoint} not found; pass the path of a "
                        f"checkpoint_last.pth / model_best.pth or a state_dict file")
    cfg = config_lib.load(args.cfg, args.opts)
    result = measure_checkpoint(
        cfg, args.checkpoint, batches=args.batches, batch_size=args.batch_size,
        split=args.split, topk=args.topk, trace_samples=args.trace_samples,
        landscape=args.landscape, steps=args.steps, method=args.method, iters=args.iters,
        seed=args.seed)
    result["config"] = str(args.cfg)
    out_dir = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "flatness"
    written = write_report(result, out_dir)
    summary = [f"loss {result['loss']:.4f}"]
    if "eigenvalues" in result:
        summary.append("top eigenvalues " + ", ".join(f"{v:.4g}" for v in result["eigenvalues"]["top"]))
    if "trace" in result:
        summary.append(f"trace {format_trace(result['trace'])}")
    print("; ".join(summary))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
