"""Poses on a user's own picture, given person boxes (``tools/eval.py --image --boxes``,
through ``PoseTask.predict_image``).

The crop, normalisation, flip test and decoding are the evaluation's own functions, and a
box is used as a detection box is (raw, see :func:`transforms.detection_box`), so a picture
gets exactly what the COCO numbers measure.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from tasks.engine.errors import UserError
from tasks.engine.io import save_json

from .decode import decode_heatmaps, predict_heatmaps
from .drawing import BOX_COLOR, PRED_COLOR, PRED_LEFT_COLOR, draw_pose, write_image
from .images import read_image, to_input
from .transforms import affine_matrix, box_to_center_scale, detection_box, warp_image


@torch.no_grad()
def predict_image(model, cfg, image_path, boxes, out_path=None) -> list[np.ndarray]:
    """Keypoints ``(J, 3)`` (x, y, score in image pixels) for each ``x, y, w, h`` box of
    ``image_path``; with ``out_path``, also a picture of the boxes and skeletons (joints
    scored above TEST.IN_VIS_THRE).  Every box is checked before any is predicted; they go
    through the model TEST.BATCH_SIZE_PER_GPU at a time, so memory stays that of one batch
    however many boxes there are."""
    image = read_image(image_path, cfg.DATASET.COLOR_RGB)
    height, width = image.shape[:2]
    for box in boxes:
        if len(box) != 4 or not box[2] > 0 or not box[3] > 0:
            raise UserError(f"box {list(box)} is not x, y, w, h with w, h > 0")
        if detection_box(box, width, height) is None:
            raise UserError(f"box {list(box)} lies outside the image {image_path} ({width}x{height})")
    model.eval()
    chunk = cfg.TEST.BATCH_SIZE_PER_GPU
    poses = [pose for start in range(0, len(boxes), chunk)
             for pose in _predict_boxes(model, cfg, image, boxes[start:start + chunk])]
    if out_path is not None:
        canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if cfg.DATASET.COLOR_RGB else image.copy()
        for box, pose in zip(boxes, poses):
            x, y, w, h = (int(round(v)) for v in box)
            cv2.rectangle(canvas, (x, y), (x + w, y + h), BOX_COLOR, max(1, max(width, height) // 400))
            draw_pose(canvas, pose, cfg.TEST.IN_VIS_THRE, PRED_COLOR, PRED_LEFT_COLOR)
        write_image(canvas, Path(out_path))
    return poses


def _predict_boxes(model, cfg, image: np.ndarray, boxes) -> list[np.ndarray]:
    """The poses of one batch of checked boxes."""
    size = tuple(cfg.MODEL.IMAGE_SIZE)
    centers, scales, inputs = [], [], []
    for box in boxes:
        center, scale = box_to_center_scale(box, size[0] / size[1])
        inputs.append(to_input(warp_image(image, affine_matrix(center, scale, 0.0, size), size)))
        centers.append(center)
        scales.append(scale)
    device = next(model.parameters()).device
    heatmaps = predict_heatmaps(model, torch.stack(inputs).to(device), cfg.TEST.FLIP_TEST,
                                cfg.TEST.SHIFT_HEATMAP)
    coords, maxvals = decode_heatmaps(heatmaps.float().cpu().numpy(), centers, scales, cfg.TEST.POST_PROCESS,
                                      cfg.TEST.BLUR_KERNEL)
    return [np.concatenate([c, v], axis=1) for c, v in zip(coords, maxvals)]


def pose_report(model, cfg, image_path, boxes, out_dir) -> dict:
    """Predict, draw ``<image>_pose.jpg`` and save ``<image>_keypoints.json`` in ``out_dir``:
    per person its box and 17 x (x, y, score).  A person none of whose joints scored above
    TEST.IN_VIS_THRE is said so on stderr (only its box is drawn)."""
    if not boxes:
        raise UserError("pose prediction on a picture needs the person boxes: --boxes x,y,w,h[;...]")
    stem = Path(image_path).stem
    picture, out_json = Path(out_dir) / f"{stem}_pose.jpg", Path(out_dir) / f"{stem}_keypoints.json"
    threshold = cfg.TEST.IN_VIS_THRE
    persons = []
    for i, (box, pose) in enumerate(zip(boxes, predict_image(model, cfg, image_path, boxes, picture))):
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
