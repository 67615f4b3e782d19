"""Export a trained model as its task deploys it (ONNX for classification, qat and pose).

    python tools/export.py --cfg configs/qat_resnet20_cifar10_w4a4_bsam.yaml \\
        --checkpoint output/qat/qat_resnet20_cifar10_w4a4_bsam/model_best.pth [--out model.onnx]
    python tools/export.py --cfg <classification config> --checkpoint <float checkpoint>
    python tools/export.py --cfg configs/pose_bsam.yaml --checkpoint <pose checkpoint>

The file is written (atomically) only when onnxruntime's outputs on the config's evaluation
inputs agree with the PyTorch model (the task's ``export`` says how, ``--min-agreement`` sets
the fraction of agreeing inputs; a task without one says so); quantized models run on integer
kernels.  Prints a JSON report (path, bytes, agreement, integer kernels).
"""
from __future__ import annotations

import json
from pathlib import Path

from tasks.engine import cli, config
from tasks.engine.errors import UserError
from tasks.engine.io import check_output_path
from tasks.engine.run_dir import run_dir_of
from tasks.engine.task import get as get_task


def main() -> int:
    parser = cli.config_parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="model_best.pth, checkpoint_last.pth or a state_dict")
    parser.add_argument("--out", help="ONNX file to write (default: RUN_DIR/model.onnx)")
    parser.add_argument("--check-images", type=int, default=None,
                        help="evaluation inputs for the onnxruntime check (default: the task's)")
    parser.add_argument("--min-agreement", type=float, default=None,
                        help="fraction of the check inputs whose top-1 must agree with PyTorch "
                             "(default: QUANT.EXPORT_MIN_AGREEMENT, or the task's)")
    args = parser.parse_args()
    if args.out:
        check_output_path(args.out, "--out", folder=False)
    cfg = config.load(args.cfg, args.opts)
    if args.check_images is not None and args.check_images < 1:
        raise UserError(f"--check-images {args.check_images}: use a number >= 1")
    if args.min_agreement is not None and not 0.0 <= args.min_agreement <= 1.0:
        raise UserError(f"--min-agreement {args.min_agreement}: use a fraction from 0 to 1")
    task = get_task(cfg.TASK)(cfg)
    model = task.load_trained(args.checkpoint).eval()
    out = Path(args.out) if args.out else run_dir_of(cfg) / "model.onnx"
    # passed only when given: a task of one's own may not take it
    threshold = {} if args.min_agreement is None else {"min_agreement": args.min_agreement}
    report = task.export(model, out, images=args.check_images, **threshold)
    print(json.dumps({k: v for k, v in report.items() if k != "layers"}))
    return 0


if __name__ == "__main__":
    cli.run(main)
