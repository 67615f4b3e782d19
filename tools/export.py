"""Export a trained classifier (QAT or float) to ONNX, checked against PyTorch with onnxruntime.

    python tools/export.py --cfg configs/qat_resnet20_cifar10_w4a4_bsam.yaml \\
        --checkpoint output/qat/qat_resnet20_cifar10_w4a4_bsam/model_best.pth [--out model.onnx]
    python tools/export.py --cfg <classification config> --checkpoint <float checkpoint>

The file is written (atomically) only when onnxruntime's outputs on the config's test images
agree with the PyTorch model (top-1 on >= 99% of them); quantized weights are stored as
integers.  Prints a JSON report (path, bytes, agreement, bits per layer).
"""
from __future__ import annotations

import json
from pathlib import Path

from quant.export import ExportParityError
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
                        help="test images for the onnxruntime check (default: QUANT.EXPORT_CHECK_IMAGES or 512)")
    args = parser.parse_args()
    if args.out:
        check_output_path(args.out, "--out", folder=False)
    cfg = config.load(args.cfg, args.opts)
    if cfg.TASK not in ("qat", "classification"):
        raise UserError(f"tools/export.py exports classifiers (TASK qat or classification), not TASK {cfg.TASK}")
    if args.check_images is not None and args.check_images < 1:
        raise UserError(f"--check-images {args.check_images}: use a number >= 1")
    cfg.MODEL.PRETRAINED = ""  # the checkpoint below supplies every weight
    task = get_task(cfg.TASK)(cfg)
    model = task.build_model()
    load_checkpoint(model, cfg, args.checkpoint)
    model.eval()
    _, val_set = task.build_datasets()
    out = Path(args.out) if args.out else run_dir_of(cfg) / "model.onnx"

    from tasks.qat.exporting import export_classifier

    try:
        report = export_classifier(model, cfg, val_set, out, images=args.check_images)
    except ExportParityError as err:
        raise UserError(str(err)) from None
    except ValueError as err:
        raise UserError(f"cannot export {cfg.MODEL.NAME}: {err}") from None
    print(json.dumps({k: v for k, v in report.as_dict().items() if k != "layers"}))
    return 0


if __name__ == "__main__":
    cli.run(main)
