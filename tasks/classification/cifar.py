"""Read CIFAR-10/100 from torchvision's on-disk format, offline, without unsafe unpickling.

The python versions of CIFAR (``cifar-10-batches-py``, ``cifar-100-python``) are pickles.
A plain ``pickle.load`` would run whatever code a tampered file names, so the unpickler
here only admits the few numpy names that an array needs.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from tasks.engine.errors import UserError

LAYOUT = {
    # format: (folder, training files, test files, meta file, label key, class-name key)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}
ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def cifar_folder(root: str | Path, fmt: str) -> Path:
    """``root`` itself if it is the extracted folder, else ``root/<folder>``."""
    root = Path(root)
    folder = LAYOUT[fmt][0]
    return root if root.name == folder else root / folder


def _load(path: Path, fmt: str) -> dict:
    if not path.is_file():
        raise UserError(
            f"{path} not found: download {ARCHIVES[fmt]} "
            f"from https://www.cs.toronto.edu/~kriz/cifar.html and extract it into {path.parent.parent} "
            f"(nothing is downloaded automatically); for images in class folders "
            f"(ROOT/train/<class>/*.jpg, e.g. the CIFAR-10 subset) set DATASET.FORMAT imagefolder"
        )
    try:
        with open(path, "rb") as f:
            return _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except Exception as err:
        raise UserError(f"cannot read CIFAR file {path} ({err}); extract the archive again") from None


def read_cifar(root: str | Path, fmt: str, train: bool) -> tuple[np.ndarray, list[int], list[str]]:
    """``(images uint8 N x 32 x 32 x 3 RGB, labels, class names)`` of one split."""
    folder_name, train_files, test_files, meta, label_key, names_key = LAYOUT[fmt]
    folder = cifar_folder(root, fmt)
    entries = [(folder / name, _load(folder / name, fmt)) for name in (train_files if train else test_files)]
    names = _field(_load(folder / meta, fmt), names_key, folder / meta)
    if not isinstance(names, list) or not names:
        raise UserError(f"{folder / meta}: {names_key!r} must be a list of class names; "
                        "extract the archive again")
    classes = [str(c) for c in names]
    images, labels = [], []
    for path, entry in entries:
        data = _pixels(_field(entry, "data", path), path)
        labels += _labels(_field(entry, label_key, path), len(data), len(classes), path, label_key)
        images.append(data.reshape(-1, 3, 32, 32))
    return np.ascontiguousarray(np.concatenate(images).transpose(0, 2, 3, 1)), labels, classes


def _field(entry, key: str, path: Path):
    if not isinstance(entry, dict) or key not in entry:
        raise UserError(f"{path} holds no {key!r} entry: not a CIFAR file of this format; "
                        "extract the archive again")
    return entry[key]


def _pixels(data, path: Path) -> np.ndarray:
    data = np.asarray(data) if isinstance(data, np.ndarray) else None
    if data is None or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        got = "not an array" if data is None else f"{data.dtype} {list(data.shape)}"
        raise UserError(f"{path}: 'data' must be uint8 rows of 3072 pixels (N x 3072), got {got}; "
                        "extract the archive again")
    return data


def _labels(rows, count: int, num_classes: int, path: Path, key: str) -> list[int]:
    values = list(rows) if isinstance(rows, (list, np.ndarray)) else None
    if values is None or len(values) != count:
        raise UserError(f"{path}: {key!r} must list one label per image ({count}), got "
                        f"{'no list' if values is None else len(values)}; extract the archive again")
    for i, value in enumerate(values):
        if not isinstance(value, (int, np.integer)) or not 0 <= value < num_classes:
            raise UserError(f"{path}: {key}[{i}] is {value!r}, not a class index in "
                            f"[0, {num_classes}); extract the archive again")
    return [int(v) for v in values]
