"""``python -m tasks.pose.synthetic --cfg CONFIG``: the command line of the generator."""
from __future__ import annotations

import logging

from tasks.engine.errors import UserError

from .cache import ensure_synthetic_coco


def main(argv=None) -> int:
    """``python -m tasks.pose.synthetic --cfg CONFIG [--opts ...]``: make the set the config
    describes at its DATASET.ROOT, or check and reuse the one there."""
    from tasks.engine import cli, config

    parser = cli.config_parser("Generate (or check and reuse) the synthetic pose data set of a config.")
    args = parser.parse_args(argv)
    cfg = config.load(args.cfg, args.opts)
    if cfg.TASK != "pose" or not cfg.DATASET.SYNTHETIC:
        raise UserError(f"{cfg.source} is not a synthetic pose config (TASK pose and DATASET.SYNTHETIC true): "
                        "there is nothing to generate")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    d = cfg.DATASET
    ensure_synthetic_coco(cfg.resolve_path(d.ROOT), d.TRAIN_SET, d.TEST_SET, int(d.SYNTHETIC_IMAGES),
                          int(d.SYNTHETIC_VAL_IMAGES), int(d.SYNTHETIC_SEED))
    return 0
