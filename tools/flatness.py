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
from pathlib import Path

from optim import flatness
from tasks.engine import cli
from tasks.engine import config as config_lib
from tasks.engine.errors import UserError
from tasks.engine.flatness_pictures import format_trace, write_report
from tasks.engine.flatness_runs import (COMPARE_TOPK, as_comparison, compare_checkpoints, default_out,
                                        measure_checkpoint)
from tasks.engine.io import input_file


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
