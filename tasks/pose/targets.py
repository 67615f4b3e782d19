"""Gaussian heatmap targets and per-joint target weights (SimpleBaseline's encoding).

Each labelled joint becomes an unnormalised Gaussian (peak 1) centred on the heatmap pixel
nearest to the joint, cut to a window of 3 sigma, as in the reference.  The weight of a
joint is 0 when it is unlabelled or its whole window lies off the heatmap, so the loss
never asks the network to put a peak where there is no joint.

``unbiased`` (``MODEL.UNBIASED_ENCODING``, DARK's unbiased encoding) centres the Gaussian
on the exact sub-pixel position instead: rounding to the nearest pixel shifts every target
by up to half a heatmap pixel, a large error at low resolution (a 32x24 heatmap).
"""
from __future__ import annotations

import numpy as np


def encode_heatmaps(joints: np.ndarray, visible: np.ndarray, image_size, heatmap_size,
                    sigma: float, unbiased: bool = False):
    """Heatmaps ``(J, H, W)`` and weights ``(J, 1)`` for joints given in input-crop pixels.

    ``image_size`` and ``heatmap_size`` are (w, h); ``joints`` is ``(J, 2+)`` and ``visible``
    ``(J,)`` (anything > 0 counts as labelled).
    """
    num = len(joints)
    hm_w, hm_h = int(heatmap_size[0]), int(heatmap_size[1])
    stride = np.array([image_size[0] / hm_w, image_size[1] / hm_h], dtype=np.float64)
    mu = np.asarray(joints, dtype=np.float64)[:, :2] / stride
    if not unbiased:
        mu = np.floor(mu + 0.5)  # nearest pixel
    radius = sigma * 3
    weight = (np.asarray(visible).reshape(num) > 0).astype(np.float32)
    # the 3-sigma window [mu - r, mu + r] must touch the heatmap
    off = (mu[:, 0] + radius < 0) | (mu[:, 1] + radius < 0) | (mu[:, 0] - radius >= hm_w) | (mu[:, 1] - radius >= hm_h)
    weight[off] = 0.0
    dx = np.arange(hm_w)[None, :] - mu[:, :1]
    dy = np.arange(hm_h)[None, :] - mu[:, 1:]
    gx = np.where(np.abs(dx) <= radius, np.exp(-dx ** 2 / (2 * sigma ** 2)), 0.0)
    gy = np.where(np.abs(dy) <= radius, np.exp(-dy ** 2 / (2 * sigma ** 2)), 0.0)
    heatmaps = (gy[:, :, None] * gx[:, None, :]).astype(np.float32)
    heatmaps *= weight[:, None, None]
    return heatmaps, weight[:, None]
