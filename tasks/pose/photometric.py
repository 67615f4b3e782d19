"""Colour augmentation of training crops (albumentations); geometry lives in transforms.

Only pixel values change here, so joints and heatmaps need no update.  Kept mild: the
SimpleBaseline recipe has no colour jitter at all, and strong jitter slows convergence.
"""
from __future__ import annotations

import numpy as np

from tasks.engine.offline_albumentations import albumentations as A


def build_photometric() -> A.Compose:
    return A.Compose([
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=20, val_shift_limit=10, p=0.3),
        A.GaussianBlur(blur_limit=(3, 3), p=0.1),
    ])


def apply_photometric(transform: A.Compose, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply ``transform`` with randomness drawn from ``rng`` (reproducible under the run seed)."""
    transform.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    return transform(image=crop)["image"]
