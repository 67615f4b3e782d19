"""Albumentations pipelines for classification: the CIFAR recipe and the transfer recipe.

* ``cifar`` (train): resize to IMAGE_SIZE, zero-pad by IMAGE_SIZE/8 (4 px at 32) and take a
  random crop, horizontal flip, normalise, then optionally Cutout (a CUTOUT x CUTOUT square
  set to the mean, applied with probability 0.5 as in the SAM/BSAM reference code).
  Test: resize + normalise.
* ``transfer`` (train): random resized crop (scale CROP_SCALE_MIN..1, aspect 3/4..4/3)
  and flip, as torchvision's reference recipe.  Test: resize the shorter side to
  IMAGE_SIZE / TEST_CROP_RATIO and centre-crop IMAGE_SIZE.
* ``none``: resize + normalise for both (feature extraction, debugging).

Shrinking uses area interpolation (bilinear would alias, e.g. 128 px photos at 32 px);
enlarging is bilinear.  Images arrive as RGB uint8 HxWx3 arrays and leave as float CHW
tensors.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from tasks.engine.offline_albumentations import albumentations as A

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

RECIPES = ("cifar", "transfer", "none")


class SeededTransform:
    """An albumentations pipeline whose randomness comes from torch's generator.

    Albumentations keeps its own RNG, which a DataLoader would fork unchanged into every
    worker at every epoch and which no checkpoint records.  Seeding it for every sample
    with one draw from torch's generator (seeded per worker and epoch by the loader, and
    saved in checkpoints in the main process) makes augmentation reproducible and lets a
    resumed run see the same crops as an uninterrupted one.
    """

    def __init__(self, transforms: list):
        self.pipeline = A.Compose(transforms)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        self.pipeline.set_random_seed(int(torch.randint(0, 2**32 - 1, ())))
        out = self.pipeline(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def normalisation(recipe: str, dataset_format: str, mean, std) -> tuple[tuple, tuple]:
    """MEAN/STD from the config, else the statistics that match the data and recipe."""
    if mean and std:
        return tuple(mean), tuple(std)
    if dataset_format == "cifar100":
        return CIFAR100_MEAN, CIFAR100_STD
    if recipe == "cifar":
        return CIFAR10_MEAN, CIFAR10_STD
    return IMAGENET_MEAN, IMAGENET_STD


def build_transforms(
    recipe: str,
    image_size: int,
    mean,
    std,
    cutout: int = 0,
    crop_scale_min: float = 0.08,
    test_crop_ratio: float = 0.875,
) -> tuple[SeededTransform, SeededTransform]:
    """``(train_transform, test_transform)`` for ``recipe`` (one of :data:`RECIPES`)."""
    s = image_size

    def normalise():
        return A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)

    def resize():
        return A.Resize(s, s, interpolation=cv2.INTER_LINEAR, area_for_downscale="image")

    if recipe == "cifar":
        pad = max(1, round(s / 8))
        train = [
            resize(),
            A.PadIfNeeded(s + 2 * pad, s + 2 * pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
            A.RandomCrop(s, s),
            A.HorizontalFlip(p=0.5),
            normalise(),
        ]
        if cutout:
            train.append(
                A.CoarseDropout(
                    num_holes_range=(1, 1),
                    hole_height_range=(cutout, cutout),
                    hole_width_range=(cutout, cutout),
                    fill=0,  # 0 after normalisation = the data mean
                    p=0.5,
                )
            )
        test = [resize(), normalise()]
    elif recipe == "transfer":
        train = [
            A.RandomResizedCrop(size=(s, s), scale=(crop_scale_min, 1.0), area_for_downscale="image"),
            A.HorizontalFlip(p=0.5),
            normalise(),
        ]
        test = [
            A.SmallestMaxSize(max_size=int(round(s / test_crop_ratio)), area_for_downscale="image"),
            A.CenterCrop(s, s),
            normalise(),
        ]
    elif recipe == "none":
        train = [resize(), normalise()]
        test = [resize(), normalise()]
    else:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of {RECIPES}")
    return SeededTransform(train), SeededTransform(test)
