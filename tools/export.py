"""Export a trained model (QAT, float classifier or pose) to ONNX, checked with onnxruntime.

    python tools/export.py --cfg configs/qat_resnet20_cifar10_w4a4_bsam.yaml \\
        --checkpoint output/qat/qat_resnet20_cifar10_w4a4_bsam/model_best.pth [--out model.onnx]
    python tools/export.py --cfg <classification config> --checkpoint <float checkpoint>
    python tools/export.py --cfg configs/pose_bsam.yaml --checkpoint <pose checkpoint>

The file is written (atomically) only when onnxruntime's outputs on the config's evaluation
inputs agree with the PyTorch model (the task's ``export`` says how); quantized models run
on integer kernels.  Prints a JSON report (path, bytes, agreement, integer kernels).
"""
from __future__ import annotations

import json
from pathlib import Path

from tasks.engine import cli, config
from tasks.engine.errors import UserError
from tasks.engine.io import check_output_path
from tasks.engine.pretrained import load_into, load_state_dict_file
from tasks.engine.task import get as get_task
from tasks.engine.trainer import run_dir_of


def load_checkpoint(model, cfg, path: str) -> None:
    """All weights of ``path`` into ``model``; a float/QAT mix-up gets its own message."""
    state = load_state_dict_file(path)
    has_quantizers = any("_quantizer." in k for k in state)
    if cfg.TASK == "qat" and not has_quantizers:
        raise UserError(f"checkpoint {path} has no quantizer step sizes: it is a float model; "
                        f"fine-tune it with this qat config first (tools/train.py, MODEL.PRETRAINED) "
                        f"or export it with the classification config it was trained with")
    if cfg.TASK != "qat" and has_quantizers:
        raise UserError(f"checkpoint {path} is a QAT checkpoint: export it with the qat config it "
                        f"was trained with (TASK: qat)")
    load_into(model, state, skip_prefixes=(), source=f"checkpoint {path}")


def main() -> int:
    parser = cli.config_parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="model_best.pth, checkpoint_last.pth or a state_dict")
    parser.add_argument("--out", help="ONNX file to write (default: RUN_DIR/model.onnx)")
    parser.add_argument("--check-images", type=int, default=None,
                        help="evaluation inputs for the onnxruntime check (default: the task's)")
    args = parser.parse_args()
    if args.out:
        check_output_path(args.out, "--out", folder=False)
    cfg = config.load(args.cfg, args.opts)
    if args.check_images is not None and args.check_images < 1:
        raise UserError(f"--check-images {args.check_images}: use a number >= 1")
    cfg.MODEL.PRETRAINED = ""  # the checkpoint below supplies every weight
    task = get_task(cfg.TASK)(cfg)
    model = task.build_model()
    load_checkpoint(model, cfg, args.checkpoint)
    model.eval()
    out = Path(args.out) if args.out else run_dir_of(cfg) / "model.onnx"
    report = task.export(model, out, images=args.check_images)
    print(json.dumps({k: v for k, v in report.items() if k != "layers"}))
    return 0


if __name__ == "__main__":
    cli.run(main)
