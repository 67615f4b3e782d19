"""Skeleton pictures: predicted poses (and ground truth in another colour) on the image.

Pictures are the fastest check that a run learned something sensible, so they are made to
be read at a glance: small images (a synthetic set's 200 pixels, a crop-sized picture) are
enlarged before drawing, the ground truth is magenta (rare in photos, unlike green or blue),
and a legend says which colour is what.  They are written with
:func:`tasks.engine.io.atomic_write` like every other run output.
"""
from __future__ import annotations

from pathlib import Path

import math

import cv2
import numpy as np

from tasks.engine.io import atomic_write

from .skeleton import SKELETON

PRED_COLOR = (0, 140, 255)  # BGR orange
PRED_LEFT_COLOR = (255, 120, 0)  # BGR blue-ish: left side of the body
GT_COLOR = (255, 0, 255)  # BGR magenta: stands out on grass, sky, skin and clothes
BOX_COLOR = (255, 255, 0)  # BGR cyan: the person box a pose was predicted in
LEGEND = (("prediction", PRED_COLOR), ("prediction, left side", PRED_LEFT_COLOR), ("ground truth", GT_COLOR))
#: Pictures are enlarged by a whole factor until their longer side has at least this many pixels.
MIN_LONG_SIDE = 800


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


def enlarge(image_bgr: np.ndarray, min_long_side: int = MIN_LONG_SIDE) -> tuple[np.ndarray, int]:
    """``image_bgr`` enlarged by the smallest whole factor that makes its longer side at
    least ``min_long_side`` pixels, and that factor (1: unchanged)."""
    factor = max(1, math.ceil(min_long_side / max(image_bgr.shape[:2])))
    if factor == 1:
        return image_bgr, 1
    return cv2.resize(image_bgr, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC), factor


def scaled(keypoints: np.ndarray, factor: int) -> np.ndarray:
    """``(J, 3)`` keypoints in the pixels of an image enlarged ``factor`` times (pixel centres
    stay pixel centres, as ``cv2.resize`` maps them)."""
    out = np.asarray(keypoints, dtype=np.float64).copy()
    out[:, :2] = (out[:, :2] + 0.5) * factor - 0.5
    return out


def draw_legend(image_bgr: np.ndarray, entries=LEGEND) -> np.ndarray:
    """A legend in the top-left corner, in place: a colour swatch and a name per line, on a
    dark box so that it reads on any picture."""
    scale = max(0.5, max(image_bgr.shape[:2]) / 1600)
    thick = max(1, round(scale * 2))
    (_, text_h), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    line, pad = int(text_h * 1.8), int(text_h * 0.6)
    width = max(cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for name, _ in entries)
    box_w, box_h = pad * 3 + 2 * text_h + width, pad + line * len(entries)
    region = image_bgr[:box_h, :box_w]
    region[:] = (region * 0.35).astype(image_bgr.dtype)  # darken the corner under the legend
    for i, (name, color) in enumerate(entries):
        y = pad + line * i + text_h
        cv2.line(image_bgr, (pad, y - text_h // 2), (pad + 2 * text_h, y - text_h // 2), color, thick + 2, cv2.LINE_AA)
        cv2.putText(image_bgr, name, (pad * 2 + 2 * text_h, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thick, cv2.LINE_AA)
    return image_bgr


def pose_picture(image_bgr: np.ndarray, truths, predictions, threshold: float = 0.2) -> np.ndarray:
    """The picture of one image: enlarged, the ground truth ``truths`` (magenta) under the
    ``predictions`` (orange, the left side blue), both lists of ``(J, 3)`` keypoints, and a legend."""
    canvas, factor = enlarge(image_bgr)
    if canvas is image_bgr:
        canvas = image_bgr.copy()
    for kpts in truths:
        draw_pose(canvas, scaled(kpts, factor), threshold=0, color=GT_COLOR)
    for kpts in predictions:
        draw_pose(canvas, scaled(kpts, factor), threshold, PRED_COLOR, PRED_LEFT_COLOR)
    return draw_legend(canvas, LEGEND if truths else LEGEND[:2])


def draw_evaluation_pictures(coco_gt, results: list[dict], image_paths: dict, out_dir, count: int,
                             threshold: float = 0.2) -> list[Path]:
    """Up to ``count`` pictures ``pose_<image_id>.jpg`` (see :func:`pose_picture`) of the first
    images that have predictions."""
    by_image: dict[int, list] = {}
    for r in results:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    written = []
    for image_id in sorted(by_image)[:count]:
        image = cv2.imread(str(image_paths[image_id]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            continue
        truths = []
        if coco_gt is not None:
            truths = [np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
                      for ann in coco_gt.imgToAnns.get(image_id, []) if ann.get("keypoints")]
        predictions = [np.asarray(r["keypoints"]).reshape(-1, 3)
                       for r in sorted(by_image[image_id], key=lambda r: -r["score"]) if r["score"] > 0]
        written.append(write_image(pose_picture(image, truths, predictions, threshold),
                                   Path(out_dir) / f"pose_{image_id}.jpg"))
    return written
