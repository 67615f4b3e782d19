"""Reading images and turning crops into network input, identically for train and test.

The network sees RGB (or BGR with ``DATASET.COLOR_RGB: false``, as old SimpleBaseline
configs did) normalised with the ImageNet mean/std that the torchvision backbones were
trained with; :mod:`dataset` and :mod:`predict` both go through :func:`to_input`.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from tasks.engine.imagefile import read_bgr

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def read_image(path, rgb: bool = True) -> np.ndarray:
    """HxWx3 uint8 image; EXIF orientation is ignored because COCO labels the raw pixels."""
    image = read_bgr(path, apply_orientation=False)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image


def to_input(crop: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 crop -> normalised float CHW tensor."""
    x = (crop.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

