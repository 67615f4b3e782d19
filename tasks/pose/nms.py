"""OKS-based non-maximum suppression of person poses (pure NumPy).

Two detection boxes on one person give two almost identical poses; COCO counts the
lower-scored one as a false positive.  SimpleBaseline keeps, greedily by score, each pose
whose object keypoint similarity (OKS) with every kept pose is at most ``threshold``.
"""
from __future__ import annotations

import numpy as np

from .skeleton import OKS_SIGMAS


def oks_similarity(ref: np.ndarray, ref_area: float, others: np.ndarray, other_areas: np.ndarray,
                   sigmas: np.ndarray = OKS_SIGMAS, vis_threshold: float | None = None) -> np.ndarray:
    """OKS of pose ``ref`` ``(J, 3)`` with each of ``others`` ``(M, J, 3)``.

    The scale is the mean of the two areas.  With ``vis_threshold`` only joints scored
    above it in both poses count (a pose with none of them gets similarity 0).
    """
    variances = (2.0 * sigmas) ** 2
    d2 = ((others[..., :2] - ref[None, :, :2]) ** 2).sum(axis=2)
    scale = (ref_area + other_areas)[:, None] / 2.0 + np.spacing(1)
    e = d2 / variances[None, :] / scale / 2.0
    terms = np.exp(-e)
    if vis_threshold is None:
        return terms.mean(axis=1)
    used = (ref[None, :, 2] > vis_threshold) & (others[..., 2] > vis_threshold)
    count = used.sum(axis=1)
    return np.where(count > 0, (terms * used).sum(axis=1) / np.maximum(count, 1), 0.0)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float,
            sigmas: np.ndarray = OKS_SIGMAS, vis_threshold: float | None = None) -> list[int]:
    """Indices of the poses to keep, highest score first."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    areas = np.asarray(areas, dtype=np.float64)
    keep = []
    while order:
        best, rest = order[0], np.array(order[1:], dtype=int)
        keep.append(int(best))
        if len(rest) == 0:
            break
        oks = oks_similarity(keypoints[best], areas[best], keypoints[rest], areas[rest], sigmas, vis_threshold)
        order = list(rest[oks <= threshold])
    return keep
