"""Drawing a figure, a cluttered background and occluders with OpenCV (sub-pixel, anti-aliased),
each with the pixel mask that tells which keypoints something drawn later hides."""
from __future__ import annotations

import math

import cv2
import numpy as np

from .figure import L_AN, L_EL, L_EYE, L_HIP, L_KN, L_SH, L_WR, NOSE, R_AN, R_EL, R_EYE, R_HIP, R_KN, R_SH, R_WR, Figure, random_color


def _pt(p) -> tuple:
    return int(round(p[0] * 16)), int(round(p[1] * 16))  # 4 fractional bits


def _line(canvas, mask, a, b, color, thickness):
    t = max(1, int(round(thickness)))
    cv2.line(canvas, _pt(a), _pt(b), color, t, cv2.LINE_AA, shift=4)
    cv2.line(mask, _pt(a), _pt(b), 255, t, cv2.LINE_8, shift=4)


def _disc(canvas, mask, c, r, color):
    cv2.circle(canvas, _pt(c), max(1, int(round(r * 16))), color, -1, cv2.LINE_AA, shift=4)
    cv2.circle(mask, _pt(c), max(1, int(round(r * 16))), 255, -1, cv2.LINE_8, shift=4)


def draw_figure(canvas: np.ndarray, fig: Figure) -> np.ndarray:
    """Draw ``fig`` onto ``canvas`` (BGR); return its pixel mask."""
    mask = np.zeros(canvas.shape[:2], np.uint8)
    j, h = fig.joints, fig.height
    socks = tuple(int(c * 0.8) for c in fig.pants)

    def arm(sh, el, wr):
        _line(canvas, mask, j[sh], j[el], fig.shirt, 0.095 * h)
        _line(canvas, mask, j[el], j[wr], fig.skin, 0.075 * h)
        _disc(canvas, mask, j[wr], 0.045 * h, fig.skin)

    for hip, kn, an in ((L_HIP, L_KN, L_AN), (R_HIP, R_KN, R_AN)):
        _line(canvas, mask, j[hip], j[kn], fig.pants, 0.125 * h)
        _line(canvas, mask, j[kn], j[an], socks, 0.1 * h)
        _disc(canvas, mask, j[an], 0.045 * h, (30, 30, 30))
    for behind, limb in zip(fig.arms_behind, ((L_SH, L_EL, L_WR), (R_SH, R_EL, R_WR))):
        if behind:
            arm(*limb)
    torso = np.array([j[L_SH], j[R_SH], j[R_HIP], j[L_HIP]])
    torso = torso + 0.25 * (torso - torso.mean(axis=0))
    poly = np.round(torso * 16).astype(np.int32)
    cv2.fillConvexPoly(canvas, poly, fig.shirt, cv2.LINE_AA, shift=4)
    cv2.fillConvexPoly(mask, poly, 255, cv2.LINE_8, shift=4)
    neck_base = (j[L_SH] + j[R_SH]) / 2
    _line(canvas, mask, neck_base, fig.head_center, fig.skin, 0.08 * h)
    for behind, limb in zip(fig.arms_behind, ((L_SH, L_EL, L_WR), (R_SH, R_EL, R_WR))):
        if not behind:
            arm(*limb)
    _disc(canvas, mask, fig.head_center, fig.head_radius, fig.skin)
    hair_center = fig.head_center + 0.45 * fig.head_radius * fig.up
    cv2.ellipse(canvas, _pt(hair_center), (int(fig.head_radius * 16 * 0.95), int(fig.head_radius * 16 * 0.6)),
                math.degrees(math.atan2(fig.up[1], fig.up[0])) + 90, 0, 360, fig.hair, -1, cv2.LINE_AA, shift=4)
    for k in (L_EYE, R_EYE):
        if fig.labelled[k]:
            cv2.circle(canvas, _pt(j[k]), max(16, int(0.012 * h * 16)), (25, 25, 25), -1, cv2.LINE_AA, shift=4)
    if fig.labelled[NOSE]:
        nose = tuple(int(c * 0.75) for c in fig.skin)
        cv2.circle(canvas, _pt(j[NOSE]), max(16, int(0.011 * h * 16)), nose, -1, cv2.LINE_AA, shift=4)
    return mask


def background(rng, height: int, width: int) -> np.ndarray:
    """Gradient plus random shapes and noise: texture the network must learn to ignore."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, height if rng.random() < 0.5 else width)
    ramp = (a[None] * (1 - t[:, None]) + b[None] * t[:, None]).astype(np.uint8)
    img = np.broadcast_to(ramp[:, None] if len(t) == height else ramp[None], (height, width, 3)).copy()
    plain = img.copy()
    for _ in range(rng.integers(2, 6)):
        color = random_color(rng)
        kind = rng.integers(3)
        p = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if kind == 0:
            q = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.rectangle(img, p, q, color, -1)
        elif kind == 1:
            cv2.circle(img, p, int(rng.integers(5, max(6, min(height, width) // 3))), color, -1, cv2.LINE_AA)
        else:
            q = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(img, p, q, color, int(rng.integers(1, 6)), cv2.LINE_AA)
    img = cv2.addWeighted(img, 0.6, plain, 0.4, 0)  # shapes a little transparent
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def occluder(rng, canvas, width, height, near) -> np.ndarray:
    """A box or disc drawn over part of a person (centre ``near``); returns its mask."""
    mask = np.zeros(canvas.shape[:2], np.uint8)
    color = random_color(rng)
    size = rng.uniform(0.12, 0.3) * min(width, height)
    c = np.asarray(near) + rng.normal(0, size, 2)
    if rng.random() < 0.5:
        p, q = (c - size / 2).astype(int), (c + size / 2).astype(int)
        for m, col in ((canvas, color), (mask, 255)):
            cv2.rectangle(m, tuple(int(v) for v in p), tuple(int(v) for v in q), col, -1)
    else:
        for m, col in ((canvas, color), (mask, 255)):
            cv2.circle(m, (int(c[0]), int(c[1])), int(size / 2), col, -1)
    return mask
