"""Train any task from a YAML config.

    python tools/train.py --cfg configs/pose_bsam.yaml [--opts TRAIN.LR 0.0005 ...] [--resume]
    python tools/train.py --resume output/pose/pose_bsam      # continue a run from its own config
    torchrun --nproc_per_node 2 tools/train.py --cfg ...     # DDP (NCCL on GPUs, gloo on CPU)

Exit status: 0 finished, 2 an error (one ``error:`` line), 3 stopped by SIGTERM/Ctrl-C after
saving a checkpoint (continue with --resume), 130 stopped at once by a second signal (one
``error:`` line; a checkpoint being written is completed first, the last complete one is kept).
"""
from __future__ import annotations

import os
import time
import warnings

from tasks.engine import cli, distributed, run_dir, stored_run, trainer
from tasks.engine.errors import UserError
from tasks.engine.io import json_text
from tasks.engine.records import outputs_line


def main() -> int:
    parser = cli.config_parser(__doc__.splitlines()[0], cfg_help="not needed with --resume RUN_DIR")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                        help="continue from checkpoint_last.pth of OUTPUT_DIR/TASK/NAME, or of RUN_DIR "
                             "with the config stored there (then --cfg is not needed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a run folder that holds a run; the earlier run is "
                             "moved to NAME.replaced-<date-time> beside it")
    parser.add_argument("--accept-config-change", action="store_true",
                        help="with --resume: continue although the config differs from the "
                             "checkpoint's (the new values take effect)")
    args = parser.parse_args()
    started = time.perf_counter()
    cfg = stored_run.config_of_resume(args.cfg, args.resume, args.opts)
    args.resume = bool(args.resume)
    auto = "auto" if (cfg.TRAIN.RESUME or cfg.AUTO_RESUME) else False
    main_process = os.environ.get("RANK", "0") == "0"
    if not main_process:  # rank 0 shows the libraries' warnings; the same N times would bury the log
        warnings.simplefilter("ignore")
    with run_dir.claim(run_dir.run_dir_of(cfg), args.resume or auto, args.overwrite, main_process) as claim:
        run = trainer.Trainer(cfg, resume=claim.resume, accept_config_change=args.accept_config_change)
        if claim.moved_to is not None:
            run.log.warning(f"--overwrite: the earlier run was moved to {claim.moved_to}")
        try:
            results = run.fit()
        except UserError as err:
            run.log.error(f"error: {cli.one_line(err)}", extra={"file_only": True})  # cli.run prints it
            raise
    stopped = bool(results.get("stopped"))
    if run.is_main and not stopped:
        minutes = (time.perf_counter() - started) / 60  # data preparation and evaluation included
        run.log.info(f"done in {minutes:.1f} min")
        run.log.info(outputs_line(run.run_dir))
        print(json_text({"run_dir": results["run_dir"], "best": results["best"], "minutes": round(minutes, 1)}))
    distributed.shutdown()  # every rank done before the group goes (after an error: torchrun ends them)
    return cli.STOPPED if stopped else 0


if __name__ == "__main__":
    cli.run(main)
