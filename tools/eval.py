"""Evaluate a checkpoint with the same builders as training.

    python tools/eval.py --checkpoint output/pose/pose_bsam/model_best.pth    # the run's own config
    python tools/eval.py --checkpoint RUN/model_best.pth --opts DATASET.ROOT /data/coco
    python tools/eval.py --checkpoint ... --image me.jpg --boxes 10,20,200,400   # pose
    python tools/eval.py --cfg configs/pose_bsam.yaml --checkpoint weights.pth   # a plain state_dict

Without ``--cfg`` the config stored in the checkpoint is used (``--opts`` override it).
Results go to RUN/eval/ beside the checkpoint (or ``--out``); every file written is listed on
stderr, the metrics (or the --image report) are the last line of stdout, as JSON.
Only the evaluated split (DATASET.TEST_SET) is read.  A pose split without keypoint ground
truth (COCO test-dev image info) gets its results json written and its metrics null.
``--image`` is the task's ``predict_image`` (pose: keypoints of the person boxes).
"""
from __future__ import annotations

import torch

from tasks.engine import cli, stored_run
from tasks.engine.data import make_loader
from tasks.engine.device import pick_device
from tasks.engine.errors import UserError
from tasks.engine.io import check_output_path, json_text, save_json
from tasks.engine.task import get as get_task


BOX_FORMATS = {"xywh": "x,y,w,h (COCO)", "xyxy": "x1,y1,x2,y2 (corners)"}


def parse_boxes(text: str, box_format: str = "xywh") -> list[list[float]]:
    """``--boxes`` as COCO ``[x, y, w, h]`` boxes, whichever format they were given in."""
    try:
        boxes = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError:
        boxes = []
    if box_format == "xyxy":
        boxes = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] if len(b) == 4 else b for b in boxes]
    if not boxes or any(len(b) != 4 or b[2] <= 0 or b[3] <= 0 for b in boxes):
        wanted = ("x1,y1,x2,y2[;...] with x2 > x1 and y2 > y1" if box_format == "xyxy"
                  else "x,y,w,h[;...] with w, h > 0")
        raise UserError(f"--boxes {text!r}: expected {wanted} (--box-format {box_format})")
    return boxes


def main() -> int:
    parser = cli.config_parser(__doc__.splitlines()[0], cfg_help="default: the config stored in the checkpoint")
    parser.add_argument("--checkpoint", required=True, help="model_best.pth, checkpoint_last.pth or a state_dict")
    parser.add_argument("--out", help="folder for results and pictures (default: eval/ beside the checkpoint)")
    parser.add_argument("--image", help="predict on this picture instead of evaluating, if the "
                        "task offers it (pose: draws and saves the keypoints of --boxes)")
    parser.add_argument("--boxes", help="regions of --image, separated by ';' (pose: the person "
                        "boxes; format: --box-format)")
    parser.add_argument("--box-format", choices=sorted(BOX_FORMATS), default="xywh",
                        help="how --boxes are written: xywh = x,y,w,h as in COCO (the default), "
                             "xyxy = x1,y1,x2,y2")
    args = parser.parse_args()
    if args.out:
        check_output_path(args.out, "--out", folder=True)
    if args.boxes and not args.image:
        raise UserError("--boxes are regions of --image: give the picture too")
    boxes = parse_boxes(args.boxes, args.box_format) if args.boxes else None
    cfg, stored = stored_run.config_of_checkpoint(args.checkpoint, args.cfg, args.opts)
    out_dir = stored_run.eval_folder(args.checkpoint, args.out)
    device = pick_device(cfg.DEVICE)
    task = get_task(cfg.TASK)(cfg)
    model = stored_run.load_model(task, args.checkpoint, stored).to(device).eval()
    before = stored_run.snapshot(out_dir)
    if args.image:
        report = task.predict_image(model, args.image, boxes, out_dir)
    else:
        val_set = task.build_eval_dataset()
        loader = make_loader(val_set, cfg.TEST.BATCH_SIZE_PER_GPU, cfg.WORKERS, None, task.collate_fn())
        with torch.no_grad():
            report = task.evaluate(model, loader, out_dir)
        save_json({"checkpoint": str(args.checkpoint), "metrics": report}, out_dir / "results.json")
    cli.say_written(stored_run.written_since(out_dir, before))
    print(json_text(report))
    return 0


if __name__ == "__main__":
    cli.run(main)
