"""Evaluate a checkpoint with the same builders as training.

    python tools/eval.py --cfg configs/pose_bsam.yaml --checkpoint output/.../model_best.pth
    python tools/eval.py --cfg ... --checkpoint ... --image me.jpg --boxes 10,20,200,400   # pose
"""
from __future__ import annotations

from pathlib import Path

import torch

from tasks.engine import cli, config
from tasks.engine.data import make_loader
from tasks.engine.errors import UserError
from tasks.engine.io import check_output_path, json_text, save_json
from tasks.engine.checkpoint import load_model_weights
from tasks.engine.task import get as get_task
from tasks.engine.trainer import pick_device, run_dir_of


def parse_boxes(text: str) -> list[list[float]]:
    try:
        boxes = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError:
        boxes = []
    if not boxes or any(len(b) != 4 or b[2] <= 0 or b[3] <= 0 for b in boxes):
        raise UserError(f"--boxes {text!r}: expected x,y,w,h[;x,y,w,h...] with w, h > 0")
    return boxes


def main() -> int:
    parser = cli.config_parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="model_best.pth, checkpoint_last.pth or a state_dict")
    parser.add_argument("--out", help="folder for results and pictures (default: RUN_DIR/eval)")
    parser.add_argument("--image", help="pose: draw predictions on this image instead of evaluating")
    parser.add_argument("--boxes", help="pose: person boxes for --image, x,y,w,h[;...]")
    args = parser.parse_args()
    if args.out:
        check_output_path(args.out, "--out", folder=True)
    cfg = config.load(args.cfg, args.opts)
    cfg.MODEL.PRETRAINED = ""  # the checkpoint holds every weight: no need for the original file
    device = pick_device(cfg.DEVICE)
    task = get_task(cfg.TASK)(cfg)
    model = task.build_model()
    load_model_weights(model, args.checkpoint)
    model.to(device).eval()
    out_dir = Path(args.out) if args.out else run_dir_of(cfg) / "eval"
    if args.image:
        if cfg.TASK != "pose" or not args.boxes:
            raise UserError("--image works with TASK pose and needs --boxes x,y,w,h[;...]")
        from tasks.pose.predict import predict_image

        out = out_dir / (Path(args.image).stem + "_pose.jpg")
        predict_image(model, cfg, args.image, parse_boxes(args.boxes), out)
        print(json_text({"picture": str(out)}))
        return 0
    _, val_set = task.build_datasets()
    loader = make_loader(val_set, cfg.TEST.BATCH_SIZE_PER_GPU, cfg.WORKERS, None, task.collate_fn())
    with torch.no_grad():
        metrics = task.evaluate(model, loader, out_dir)
    save_json({"checkpoint": str(args.checkpoint), "metrics": metrics}, out_dir / "results.json")
    print(json_text(metrics))
    return 0


if __name__ == "__main__":
    cli.run(main)
