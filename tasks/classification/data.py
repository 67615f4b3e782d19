"""Build the (train, test) classification datasets from the ``DATASET`` config section.

Formats (``DATASET.FORMAT``):

* ``imagefolder``: ``ROOT/TRAIN_SET/<class>/<image>`` and ``ROOT/TEST_SET/<class>/<image>``;
  classes are the sorted folder names of the training split.
* ``cifar10`` / ``cifar100``: torchvision's extracted python format, ``ROOT`` being the
  folder that holds ``cifar-10-batches-py`` / ``cifar-100-python`` (or that folder itself).
  Missing files are an error telling where to put the archive; nothing downloads.
* ``auto`` (default): CIFAR if ROOT holds (or is) one of those folders, else imagefolder.

Training subset (``DATASET.TRAIN_PER_CLASS``, 0 = all): the first N training images of
each class in the split's own order (sorted file names; CIFAR's file order), so that a
small run sees the same images whatever its seed.  It is applied before label noise.

Label noise (``DATASET.LABEL_NOISE``, robustness studies): symmetric noise at rate r in
[0, 1).  Exactly round(r * N) training samples, chosen at random, get a label drawn
uniformly from the *other* classes, so r is the fraction of wrong labels (not r * (K-1)/K
as with "uniform over all classes" noise).  The choice depends only on
``DATASET.LABEL_NOISE_SEED``, not on the training ``SEED``: runs that compare optimizers
or training seeds see the same corrupted labels.  Test labels are never changed.

Validation split (``DATASET.VAL_FROM_TRAIN``, a fraction in [0, 1), 0 = off): that fraction
of each class's training images (after ``TRAIN_PER_CLASS``, before label noise, so its
labels stay clean) becomes the set the run evaluates, with the test transform; the test
split is then read only by ``tools/eval.py``.  Tuning on it never sees the test images.
The choice depends only on ``DATASET.VAL_SEED``, so every trial of a sweep and every
training seed shares one split.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np

from tasks.engine.errors import UserError

from .cifar import LAYOUT as CIFAR_LAYOUT
from .cifar import cifar_folder, read_cifar
from .image_folder import ArrayImages, ImageFolder, LabelledImages
from .input_config import input_config
from .transforms import build_transforms

log = logging.getLogger("bsam.classification")  # a child of the run logger: lands in train.log

FORMATS = ("auto", "imagefolder", "cifar10", "cifar100")


def detect_format(root: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    for name, layout in CIFAR_LAYOUT.items():
        if root.name == layout[0] or (root / layout[0]).is_dir():
            return name
    return "imagefolder"


def symmetric_label_noise(targets, num_classes: int, rate: float, seed: int) -> tuple[list[int], np.ndarray]:
    """``(noisy targets, indices that were changed)``; see the module docstring."""
    targets = np.asarray(targets, dtype=np.int64)
    if not 0.0 <= rate < 1.0:
        raise UserError(f"DATASET.LABEL_NOISE must be in [0, 1), got {rate}")
    if rate == 0.0 or num_classes < 2:
        return targets.tolist(), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(targets), size=int(round(rate * len(targets))), replace=False))
    # An offset in 1..K-1 added modulo K picks uniformly among the other classes.
    offsets = rng.integers(1, num_classes, size=len(flipped))
    noisy = targets.copy()
    noisy[flipped] = (targets[flipped] + offsets) % num_classes
    return noisy.tolist(), flipped


def first_per_class(targets, per_class: int) -> list[int]:
    """Indices of the first ``per_class`` samples of each class, in dataset order."""
    seen: dict[int, int] = {}
    kept = []
    for index, label in enumerate(targets):
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            kept.append(index)
    return kept


def stratified_split(targets, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(kept, held out)`` indices, disjoint and in dataset order: ``round(fraction * n)``
    of each class's ``n`` samples held out (at least one when ``fraction > 0``, never all)."""
    targets = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        count = min(max(int(round(fraction * len(members))), 1), len(members) - 1)
        held.append(rng.choice(members, size=count, replace=False))
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(targets)), held_out)
    return kept.tolist(), held_out.tolist()


def split_validation(train: LabelledImages, fraction: float, seed: int, transform) -> LabelledImages:
    """Move ``fraction`` of ``train`` (stratified by class) into a validation set it returns."""
    kept, held_out = stratified_split(train.targets, fraction, seed)
    val = copy.copy(train)
    val.keep(held_out)
    val.transform = transform
    train.keep(kept)
    return val


