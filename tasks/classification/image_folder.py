"""Image datasets in memory (CIFAR) or on disk (``<split>/<class>/<image>``, the ImageFolder layout).

Decoding is :func:`tasks.engine.imagefile.read_bgr` (OpenCV, PIL for formats OpenCV lacks);
a file neither can decode is a :class:`UserError` naming it, so one corrupt JPEG among
thousands is easy to find instead of surfacing as a cryptic error deep inside a DataLoader
worker.  :meth:`ImageFolder.check_files` reads every header up front (the test split's, so a
broken file is found before the first epoch, not after it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from torch.utils.data import Dataset

from tasks.engine.errors import UserError
from tasks.engine.imagefile import check_image_file, read_bgr

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode ``path`` into an RGB uint8 HxWx3 array, or raise UserError naming the file."""
    return cv2.cvtColor(read_bgr(path), cv2.COLOR_BGR2RGB)


class LabelledImages(Dataset):
    """Base: ``targets`` (one int per sample, replaceable e.g. by label noise) and ``classes``."""

    def __init__(self, targets: Sequence[int], classes: Sequence[str], transform: Callable | None):
        self.targets = list(targets)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def keep(self, indices: Sequence[int]) -> None:
        """Keep only the samples at ``indices`` (a training subset)."""
        self.targets = [self.targets[i] for i in indices]
        self._keep(list(indices))

    def _keep(self, indices: list[int]) -> None:
        raise NotImplementedError

    def __getitem__(self, index: int):
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


class ArrayImages(LabelledImages):
    """Images held in one uint8 N x H x W x 3 array (CIFAR)."""

    def __init__(self, images: np.ndarray, targets, classes, transform=None):
        super().__init__(targets, classes, transform)
        self.images = images

    def image(self, index: int) -> np.ndarray:
        return self.images[index]

    def _keep(self, indices: list[int]) -> None:
        self.images = self.images[indices]


class ImageFolder(LabelledImages):
    """``root/<class>/**/<image>``; class indices follow the sorted class folder names.

    ``classes`` fixes the class list (the test split uses the training split's, so that
    indices agree even if a class has no test images).
    """

    def __init__(self, root: str | Path, transform=None, classes: Sequence[str] | None = None):
        root = Path(root)
        if not root.is_dir():
            raise UserError(
                f"image folder not found: {root} (expected <DATASET.ROOT>/<split>/<class>/<image>)"
            )
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            classes = found
        else:
            extra = sorted(set(found) - set(classes))
            if extra:
                raise UserError(
                    f"{root} has class folders that the training split lacks: {', '.join(extra[:5])}; "
                    f"both splits must use the same class names"
                )
        if not classes:
            raise UserError(f"no class folders in {root} (expected {root}/<class>/<image>)")
        self.root = root
        self.paths: list[Path] = []
        targets = []
        for index, name in enumerate(classes):
            folder = root / name
            if not folder.is_dir():
                continue
            files = sorted(
                p for p in folder.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
            )
            self.paths += files
            targets += [index] * len(files)
        if not self.paths:
            raise UserError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/<class>/ folders"
            )
        super().__init__(targets, classes, transform)

    def image(self, index: int) -> np.ndarray:
        return read_rgb(self.paths[index])

    def _keep(self, indices: list[int]) -> None:
        self.paths = [self.paths[i] for i in indices]

    def check_files(self) -> None:
        """Read every image's header (not its pixels); a broken file is a UserError now."""
        for path in self.paths:
            check_image_file(path)
