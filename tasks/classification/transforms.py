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
enlarging uses ``interpolation`` (bilinear unless the model's data config or the config says
otherwise, see ``input_config.py``).  Images arrive as RGB uint8 HxWx3 arrays and leave as
float CHW tensors.

On top of any recipe's training side, torchvision's (``torchvision.transforms.v2``):

* ``auto_augment`` (``DATASET.AUTO_AUGMENT``): ``randaugment`` (2 operations at
  ``magnitude`` of 0..30; timm's ``rand-m9`` is 9), ``trivialaugment``, ``autoaugment``
  (the ImageNet policy), on the uint8 image after the crop and flip, before normalising;
  a cutout square is then cut before it, filled with the mean colour;
* ``random_erase`` (``DATASET.RANDOM_ERASE``): probability of erasing one rectangle of the
  normalised image (to 0, the mean), as torchvision's ``--random-erase``.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from tasks.engine.offline_albumentations import albumentations as A

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

RECIPES = ("cifar", "transfer", "none")
AUTO_AUGMENT = ("none", "randaugment", "trivialaugment", "autoaugment")
_CV2_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
                      "nearest": cv2.INTER_NEAREST, "lanczos": cv2.INTER_LANCZOS4}


class SeededTransform:
    """An albumentations pipeline whose randomness comes from torch's generator.

    Albumentations keeps its own RNG, which a DataLoader would fork unchanged into every
    worker at every epoch and which no checkpoint records.  Seeding it for every sample
    with one draw from torch's generator (seeded per worker and epoch by the loader, and
    saved in checkpoints in the main process) makes augmentation reproducible and lets a
    resumed run see the same crops as an uninterrupted one.
    """

    def __init__(self, transforms: list, then=None):
        """``then``: torchvision transforms applied to the CHW tensor afterwards (their
        randomness is torch's generator already)."""
        self.pipeline = A.Compose(transforms)
        self.then = then

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        self.pipeline.set_random_seed(int(torch.randint(0, 2**32 - 1, ())))
        out = self.pipeline(image=image)["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
        return self.then(tensor) if self.then is not None else tensor


def auto_augment_policy(name: str, magnitude: int = 9):
    """torchvision's policy ``name`` (one of :data:`AUTO_AUGMENT` but ``none``) for uint8 images."""
    if name == "randaugment":
        return v2.RandAugment(num_ops=2, magnitude=magnitude)
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    if name == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    raise ValueError(f"unknown auto-augment policy {name!r}; choose one of {AUTO_AUGMENT}")


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
    interpolation: str = "bilinear",
    auto_augment: str = "none",
    magnitude: int = 9,
    random_erase: float = 0.0,
) -> tuple[SeededTransform, SeededTransform]:
    """``(train_transform, test_transform)`` for ``recipe`` (one of :data:`RECIPES`)."""
    s, flag = image_size, _CV2_INTERPOLATION[interpolation]

    def normalise():
        return A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)

    def resize():
        return A.Resize(s, s, interpolation=flag, area_for_downscale="image")

    if recipe == "cifar":
        pad = max(1, round(s / 8))
        train = [
            resize(),
            A.PadIfNeeded(s + 2 * pad, s + 2 * pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
            A.RandomCrop(s, s),
            A.HorizontalFlip(p=0.5),
        ]
        test = [resize(), normalise()]
    elif recipe == "transfer":
        train = [
            A.RandomResizedCrop(size=(s, s), scale=(crop_scale_min, 1.0), interpolation=flag,
                                area_for_downscale="image"),
            A.HorizontalFlip(p=0.5),
        ]
        test = [
            A.SmallestMaxSize(max_size=int(round(s / test_crop_ratio)), interpolation=flag,
                              area_for_downscale="image"),
            A.CenterCrop(s, s),
            normalise(),
        ]
    elif recipe == "none":
        train = [resize()]
        test = [resize(), normalise()]
    else:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of {RECIPES}")
    train, then = _train_tail(train, normalise, mean, std, cutout if recipe == "cifar" else 0,
                              auto_augment, magnitude, random_erase)
    return SeededTransform(train, then), SeededTransform(test)


def _cutout(side: int, fill) -> A.CoarseDropout:
    """One side x side square, with probability 0.5 as in the SAM/BSAM reference code."""
    return A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(side, side),
                           hole_width_range=(side, side), fill=fill, p=0.5)


def _train_tail(train: list, normalise, mean, std, cutout: int, auto_augment: str, magnitude: int,
                random_erase: float) -> tuple[list, v2.Compose | None]:
    """Normalisation, cutout, auto-augment and random erasing after a recipe's crop and flip:
    ``(albumentations list, torchvision transforms after it or None)``."""
    erase = [v2.RandomErasing(p=random_erase, value=0)] if random_erase > 0 else []
    if auto_augment == "none":
        train = [*train, normalise()] + ([_cutout(cutout, 0)] if cutout else [])  # 0 = the mean
        return train, (v2.Compose(erase) if erase else None)
    if cutout:
        train = [*train, _cutout(cutout, tuple(round(255 * m) for m in mean))]
    then = [auto_augment_policy(auto_augment, magnitude), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)), *erase]
    return train, v2.Compose(then)
