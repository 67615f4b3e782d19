"""COCO keypoint json / person detection json -> one record per person to crop.

Everything a user's data can get wrong is caught here, once, before training starts:
crowd and keypoint-less persons, boxes outside the image, missing image files, images
without persons and empty detection files are dropped with a count in the log (or, when
nothing usable is left, a :class:`UserError` that says what to fix).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.engine.errors import UserError

from .transforms import box_to_center_scale, detection_box

log = logging.getLogger("bsam.pose")  # a child of the run logger, so it lands in train.log


@dataclass
class PersonRecord:
    """One person to crop: the box as center/scale plus (for ground truth) its joints."""

    image_id: int
    image_path: str
    center: np.ndarray
    scale: np.ndarray
    joints: np.ndarray  # (J, 2) image pixels; zeros when unknown (detection boxes)
    visible: np.ndarray  # (J,) 1 where labelled
    score: float = 1.0  # detection score (1 for ground-truth boxes)
    box: tuple = field(default=(0.0, 0.0, 0.0, 0.0))  # x, y, w, h (ground truth: clipped)


def load_coco(ann_file: str | os.PathLike):
    """A pycocotools ``COCO`` for ``ann_file``, with a clear error for a missing/broken file."""
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise UserError(f"COCO annotation file not found: {ann_file}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann_file))
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        raise UserError(f"{ann_file} is not a COCO keypoint annotation file ({err}); "
                        "use person_keypoints_*.json from COCO 2017") from err
    return coco


def clip_box(box, width: int, height: int):
    """Clip ``x, y, w, h`` to the image (the reference's rule); ``None`` if nothing is left."""
    x, y, w, h = (float(v) for v in box[:4])
    if not all(np.isfinite([x, y, w, h])):
        return None
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x1 >= width or y1 >= height or x + w <= 0 or y + h <= 0 or x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2 - x1, y2 - y1


class _ImageFiles:
    """Memoised existence check of image files (one ``stat`` per image)."""

    def __init__(self, coco, image_dir):
        self.coco, self.image_dir, self._known = coco, Path(image_dir), {}

    def path(self, image_id) -> str | None:
        if image_id not in self._known:
            path = self.image_dir / self.coco.imgs[image_id]["file_name"]
            self._known[image_id] = str(path) if path.is_file() else None
        return self._known[image_id]


def _log_skips(what: str, kept: int, skipped: Counter) -> None:
    if skipped:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        log.info("%s: %d persons kept; skipped %s", what, kept, detail)
    else:
        log.info("%s: %d persons kept", what, kept)


def ground_truth_records(coco, image_dir, aspect_ratio: float, num_joints: int,
                         what: str = "dataset") -> list[PersonRecord]:
    """Every usable labelled person of ``coco`` (crowd, keypoint-less, off-image boxes and
    persons whose image file is missing are skipped and counted)."""
    files = _ImageFiles(coco, image_dir)
    records, skipped = [], Counter()
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        anns = coco.imgToAnns.get(image_id, [])
        persons = [a for a in anns if a.get("category_id", 1) == 1]
        if not persons:
            skipped["images without persons"] += 1
            continue
        for ann in persons:
            if ann.get("iscrowd", 0):
                skipped["crowd"] += 1
                continue
            kpts = np.asarray(ann.get("keypoints") or [], dtype=np.float32)
            if kpts.size < num_joints * 3 or not (kpts.reshape(-1, 3)[:num_joints, 2] > 0).any():
                skipped["without keypoints"] += 1
                continue
            box = clip_box(ann.get("bbox", (0, 0, 0, 0)), info["width"], info["height"])
            if box is None or ann.get("area", 1) <= 0:
                skipped["with a box outside the image"] += 1
                continue
            path = files.path(image_id)
            if path is None:
                skipped["in missing image files"] += 1
                continue
            kpts = kpts.reshape(-1, 3)[:num_joints]
            center, scale = box_to_center_scale(box, aspect_ratio)
            records.append(PersonRecord(
                image_id=int(image_id), image_path=path, center=center, scale=scale,
                joints=kpts[:, :2].copy(), visible=(kpts[:, 2] > 0).astype(np.float32), box=box))
    _log_skips(what, len(records), skipped)
    return records


def detection_records(det_file, coco, image_dir, aspect_ratio: float, num_joints: int,
                      score_threshold: float) -> list[PersonRecord]:
    """Person boxes of a COCO detection results file (``image_id, category_id, bbox, score``)
    for the images of ``coco``; boxes below ``score_threshold`` are dropped.  The boxes are
    used raw, as the reference does (ground-truth boxes are clipped to the image)."""
    det_file = Path(det_file)
    if not det_file.is_file():
        raise UserError(f"person detection file not found: {det_file}; set TEST.COCO_BBOX_FILE "
                        "or use ground-truth boxes (TEST.USE_GT_BBOX: true)")
    try:
        detections = json.loads(det_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{det_file} is not valid JSON ({err})") from err
    if not isinstance(detections, list):
        raise UserError(f"{det_file} must hold a COCO detection results list "
                        "([{image_id, category_id, bbox, score}, ...])")
    files = _ImageFiles(coco, image_dir)
    records, skipped = [], Counter()
    for det in detections:
        if not isinstance(det, dict) or "bbox" not in det or "image_id" not in det:
            skipped["malformed entries"] += 1
            continue
        if det.get("category_id", 1) != 1:
            skipped["not persons"] += 1
            continue
        score = float(det.get("score", 1.0))
        if score < score_threshold:
            skipped["below TEST.IMAGE_THRE"] += 1
            continue
        image_id = det["image_id"]
        if image_id not in coco.imgs:
            skipped["for images not in the annotation file"] += 1
            continue
        info = coco.imgs[image_id]
        box = detection_box(det["bbox"], info["width"], info["height"])  # raw, as the reference
        if box is None:
            skipped["with a box outside the image"] += 1
            continue
        path = files.path(image_id)
        if path is None:
            skipped["in missing image files"] += 1
            continue
        center, scale = box_to_center_scale(box, aspect_ratio)
        records.append(PersonRecord(
            image_id=int(image_id), image_path=path, center=center, scale=scale,
            joints=np.zeros((num_joints, 2), np.float32), visible=np.zeros(num_joints, np.float32),
            score=score, box=box))
    _log_skips(f"detections {det_file.name}", len(records), skipped)
    if not records:
        raise UserError(f"{det_file} holds no usable person boxes ({len(detections)} entries, "
                        f"{dict(skipped) or 'none'}); give a detection file for these images "
                        "or set TEST.USE_GT_BBOX: true")
    return records
