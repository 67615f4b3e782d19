"""Poses on a user's own picture, given person boxes (``tools/eval.py --image --boxes``).

The crop, normalisation, flip test and decoding are the evaluation's own functions, so a
picture gets exactly what the COCO numbers measure.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from tasks.engine.errors import UserError

from .coco_people import clip_box
from .decode import decode_heatmaps, predict_heatmaps
from .drawing import PRED_COLOR, PRED_LEFT_COLOR, draw_pose, write_image
from .images import read_image, to_input
from .transforms import affine_matrix, box_to_center_scale, warp_image


@torch.no_grad()
def predict_image(model, cfg, image_path, boxes, out_path=None) -> list[np.ndarray]:
    """Keypoints ``(J, 3)`` (x, y, score in image pixels) for each box of ``image_path``;
    with ``out_path``, also a picture of the skeletons (joints scored above TEST.IN_VIS_THRE)."""
    image = read_image(image_path, bool(cfg.DATASET.COLOR_RGB))
    height, width = image.shape[:2]
    size = tuple(int(v) for v in cfg.MODEL.IMAGE_SIZE)
    centers, scales, inputs = [], [], []
    for box in boxes:
        if len(box) != 4 or not box[2] > 0 or not box[3] > 0:
            raise UserError(f"box {list(box)} is not x, y, w, h with w, h > 0")
        clipped = clip_box(box, width, height)
        if clipped is None:
            raise UserError(f"box {list(box)} lies outside the image {image_path} ({width}x{height})")
        center, scale = box_to_center_scale(clipped, size[0] / size[1])
        inputs.append(to_input(warp_image(image, affine_matrix(center, scale, 0.0, size), size)))
        centers.append(center)
        scales.append(scale)
    model.eval()
    device = next(model.parameters()).device
    heatmaps = predict_heatmaps(model, torch.stack(inputs).to(device), bool(cfg.TEST.FLIP_TEST),
                                bool(cfg.TEST.SHIFT_HEATMAP))
    coords, maxvals = decode_heatmaps(heatmaps.float().cpu().numpy(), centers, scales, bool(cfg.TEST.POST_PROCESS))
    poses = [np.concatenate([c, v], axis=1) for c, v in zip(coords, maxvals)]
    if out_path is not None:
        canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if cfg.DATASET.COLOR_RGB else image.copy()
        for pose in poses:
            draw_pose(canvas, pose, float(cfg.TEST.IN_VIS_THRE), PRED_COLOR, PRED_LEFT_COLOR)
        write_image(canvas, Path(out_path))
    return poses
