"""COCO keypoint json / person detection json -> one record per person to crop.

Everything a user's data can get wrong is caught here, once, before training starts:
crowd and keypoint-less persons, boxes outside the image, missing image files, images
without persons and empty detection files are dropped with a count in the log (or, when
nothing usable is left, a :class:`UserError` that says what to fix).  A record that breaks
the COCO format (a field missing or of the wrong type, keypoints of the wrong length, a
NaN) is a :class:`UserError` naming the file and the record: it would otherwise end in a
traceback, some only inside COCOeval after the first epoch.
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

from .skeleton import NUM_JOINTS
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


def load_coco(ann_file: str | os.PathLike, num_joints: int = NUM_JOINTS):
    """A pycocotools ``COCO`` for ``ann_file``, with a clear error for a missing/broken file."""
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise UserError(f"COCO annotation file not found: {ann_file}")
    data = _read_json(ann_file)
    check_coco(data, ann_file, num_joints)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None


def _is_int(v) -> bool:
    return type(v) is int


def _finite_numbers(values, count: int | None = None) -> bool:
    """A list of ``count`` JSON numbers, none NaN or infinite (a bool or "5" is no number)."""
    return (isinstance(values, list) and (count is None or len(values) == count)
            and all(type(v) in (int, float) and -1e308 < v < 1e308 for v in values))


def check_coco(data, path: Path, num_joints: int) -> None:
    """Refuse, in one line naming the record, what pycocotools, the records or COCOeval
    would trip over (with a traceback, some only after the first epoch)."""
    # 'annotations' may be absent: an image-info file (COCO test-dev) has images only
    if (not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories"))
            or not isinstance(data.get("annotations", []), list)):
        raise UserError(f"{path} is not a COCO keypoint annotation file (it needs the lists "
                        "'images' and 'categories', and 'annotations' unless it is an image-info "
                        "file); use person_keypoints_*.json from COCO 2017")

    def bad(where: str, problem: str):
        raise UserError(f"{path}: {where}: {problem}; fix or remove that record")

    if not any(isinstance(c, dict) and c.get("id") == 1 for c in data["categories"]):
        bad("categories", "no person category (id 1)")
    image_ids = set()
    for i, image in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(image, dict) or not _is_int(image.get("id")):
            bad(where, f"'id' must be an integer, got {_value(image, 'id')}")
        if image["id"] in image_ids:
            bad(where, f"id {image['id']} appears twice")
        image_ids.add(image["id"])
        where = f"images[{i}] (id {image['id']})"
        if not isinstance(image.get("file_name"), str):
            bad(where, f"'file_name' must be a string, got {_value(image, 'file_name')}")
        for key in ("width", "height"):
            if not (_finite_numbers([image.get(key)]) and image[key] > 0):
                bad(where, f"{key!r} must be a number > 0, got {_value(image, key)}")
    length = num_joints * 3
    for i, ann in enumerate(data.get("annotations", [])):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            bad(where, f"'id' must be an integer, got {_value(ann, 'id')}")
        where = f"annotations[{i}] (id {ann['id']})"
        for key in ("image_id", "category_id"):
            if not _is_int(ann.get(key)):
                bad(where, f"{key!r} must be an integer, got {_value(ann, key)}")
        if not _finite_numbers(ann.get("bbox"), 4):
            bad(where, f"'bbox' must be 4 numbers [x, y, w, h], got {_value(ann, 'bbox')}")
        if not (_finite_numbers([ann.get("area")]) and ann["area"] >= 0):
            bad(where, f"'area' must be a number >= 0 (COCOeval needs it), got {_value(ann, 'area')}")
        if not _is_int(ann.get("num_keypoints")):
            bad(where, "'num_keypoints' must be an integer (the labelled joints; COCOeval needs "
                       f"it), got {_value(ann, 'num_keypoints')}")
        if ann.get("iscrowd", 0) not in (0, 1):
            bad(where, f"'iscrowd' must be 0 or 1, got {_value(ann, 'iscrowd')}")
        if ann.get("keypoints") and not _finite_numbers(ann["keypoints"], length):
            bad(where, f"'keypoints' must be {length} finite numbers ({num_joints} joints x "
                       f"[x, y, v]), got {_value(ann, 'keypoints')}")


def _value(record, key) -> str:
    if not isinstance(record, dict):
        return f"a {type(record).__name__} instead of a record"
    if key not in record:
        return "nothing"
    value = record[key]
    text = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{text} ({len(value)} items)" if isinstance(value, list) else text


def clip_box(box, width: int, height: int):
    """Clip ``x, y, w, h`` to the image with the reference's corner rule (x2 = x1 + w - 1,
    inside [0, W-1]); ``None`` if nothing is left.  One difference: the reference keeps a
    box whose clipped area is zero (x2 == x1), this skips it (no crop can be cut from it)."""
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


def images_read(coco, image_dir, what: str) -> list[int]:
    """The ids of ``coco``'s images whose files exist: evaluation scores those alone, so a
    split with missing files is not scored as if every person in them had been missed.  The
    missing ones are said in one warning, with the labelled persons they hold."""
    files = _ImageFiles(coco, image_dir)
    present = [i for i in sorted(coco.imgs) if files.path(i) is not None]
    missing = [i for i in sorted(coco.imgs) if files.path(i) is None]
    if missing:
        persons = sum(1 for i in missing for a in coco.imgToAnns.get(i, [])
                      if a.get("category_id", 1) == 1 and not a.get("iscrowd", 0))
        log.warning("%s: %d of %d image files are missing (%d labelled persons, e.g. %s); they are "
                    "left out and the metrics cover the %d images read", what, len(missing),
                    len(coco.imgs), persons, coco.imgs[missing[0]]["file_name"], len(present))
    return present


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


def _check_detection(det: dict, where: str) -> None:
    problem = None
    if not _is_int(det["image_id"]):
        problem = f"'image_id' must be an integer, got {_value(det, 'image_id')}"
    elif not _is_int(det.get("category_id", 1)):
        problem = f"'category_id' must be an integer, got {_value(det, 'category_id')}"
    elif not _finite_numbers(det["bbox"], 4):
        problem = f"'bbox' must be 4 numbers [x, y, w, h], got {_value(det, 'bbox')}"
    elif not _finite_numbers([det.get("score", 1.0)]):
        problem = f"'score' must be a number, got {_value(det, 'score')}"
    if problem:
        raise UserError(f"{where}: {problem}; fix the detection results file")


def detection_records(det_file, coco, image_dir, aspect_ratio: float, num_joints: int,
                      score_threshold: float) -> list[PersonRecord]:
    """Person boxes of a COCO detection results file (``image_id, category_id, bbox, score``)
    for the images of ``coco``; boxes below ``score_threshold`` are dropped.  The boxes are
    used raw, as the reference does (ground-truth boxes are clipped to the image)."""
    det_file = Path(det_file)
    if not det_file.is_file():
        raise UserError(f"person detection file not found: {det_file}; set TEST.COCO_BBOX_FILE "
                        "or use ground-truth boxes (TEST.USE_GT_BBOX: true)")
    detections = _read_json(det_file)
    if not isinstance(detections, list):
        raise UserError(f"{det_file} must hold a COCO detection results list "
                        "([{image_id, category_id, bbox, score}, ...])")
    files = _ImageFiles(coco, image_dir)
    records, skipped = [], Counter()
    for i, det in enumerate(detections):
        if not isinstance(det, dict) or "bbox" not in det or "image_id" not in det:
            skipped["malformed entries"] += 1
            continue
        _check_detection(det, f"{det_file}: entry {i}")
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
