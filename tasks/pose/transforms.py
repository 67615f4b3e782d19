"""Geometry of a top-down crop: box -> (center, scale), the affine warp, flips, half-body.

Convention: ``center`` is the box centre in image pixels and ``scale`` the (w, h) in
pixels of the region that fills the network input (SimpleBaseline keeps it in units of
200 px; plain pixels say the same thing without the magic number).  One 2x3 affine matrix
does crop, resize, rotation and horizontal flip at once, so images, joints and the
back-projection of predictions all go through the same numbers.
"""
from __future__ import annotations

import math

import numpy as np

from .skeleton import LOWER_BODY, UPPER_BODY, flip_permutation

#: SimpleBaseline enlarges every person box by 25 % so limbs at the border stay inside.
BOX_PADDING = 1.25


def box_to_center_scale(box, aspect_ratio: float, padding: float = BOX_PADDING):
    """Center and padded (w, h) of an ``x, y, w, h`` box, grown to ``w / h == aspect_ratio``."""
    x, y, w, h = (float(v) for v in box[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    scale = np.array([w, h], dtype=np.float32) * padding
    return center, scale


def detection_box(box, width: int, height: int):
    """A detection's ``x, y, w, h`` as the reference crops it: raw, not clipped to the image
    (ground-truth boxes are).  ``None`` when it holds no pixel of the image (non-finite,
    w or h <= 0, or wholly outside): such a crop would be black, a sure false positive."""
    try:
        x, y, w, h = (float(v) for v in box[:4])
    except (TypeError, ValueError):
        return None
    if not np.isfinite([x, y, w, h]).all() or w <= 0 or h <= 0:
        return None
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return None
    return x, y, w, h


def affine_matrix(center, scale, rotation: float, output_size, flip: bool = False) -> np.ndarray:
    """2x3 matrix mapping image pixels into an ``output_size`` (w, h) crop.

    The region of width ``scale[0]`` around ``center`` fills the output width; the crop is
    rotated by ``rotation`` degrees (the SimpleBaseline direction) and, with ``flip``,
    mirrored so that pixel ``x`` of the plain crop lands on ``w - 1 - x``.
    """
    out_w, out_h = float(output_size[0]), float(output_size[1])
    s = out_w / float(scale[0])
    theta = math.radians(rotation)
    cos, sin = math.cos(theta) * s, math.sin(theta) * s
    linear = np.array([[cos, sin], [-sin, cos]], dtype=np.float64)
    offset = np.array([out_w * 0.5, out_h * 0.5]) - linear @ np.asarray(center, dtype=np.float64)
    matrix = np.concatenate([linear, offset[:, None]], axis=1)
    if flip:
        matrix[0] = -matrix[0]
        matrix[0, 2] += out_w - 1.0
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse 2x3 affine, computed as OpenCV's ``invertAffineTransform`` computes it."""
    (a, b, c), (d, e, f) = np.asarray(matrix, dtype=np.float64)
    det = a * e - b * d
    inv = 1.0 / det if det != 0 else 0.0
    a2, b2, d2, e2 = e * inv, -b * inv, -d * inv, a * inv
    return np.array([[a2, b2, -a2 * c - b2 * f], [d2, e2, -d2 * c - e2 * f]])


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Transform ``(..., 2)`` points with a 2x3 matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_image(image: np.ndarray, matrix: np.ndarray, output_size) -> np.ndarray:
    """Crop with bilinear sampling; outside the image is black (as in SimpleBaseline)."""
    import cv2  # here, not at the top: the rest of the geometry serves NumPy-only decoding

    return cv2.warpAffine(
        image, matrix, (int(output_size[0]), int(output_size[1])), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def flip_joints(joints: np.ndarray, visible: np.ndarray, matrix_flipped: bool):
    """Swap left/right joint identities after a mirrored warp (coordinates already mirrored)."""
    if not matrix_flipped:
        return joints, visible
    perm = flip_permutation(len(joints))
    return joints[perm], visible[perm]


def random_scale_rotation(rng: np.random.Generator, scale_factor: float, rot_factor: float,
                          rotation_prob: float = 0.6):
    """SimpleBaseline's augmentation: scale ~ N(1, sf) clipped to 1±sf, rotation ~ N(0, rf)
    clipped to ±2rf and applied with probability 0.6."""
    s = float(np.clip(rng.standard_normal() * scale_factor + 1.0, 1.0 - scale_factor, 1.0 + scale_factor))
    r = 0.0
    if rot_factor > 0 and rng.random() <= rotation_prob:
        r = float(np.clip(rng.standard_normal() * rot_factor, -2.0 * rot_factor, 2.0 * rot_factor))
    return s, r


def half_body_center_scale(joints: np.ndarray, visible: np.ndarray, aspect_ratio: float,
                           rng: np.random.Generator):
    """Center/scale of the upper or lower body alone (None when too few joints are labelled),
    chosen as HRNet's ``half_body_transform`` chooses it.

    The upper body (visible joints 0-10) is taken when a standard normal draw is below 0.5
    (probability ~0.69, HRNet's ``randn() < 0.5``) and it has more than 2 joints; otherwise
    the lower body if it has more than 2, else the upper.  The centre is the mean of the
    chosen joints; their box is grown to the aspect ratio and by 1.5.  A half whose joints
    all coincide (HRNet would crop a zero-size box) gives None.
    """
    vis = visible > 0
    upper = [j for j in UPPER_BODY if j < len(joints) and vis[j]]
    lower = [j for j in LOWER_BODY if j < len(joints) and vis[j]]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    pts = np.asarray(joints, dtype=np.float32)[chosen, :2]
    w, h = pts.max(axis=0) - pts.min(axis=0)
    if w <= 0 and h <= 0:
        return None
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return pts.mean(axis=0), np.array([w, h], dtype=np.float32) * 1.5
