"""The COCO person-keypoint layout: names, left/right pairs, limbs and OKS sigmas.

Every module that needs to know which joint is which (flips, half-body crops, drawing,
OKS-NMS, the synthetic figures) reads it from here, so the layout is written once.
"""
from __future__ import annotations

import numpy as np

KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_JOINTS = len(KEYPOINT_NAMES)

#: (left, right) index pairs that swap under a horizontal flip.
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

#: Limbs as 0-based index pairs (COCO's ``categories[0].skeleton`` minus one).
SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

#: Joints of the upper / lower body, used by the half-body augmentation.
UPPER_BODY = tuple(range(0, 11))
LOWER_BODY = tuple(range(11, 17))

#: Per-keypoint OKS constants of COCO (``cocoeval.Params.kpt_oks_sigmas``).
OKS_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72,
     0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89], dtype=np.float64) / 10.0


def flip_permutation(num_joints: int = NUM_JOINTS) -> np.ndarray:
    """Index array ``p`` such that ``joints[p]`` swaps every left joint with its right twin."""
    perm = np.arange(num_joints)
    for left, right in FLIP_PAIRS:
        if right < num_joints:
            perm[left], perm[right] = right, left
    return perm


def coco_category() -> dict:
    """The ``categories`` entry of a COCO person-keypoint json (1-based skeleton)."""
    return {
        "supercategory": "person", "id": 1, "name": "person",
        "keypoints": list(KEYPOINT_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
    }
