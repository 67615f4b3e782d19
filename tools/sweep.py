"""Tune config keys with Optuna; each trial is an ordinary training run.

    python tools/sweep.py --cfg configs/cls_cifar10_bsam.yaml \
        --space SAM.RHO=log:0.005:0.5 --space SAM.RHO_MIN=log:0.001:0.5 --trials 16 \
        --opts DATASET.VAL_FROM_TRAIN 0.1
    python tools/sweep.py ... --report          # the table, best.yaml and sweep.png so far
    python tools/sweep.py ... --storage postgresql://user:pw@host/db   # several machines

Start the same command again to continue a sweep (also in several processes at once).
Exit status: 0 done, 2 an error (one ``error:`` line), 3 stopped by a signal (resumable).
"""
from __future__ import annotations

from pathlib import Path

from tasks.engine import cli
from tasks.engine.sweep import PRUNERS, SAMPLERS, SweepArgs, sweep


def main() -> int:
    parser = cli.config_parser(__doc__.splitlines()[0])
    parser.add_argument("--space", action="append", default=[], metavar="KEY=KIND:...", required=True,
                        help="a searched key: KEY=log:LOW:HIGH, KEY=float:LOW:HIGH, KEY=int:LOW:HIGH "
                             "or KEY=choice:A,B (log/float take :N grid points for --sampler grid)")
    parser.add_argument("--trials", type=int, default=20, help="trials the study holds when done (default 20)")
    parser.add_argument("--metric", help="the val_* column of metrics.csv to optimise, after the last "
                                         "epoch (default: val_<the task's main metric>)")
    parser.add_argument("--minimize", action="store_true", help="minimise the metric (a loss)")
    parser.add_argument("--study", help="study name (default: the config's NAME)")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<out>/study.db)")
    parser.add_argument("--out", type=Path, help="sweep folder (default: OUTPUT_DIR/sweeps/<study>)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe")
    parser.add_argument("--pruner", choices=PRUNERS, default="none",
                        help="median: stop a trial whose per-epoch metric is below the median of earlier trials")
    parser.add_argument("--heartbeat", type=int, default=60, metavar="S",
                        help="seconds between a running trial's heartbeats in the storage (default 60)")
    parser.add_argument("--grace", type=int, metavar="S",
                        help="seconds without a heartbeat after which another machine takes a running "
                             "trial over (default 10 x --heartbeat)")
    parser.add_argument("--report", action="store_true", help="train nothing: write the report of the trials so far")
    args = parser.parse_args()
    return sweep(SweepArgs(cfg=Path(args.cfg), spaces=args.space, trials=args.trials, opts=args.opts,
                           metric=args.metric, minimize=args.minimize, study=args.study, storage=args.storage,
                           out=args.out, sampler=args.sampler, pruner=args.pruner, report_only=args.report,
                           heartbeat=args.heartbeat, grace=args.grace))


if __name__ == "__main__":
    cli.run(main)
