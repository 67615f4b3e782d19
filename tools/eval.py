"""Evaluate a checkpoint with the same builders as training.

    python tools/eval.py --cfg configs/pose_bsam.yaml --checkpoint output/.../model_best.pth
    python tools/eval.py --cfg ... --checkpoint ... --image me.jpg --boxes 10,20,200,400   # pose

Only the evaluated split (DATASET.TEST_SET) is read.  A pose split without keypoint ground
truth (COCO test-dev image info) gets its results json written and its metrics null.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from tasks.engine import cli, config
from tasks.engine.data import make_loader
from tasks.engine.errors import UserError
from tasks.engine.io import check_output_path, json_text, save_json
from tasks.engine.checkpoint import load_model_weights
from tasks.engine.task import get as get_task
from tasks.engine.trainer import pick_device, run_dir_of


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


def report_poses(poses, boxes, threshold: float, picture: Path, out_json: Path) -> dict:
    """Per person: its box and 17 x (x, y, score); saved as JSON next to the picture.  A
    person none of whose joints scored above the drawing threshold is said so on stderr."""
    persons = []
    for i, (box, pose) in enumerate(zip(boxes, poses)):
        shown = int((pose[:, 2] > threshold).sum())
        persons.append({"box_xywh": [round(v, 2) for v in box], "joints_drawn": shown,
                        "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(c), 4)]
                                      for x, y, c in pose]})
        if shown == 0:
            print(f"note: person {i} (box {box}): no joint scored above TEST.IN_VIS_THRE {threshold:g} "
                  f"(best {float(pose[:, 2].max()):.3g}); only its box is drawn", file=sys.stderr)
    report = {"picture": str(picture), "keypoints_file": str(out_json), "persons": persons}
    save_json(report, out_json)
    return report


def main() -> int:
    parser = cli.config_parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="model_best.pth, checkpoint_last.pth or a state_dict")
    parser.add_argument("--out", help="folder for results and pictures (default: RUN_DIR/eval)")
    parser.add_argument("--image", help="pose: draw predictions on this image instead of evaluating")
    parser.add_argument("--boxes", help="pose: person boxes for --image, separated by ';' "
                        "(format: --box-format)")
    parser.add_argument("--box-format", choices=sorted(BOX_FORMATS), default="xywh",
                        help="how --boxes are written: xywh = x,y,w,h as in COCO (the default), "
                             "xyxy = x1,y1,x2,y2")
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

        boxes = parse_boxes(args.boxes, args.box_format)
        out = out_dir / (Path(args.image).stem + "_pose.jpg")
        poses = predict_image(model, cfg, args.image, boxes, out)
        report = report_poses(poses, boxes, float(cfg.TEST.IN_VIS_THRE), out,
                              out.with_name(Path(args.image).stem + "_keypoints.json"))
        print(json_text(report))
        return 0
    val_set = task.build_eval_dataset()
    loader = make_loader(val_set, cfg.TEST.BATCH_SIZE_PER_GPU, cfg.WORKERS, None, task.collate_fn())
    with torch.no_grad():
        metrics = task.evaluate(model, loader, out_dir)
    save_json({"checkpoint": str(args.checkpoint), "metrics": metrics}, out_dir / "results.json")
    print(json_text(metrics))
    return 0


if __name__ == "__main__":
    cli.run(main)
