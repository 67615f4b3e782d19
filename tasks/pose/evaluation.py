"""Predicted poses -> COCO results json -> ``COCOeval(..., 'keypoints')`` metrics.

The path from per-box predictions to the numbers is the reference's: rescore each pose by
box score x mean score of its confident joints, drop duplicates with OKS-NMS per image,
write the COCO results list, and let pycocotools compute AP/AR.
"""
from __future__ import annotations

import contextlib
import io
from collections import defaultdict

import numpy as np

from .nms import oks_nms

#: Names of ``COCOeval.stats`` for keypoints, in order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def rescore(keypoints: np.ndarray, box_scores: np.ndarray, vis_threshold: float) -> np.ndarray:
    """Pose score = box score x mean score of the joints scored above ``vis_threshold``."""
    joint_scores = np.asarray(keypoints)[..., 2]
    confident = joint_scores > vis_threshold
    count = confident.sum(axis=1)
    mean = np.where(count > 0, (joint_scores * confident).sum(axis=1) / np.maximum(count, 1), 0.0)
    return mean * np.asarray(box_scores, dtype=np.float64)


def coco_results(image_ids, keypoints, box_scores, areas, vis_threshold: float,
                 oks_threshold: float, use_nms: bool = True) -> list[dict]:
    """The COCO keypoint results list for N person predictions.

    ``keypoints`` is ``(N, J, 3)`` (x, y, score in image pixels), ``areas`` the box areas
    used as the OKS scale in the NMS.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    scores = rescore(keypoints, box_scores, vis_threshold)
    by_image = defaultdict(list)
    for i, image_id in enumerate(image_ids):
        by_image[int(image_id)].append(i)
    results = []
    for image_id, idx in by_image.items():
        idx = np.array(idx)
        keep = oks_nms(keypoints[idx], scores[idx], areas[idx], oks_threshold) if use_nms else range(len(idx))
        for k in keep:
            i = idx[k]
            results.append({
                "image_id": image_id, "category_id": 1,
                "keypoints": [round(float(v), 3) for v in keypoints[i].reshape(-1)],
                "score": float(scores[i]),
            })
    return results


def coco_keypoint_metrics(coco_gt, results: list[dict], image_ids=None) -> dict[str, float | None]:
    """AP/AR of ``results`` against ``coco_gt``; ``None`` for a metric with no ground truth
    to score against (COCOeval's -1: e.g. APm of a subset without medium persons, or every
    metric of an image-info set such as test-dev, whose results are still written).

    ``image_ids`` limits the evaluation to those images (default: every image of the GT).
    pycocotools' progress prints are swallowed so the run log stays readable.
    """
    from pycocotools.cocoeval import COCOeval

    if not has_keypoint_ground_truth(coco_gt, image_ids):
        return {name: None for name in METRIC_NAMES}
    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (float(v) if v >= 0 else None) for name, v in zip(METRIC_NAMES, evaluator.stats)}


def has_keypoint_ground_truth(coco_gt, image_ids=None) -> bool:
    """Whether any non-crowd person of (those images of) ``coco_gt`` has a labelled joint."""
    ids = coco_gt.imgs if image_ids is None else image_ids
    return any(
        not ann.get("iscrowd", 0) and ann.get("num_keypoints", 1) > 0
        for image_id in ids for ann in coco_gt.imgToAnns.get(int(image_id), [])
    )