def _root_format_transforms(cfg):
    d = cfg.DATASET
    if bool(d.MEAN) != bool(d.STD):
        raise UserError("DATASET.MEAN and DATASET.STD must be given together (or both left [])")
    if not d.ROOT:
        raise UserError("DATASET.ROOT is empty: set it to an image folder or a CIFAR folder")
    root = cfg.resolve_path(d.ROOT)
    fmt = detect_format(root, d.FORMAT)
    spec = input_config(cfg, fmt)
    log.info(spec.describe())
    train_tf, test_tf = build_transforms(
        d.AUGMENT, spec.size, spec.mean, spec.std, d.CUTOUT, d.CROP_SCALE_MIN, d.TEST_CROP_RATIO,
        spec.interpolation, d.AUTO_AUGMENT, d.AUTO_AUGMENT_MAGNITUDE, d.RANDOM_ERASE,
    )
    return root, fmt, train_tf, test_tf


def build_test_dataset(cfg) -> LabelledImages:
    """The test split alone (evaluation): no training images are read.  An image folder's
    classes are the training split's folder names, as in training, so that a test folder of
    other class names is refused rather than scored under the wrong names; without the
    training split, its own sorted folder names when it has all MODEL.NUM_CLASSES of them."""
    d = cfg.DATASET
    root, fmt, _, test_tf = _root_format_transforms(cfg)
    if fmt != "imagefolder":
        images, labels, classes = read_cifar(root, fmt, train=False)
        return ArrayImages(images, labels, classes, test_tf)
    train_dir = root / d.TRAIN_SET
    if train_dir.is_dir():
        names = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        return ImageFolder(root / d.TEST_SET, test_tf, classes=names)
    test = ImageFolder(root / d.TEST_SET, test_tf)
    if len(test.classes) != cfg.MODEL.NUM_CLASSES:
        raise UserError(
            f"{root / d.TEST_SET} has {len(test.classes)} class folders but MODEL.NUM_CLASSES is "
            f"{cfg.MODEL.NUM_CLASSES}: give the test split every class folder (empty ones too) "
            f"or keep {train_dir} for the class names")
    return test


def build_image_datasets(cfg) -> tuple[LabelledImages, LabelledImages]:
    """``(train, test)`` datasets with transforms, label noise and a NUM_CLASSES check;
    ``(train, validation)`` with ``DATASET.VAL_FROM_TRAIN`` (the test split is not read)."""
    d = cfg.DATASET
    root, fmt, train_tf, test_tf = _root_format_transforms(cfg)
    train = _training_split(cfg, root, fmt, train_tf)
    if d.TRAIN_PER_CLASS:
        train.keep(first_per_class(train.targets, d.TRAIN_PER_CLASS))
    if d.VAL_FROM_TRAIN:
        evaluated, kind = split_validation(train, d.VAL_FROM_TRAIN, d.VAL_SEED, test_tf), "validation"
    elif fmt == "imagefolder":
        evaluated, kind = ImageFolder(root / d.TEST_SET, test_tf, classes=train.classes), "test"
        evaluated.check_files()  # a broken test image would otherwise stop the run after epoch 1
    else:
        images, labels, _ = read_cifar(root, fmt, train=False)
        evaluated, kind = ArrayImages(images, labels, train.classes, test_tf), "test"
    if d.LABEL_NOISE:
        train.targets, flipped = symmetric_label_noise(
            train.targets, len(train.classes), d.LABEL_NOISE, d.LABEL_NOISE_SEED
        )
        log.info("label noise: %d of %d training labels changed", len(flipped), len(train))
    log.info(
        "data (%s): %d train / %d %s images, %d classes, %s augmentation",
        fmt, len(train), len(evaluated), kind, len(train.classes), d.AUGMENT,
    )
    return train, evaluated


def _training_split(cfg, root: Path, fmt: str, transform) -> LabelledImages:
    """The whole training split, its classes checked against MODEL.NUM_CLASSES."""
    d = cfg.DATASET
    if fmt == "imagefolder":
        if not root.is_dir():
            raise UserError(f"DATASET.ROOT {d.ROOT!r} not found (looked at {root.resolve()})")
        train = ImageFolder(root / d.TRAIN_SET, transform)
        where = f"{root / d.TRAIN_SET} (DATASET.ROOT/TRAIN_SET)"
    else:
        images, labels, classes = read_cifar(root, fmt, train=True)
        train = ArrayImages(images, labels, classes, transform)
        where = str(cifar_folder(root, fmt))
    if len(train.classes) != cfg.MODEL.NUM_CLASSES:
        raise UserError(
            f"MODEL.NUM_CLASSES is {cfg.MODEL.NUM_CLASSES} but {where} has "
            f"{len(train.classes)} classes; set MODEL.NUM_CLASSES: {len(train.classes)}"
        )
    return train
