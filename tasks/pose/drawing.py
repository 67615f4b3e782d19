"""Skeleton pictures: predicted poses (and ground truth in another colour) on the image.

Pictures are the fastest check that a run learned something sensible; they are written
with :func:`tasks.engine.io.atomic_write` like every other run output.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tasks.engine.io import atomic_write

from .skeleton import SKELETON

PRED_COLOR = (0, 140, 255)  # BGR orange
PRED_LEFT_COLOR = (255, 120, 0)  # BGR blue-ish: left side of the body
GT_COLOR = (60, 220, 60)  # BGR green
BOX_COLOR = (255, 255, 0)  # BGR cyan: the person box a pose was predicted in


def draw_pose(image_bgr: np.ndarray, keypoints: np.ndarray, threshold: float = 0.2,
              color=PRED_COLOR, left_color=None, thickness: int | None = None) -> np.ndarray:
    """Draw one ``(J, 3)`` pose (x, y, score/visibility) in place; joints at or below
    ``threshold`` and limbs touching them are left out."""
    h, w = image_bgr.shape[:2]
    t = thickness or max(1, int(round(max(h, w) / 300)))
    pts = np.asarray(keypoints, dtype=np.float64)
    shown = pts[:, 2] > threshold
    for a, b in SKELETON:
        if a < len(pts) and b < len(pts) and shown[a] and shown[b]:
            c = left_color if (left_color is not None and a % 2 == 1 and b % 2 == 1) else color
            cv2.line(image_bgr, tuple(int(round(v)) for v in pts[a, :2]), tuple(int(round(v)) for v in pts[b, :2]),
                     c, t, cv2.LINE_AA)
    for j in np.flatnonzero(shown):
        cv2.circle(image_bgr, tuple(int(round(v)) for v in pts[j, :2]), t + 1, color, -1, cv2.LINE_AA)
    return image_bgr


def write_image(image_bgr: np.ndarray, path) -> Path:
    """Encode (format from the suffix) and write atomically."""
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".jpg", image_bgr)
    if not ok:
        raise ValueError(f"cannot encode picture for {path}")
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data.tobytes()))


def draw_evaluation_pictures(coco_gt, results: list[dict], image_paths: dict, out_dir, count: int,
                             threshold: float = 0.2) -> list[Path]:
    """Up to ``count`` pictures ``pose_<image_id>.jpg``: predictions (orange/blue) over the
    labelled ground truth (green), for the first images that have predictions."""
    by_image: dict[int, list] = {}
    for r in results:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    written = []
    for image_id in sorted(by_image)[:count]:
        image = cv2.imread(str(image_paths[image_id]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            continue
        if coco_gt is not None:
            for ann in coco_gt.imgToAnns.get(image_id, []):
                kpts = np.asarray(ann.get("keypoints") or [], dtype=np.float64).reshape(-1, 3)
                if len(kpts):
                    draw_pose(image, kpts, threshold=0, color=GT_COLOR)
        for r in sorted(by_image[image_id], key=lambda r: -r["score"]):
            if r["score"] > 0:
                draw_pose(image, np.asarray(r["keypoints"]).reshape(-1, 3), threshold, PRED_COLOR, PRED_LEFT_COLOR)
        written.append(write_image(image, Path(out_dir) / f"pose_{image_id}.jpg"))
    return written
