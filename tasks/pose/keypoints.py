"""Heatmaps -> keypoints with NumPy alone: argmax, sub-pixel refinement, back-projection.

This is the inverse of :mod:`targets` and :func:`transforms.affine_matrix`: a peak at
heatmap pixel (x, y) goes back to the image through the inverse of the affine that maps
the person box onto the heatmap grid.  It imports neither torch nor OpenCV, so that an
exported model decodes with NumPy and onnxruntime only (:mod:`onnx_decode`); the
evaluation (:mod:`decode`) runs the same functions.

Two sub-pixel refinements (``TEST.POST_PROCESS``): ``true`` is SimpleBaseline's quarter
pixel towards the higher neighbour (the reference); ``dark`` is DARK's (Zhang et al., CVPR
2020): smooth the heatmap with a Gaussian (``TEST.BLUR_KERNEL``) so it is close to the
Gaussian it was trained to be, take its log (a Gaussian's log is a quadratic) and move
the argmax by one Newton step on that quadratic, which finds the peak to a small fraction
of a pixel instead of to a quarter.
"""
from __future__ import annotations

import numpy as np

from .transforms import affine_matrix, apply_affine, invert_affine

#: OpenCV's fixed taps for the small kernels when no sigma is given (``getGaussianKernel``).
SMALL_KERNELS = {1: [1.0], 3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
                 7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
                 9: [v / 256 for v in (4, 13, 30, 51, 60, 51, 30, 13, 4)]}


def gaussian_kernel(size: int) -> np.ndarray:
    """The taps of OpenCV's ``getGaussianKernel(size, 0)``: sigma from the size, as DARK's
    authors blur (``cv2.GaussianBlur(hm, (k, k), 0)``)."""
    if size in SMALL_KERNELS:
        return np.array(SMALL_KERNELS[size], dtype=np.float64)
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = np.arange(size, dtype=np.float64) - (size - 1) * 0.5
    taps = np.exp(-0.5 / (sigma * sigma) * x * x)
    return taps / taps.sum()


def argmax_keypoints(heatmaps: np.ndarray):
    """Peak location ``(N, J, 2)`` (x, y in heatmap pixels) and value ``(N, J, 1)``.

    A joint whose peak is not positive gets location (0, 0), as in the reference.
    """
    n, j, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, j, h * w)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)
    coords = np.stack([idx % w, idx // w], axis=2).astype(np.float64)
    coords *= maxvals > 0
    return coords, maxvals


def refine_quarter_pixel(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Move each peak a quarter pixel towards its higher neighbour (SimpleBaseline's
    cheap sub-pixel estimate), only where the reference does: 1 < x < W-1 and 1 < y < H-1
    (peaks in the first two columns/rows and the last one stay where they are)."""
    n, j, h, w = heatmaps.shape
    px = np.floor(coords[..., 0] + 0.5).astype(int)
    py = np.floor(coords[..., 1] + 0.5).astype(int)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    pxc, pyc = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)
    ni, ji = np.meshgrid(np.arange(n), np.arange(j), indexing="ij")
    dx = heatmaps[ni, ji, pyc, pxc + 1] - heatmaps[ni, ji, pyc, pxc - 1]
    dy = heatmaps[ni, ji, pyc + 1, pxc] - heatmaps[ni, ji, pyc - 1, pxc]
    shift = np.stack([np.sign(dx), np.sign(dy)], axis=2) * 0.25 * inside[..., None]
    return coords + shift


def gaussian_blur(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """Each map smoothed by OpenCV's ``kernel`` x ``kernel`` Gaussian (zero outside the map),
    then rescaled to keep its own maximum, as DARK's authors do."""
    radius = kernel // 2
    taps = gaussian_kernel(kernel)

    def banded(size):  # the 1-D convolution as a matrix, so one matmul blurs every map
        offsets = np.arange(size)[None, :] - np.arange(size)[:, None]
        return np.where(np.abs(offsets) <= radius, taps[np.clip(offsets + radius, 0, 2 * radius)], 0.0)

    h, w = heatmaps.shape[2:]
    blurred = banded(h) @ heatmaps @ banded(w)
    old_max, new_max = heatmaps.max(axis=(2, 3), keepdims=True), blurred.max(axis=(2, 3), keepdims=True)
    return blurred * np.divide(old_max, new_max, out=np.ones_like(new_max), where=new_max > 0)


def refine_dark(heatmaps: np.ndarray, coords: np.ndarray, blur_kernel: int = 11) -> np.ndarray:
    """DARK's refinement: a second-order Taylor (Newton) step on the log of the blurred
    heatmap at each integer peak, -H^-1 g; peaks within two pixels of the border and those
    whose Hessian is singular (e.g. a flat map) stay where they are."""
    n, j, h, w = heatmaps.shape
    blurred = gaussian_blur(heatmaps.astype(np.float64), blur_kernel)
    px, py = coords[..., 0].astype(int), coords[..., 1].astype(int)
    inside = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    px, py = np.clip(px, 2, w - 3), np.clip(py, 2, h - 3)
    ni, ji = np.meshgrid(np.arange(n), np.arange(j), indexing="ij")

    def at(ox, oy):  # the log of the blurred map, only where the step needs it
        return np.log(np.maximum(blurred[ni, ji, py + oy, px + ox], 1e-10))

    dx, dy = (at(1, 0) - at(-1, 0)) / 2, (at(0, 1) - at(0, -1)) / 2
    peak = at(0, 0)
    dxx = (at(2, 0) - 2 * peak + at(-2, 0)) / 4
    dyy = (at(0, 2) - 2 * peak + at(0, -2)) / 4
    dxy = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / 4
    det = dxx * dyy - dxy ** 2
    ok = inside & (det != 0)
    safe = np.where(ok, det, 1)
    shift = np.stack([-(dyy * dx - dxy * dy) / safe, -(dxx * dy - dxy * dx) / safe], axis=2)
    return coords + shift * ok[..., None]


def heatmap_to_image(coords: np.ndarray, center, scale, heatmap_size) -> np.ndarray:
    """Back-project ``(J, 2)`` heatmap coordinates of one person into image pixels."""
    inverse = invert_affine(affine_matrix(center, scale, 0.0, heatmap_size))
    return apply_affine(coords, inverse)


def decode_heatmaps(heatmaps: np.ndarray, centers, scales, refine: bool | str = True,
                    blur_kernel: int = 11):
    """Image-space keypoints ``(N, J, 2)`` and scores ``(N, J, 1)`` for a batch.

    ``refine`` is ``TEST.POST_PROCESS``: True (quarter pixel), False (none) or ``"dark"``
    (with ``blur_kernel``, ``TEST.BLUR_KERNEL``)."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    coords, maxvals = argmax_keypoints(heatmaps)
    if refine == "dark":
        coords = refine_dark(heatmaps, coords, blur_kernel)
    elif refine:
        coords = refine_quarter_pixel(heatmaps, coords)
    size = (heatmaps.shape[3], heatmaps.shape[2])
    preds = np.stack([heatmap_to_image(c, ctr, s, size) for c, ctr, s in zip(coords, centers, scales)])
    return preds, maxvals
