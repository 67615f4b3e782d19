"""Keypoints from an exported pose model with NumPy and onnxruntime only (no torch, no OpenCV).

``tools/export.py`` records in the ONNX file's metadata what the evaluation does around the
network (input size, colour order, normalisation, flip test, heatmap shift, sub-pixel
refinement, DARK's blur kernel), and :class:`PoseSession` does the same: the crop of each
person box, the network on it (and on its mirror image with the flip test), the decoding of
the heatmaps into image pixels.  So it gives what ``tools/eval.py --image`` gives::

    from tasks.pose.onnx_decode import PoseSession
    poses = PoseSession("pose.onnx").predict(image_rgb, [[x, y, w, h], ...])   # P x 17 x (x, y, score)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .keypoints import decode_heatmaps
from .skeleton import flip_permutation
from .transforms import affine_matrix, box_to_center_scale, detection_box, invert_affine


def _fma(a, b, c) -> np.ndarray:
    """float32 ``a * b + c`` rounded once, as a fused multiply-add (the product of two
    float32 numbers is exact in float64)."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(np.float32)


def warp_crop(image: np.ndarray, matrix: np.ndarray, size) -> np.ndarray:
    """``image`` (H x W x C uint8) resampled into a ``size`` (w, h) crop by the 2x3 ``matrix``
    (image -> crop): bilinear, black outside the image, in OpenCV's arithmetic (``warpAffine``
    of OpenCV 5.0: float32 source coordinates and interpolation, rounded to uint8), so that
    the crop is the one ``tools/eval.py`` feeds the network (with the OpenCV pyproject pins)."""
    width, height = int(size[0]), int(size[1])
    back = invert_affine(matrix).astype(np.float32)
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    sx = _fma(back[0, 0], xs, ys * back[0, 1] + back[0, 2])
    sy = _fma(back[1, 0], xs, ys * back[1, 1] + back[1, 2])
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    rows, cols = image.shape[:2]
    padded = np.zeros((rows + 2, cols + 2, image.shape[2]), dtype=np.float32)
    padded[1:-1, 1:-1] = image

    def pixel(y, x):  # zero outside the image (the padding and beyond)
        return padded[np.clip(y + 1, 0, rows + 1), np.clip(x + 1, 0, cols + 1)]

    top = _fma(fx, pixel(y0, x0 + 1) - pixel(y0, x0), pixel(y0, x0))
    bottom = _fma(fx, pixel(y0 + 1, x0 + 1) - pixel(y0 + 1, x0), pixel(y0 + 1, x0))
    return np.clip(np.rint(_fma(fy, bottom - top, top)), 0, 255).astype(np.uint8)


def flip_back(heatmaps: np.ndarray, shift: bool = True) -> np.ndarray:
    """Heatmaps of the mirrored crops mirrored back, left and right joints swapped, and with
    ``shift`` moved one pixel right, as the evaluation does (``decode.flip_back``)."""
    out = heatmaps[:, flip_permutation(heatmaps.shape[1]), :, ::-1]
    if shift:
        out = np.concatenate([out[..., :1], out[..., :-1]], axis=3)
    return np.ascontiguousarray(out)


class PoseSession:
    """An exported pose model (``tools/export.py``) with the evaluation's pre- and post-processing."""

    def __init__(self, path: str | Path, providers=("CPUExecutionProvider",)):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=list(providers))
        meta = self.session.get_modelmeta().custom_metadata_map
        if "decoding" not in meta:
            raise ValueError(f"{path} has no 'decoding' metadata: export it again with tools/export.py")
        self.input = json.loads(meta["input"])
        self.decoding = json.loads(meta["decoding"])
        self.size = (int(self.input["width"]), int(self.input["height"]))

    def crops(self, image_rgb: np.ndarray, boxes) -> tuple[np.ndarray, list, list]:
        """The network input of each ``x, y, w, h`` box, and the boxes' centres and scales."""
        image = image_rgb if self.input["color"] == "RGB" else image_rgb[..., ::-1]
        mean, std = np.float32(self.input["mean"]), np.float32(self.input["std"])
        height, width = image.shape[:2]
        inputs, centers, scales = [], [], []
        for box in boxes:
            if detection_box(box, width, height) is None:
                raise ValueError(f"box {list(box)} is not x, y, w, h with w, h > 0 inside the image")
            center, scale = box_to_center_scale(box, self.size[0] / self.size[1],
                                                float(self.decoding["box_padding"]))
            crop = warp_crop(image, affine_matrix(center, scale, 0.0, self.size), self.size)
            inputs.append(((crop.astype(np.float32) / np.float32(255.0) - mean) / std).transpose(2, 0, 1))
            centers.append(center)
            scales.append(scale)
        return np.ascontiguousarray(np.stack(inputs)), centers, scales

    def heatmaps(self, inputs: np.ndarray) -> np.ndarray:
        """The network's heatmaps, averaged with those of the mirrored input under the flip test."""
        run = lambda x: self.session.run(None, {"input": x})[0]  # noqa: E731
        heatmaps = run(inputs)
        if self.decoding["flip_test"]:
            mirrored = run(np.ascontiguousarray(inputs[..., ::-1]))
            heatmaps = (heatmaps + flip_back(mirrored, self.decoding["shift_heatmap"])) * np.float32(0.5)
        return heatmaps

    def predict(self, image_rgb: np.ndarray, boxes) -> np.ndarray:
        """``(P, J, 3)``: x, y in image pixels and the score of every joint of each box's person."""
        inputs, centers, scales = self.crops(np.asarray(image_rgb), boxes)
        coords, scores = decode_heatmaps(self.heatmaps(inputs), centers, scales,
                                         self.decoding["post_process"], int(self.decoding["blur_kernel"]))
        return np.concatenate([coords, scores], axis=2)
