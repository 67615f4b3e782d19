"""Train any task from a YAML config.

    python tools/train.py --cfg configs/pose_bsam.yaml [--opts TRAIN.LR 0.0005 ...] [--resume]
    torchrun --nproc_per_node 2 tools/train.py --cfg ...     # DDP (NCCL on GPUs, gloo on CPU)
"""
from __future__ import annotations

import json
import time

from tasks.engine import cli, config, distributed
from tasks.engine.trainer import Trainer


def main() -> int:
    parser = cli.config_parser(__doc__.splitlines()[0])
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/TASK/NAME/checkpoint_last.pth")
    args = parser.parse_args()
    started = time.perf_counter()
    cfg = config.load(args.cfg, args.opts)
    trainer = Trainer(cfg, resume=args.resume or cfg.TRAIN.RESUME or cfg.AUTO_RESUME)
    results = trainer.fit()
    if trainer.is_main and not results.get("stopped"):
        minutes = (time.perf_counter() - started) / 60  # data preparation and evaluation included
        trainer.log.info(f"done in {minutes:.1f} min")
        print(json.dumps({"run_dir": results["run_dir"], "best": results["best"], "minutes": round(minutes, 1)}))
    distributed.shutdown()  # every rank done before the group goes (after an error: torchrun ends them)
    return 0


if __name__ == "__main__":
    cli.run(main)
