"""A random articulated person: COCO keypoints in image pixels and what to draw where."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..skeleton import NUM_JOINTS

# joint indices (COCO order)
NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SH, R_SH, L_EL, R_EL, L_WR, R_WR, L_HIP, R_HIP, L_KN, R_KN, L_AN, R_AN = range(17)

SKIN_TONES = ((189, 224, 255), (141, 186, 234), (99, 145, 198), (66, 105, 160), (45, 72, 110), (170, 205, 241))
HAIR_COLORS = ((20, 20, 20), (30, 50, 90), (40, 90, 160), (160, 160, 160), (15, 30, 60))


@dataclass
class Figure:
    """One person: keypoints (J, 2) in image pixels and what to draw where."""

    joints: np.ndarray
    labelled: np.ndarray  # bool (J,): False for face points on the far side of the head
    height: float
    head_center: np.ndarray
    head_radius: float
    up: np.ndarray  # unit vector from pelvis to neck, image coordinates
    arms_behind: tuple  # (left, right): drawn before the torso
    skin: tuple
    shirt: tuple
    pants: tuple
    hair: tuple


def _rot(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _limb(rng, start, down, outward, length1, length2, spread, bend):
    """Two-segment limb from ``start``: first segment swung ``spread`` rad from ``down``
    towards ``outward``, second bent a further ``bend`` rad (either way)."""
    sign = 1.0 if down[0] * outward[1] - down[1] * outward[0] > 0 else -1.0
    d1 = _rot(down, sign * spread)
    mid = start + length1 * d1
    d2 = _rot(d1, bend * (1.0 if rng.random() < 0.5 else -1.0))
    return mid, mid + length2 * d2


def sample_figure(rng: np.random.Generator, height: float, pelvis) -> Figure:
    """Random articulated pose of a person ``height`` pixels tall, pelvis at ``pelvis``.

    Works in a body frame (``up``: pelvis -> neck; ``side``: towards the person's left,
    which is image-right for a figure facing the camera) and returns image coordinates.
    """
    j = np.zeros((NUM_JOINTS, 2))
    tilt = float(np.clip(rng.normal(0, 0.2), -0.6, 0.6))
    up = _rot(np.array([0.0, -1.0]), tilt)  # image y points down
    side = np.array([-up[1], up[0]])  # up rotated by +90 deg: image-right when upright
    width = rng.uniform(0.85, 1.15)
    h = height
    pelvis = np.asarray(pelvis, dtype=np.float64)
    neck = pelvis + 0.30 * h * up
    j[L_HIP], j[R_HIP] = pelvis + 0.085 * h * width * side, pelvis - 0.085 * h * width * side
    j[L_SH], j[R_SH] = neck + 0.125 * h * width * side - 0.015 * h * up, neck - 0.125 * h * width * side - 0.015 * h * up
    relaxed = rng.random() < 0.5  # standing/walking-like poses, the bulk of real photos
    for sh, el, wr, s in ((L_SH, L_EL, L_WR, 1.0), (R_SH, R_EL, R_WR, -1.0)):
        spread = rng.uniform(0.0, 0.5) if relaxed else rng.uniform(-0.4, 2.9)
        bend = rng.uniform(0.0, 0.5) if relaxed else rng.uniform(0.0, 2.4)
        j[el], j[wr] = _limb(rng, j[sh], -up, s * side, 0.165 * h, 0.145 * h, spread, bend)
    for hip, kn, an, s in ((L_HIP, L_KN, L_AN, 1.0), (R_HIP, R_KN, R_AN, -1.0)):
        spread = rng.uniform(-0.05, 0.3) if relaxed else rng.uniform(-0.3, 1.0)
        bend = rng.uniform(0.0, 0.3) if relaxed else rng.uniform(0.0, 1.6)
        j[kn], j[an] = _limb(rng, j[hip], -up, s * side, 0.235 * h, 0.225 * h, spread, bend)
    # head: a sphere turned by yaw; face points on its far side are hidden
    head_up = _rot(up, float(rng.normal(0, 0.2)))
    head_side = np.array([-head_up[1], head_up[0]])
    radius = 0.08 * h
    head = neck + (0.045 * h + radius) * head_up
    yaw = float(rng.uniform(-1.1, 1.1))
    labelled = np.ones(NUM_JOINTS, dtype=bool)
    face = {NOSE: (0.0, -0.15, 1.05), L_EYE: (0.5, 0.22, 0.95), R_EYE: (-0.5, 0.22, 0.95),
            L_EAR: (math.pi / 2, 0.0, 1.0), R_EAR: (-math.pi / 2, 0.0, 1.0)}
    for k, (azimuth, elevation, r) in face.items():
        a = azimuth + yaw
        j[k] = head + radius * r * (math.sin(a) * head_side + elevation * head_up)
        labelled[k] = math.cos(a) > (-0.25 if k in (L_EAR, R_EAR) else 0.1)
    return Figure(
        joints=j, labelled=labelled, height=h, head_center=head, head_radius=radius, up=up,
        arms_behind=(rng.random() < 0.15, rng.random() < 0.15),
        skin=SKIN_TONES[rng.integers(len(SKIN_TONES))], shirt=random_color(rng), pants=random_color(rng),
        hair=HAIR_COLORS[rng.integers(len(HAIR_COLORS))])


def random_color(rng) -> tuple:
    return tuple(int(v) for v in rng.integers(0, 256, 3))
