"""Shared fixtures.  Real-data tests read ``$BSAM_DATA`` or ``../shared/data`` in place and
fail (never skip) when it is missing, so a CI without the data goes red."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    root = Path(os.environ.get("BSAM_DATA", REPO.parent / "shared" / "data"))
    if not root.is_dir():
        raise FileNotFoundError(
            f"real test data not found at {root}; set BSAM_DATA or put the shared data there"
        )
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return data_root()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run tiny tensors, which are fastest on one thread (measured several times
    faster than two contended threads on the 2-core CI machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_image_folder(tmp_path_factory) -> Path:
    """A generated 2-class ImageFolder (16x16 PNGs, class = dominant colour) that a tiny
    network learns in a few steps: for tests of the engine, not of accuracy."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for label, channel in (("red", 0), ("blue", 2)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 90, (16, 16, 3), dtype=np.uint8)
                img[..., channel] = rng.integers(150, 256, (16, 16), dtype=np.uint8)
                Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def tiny_cls_cfg(tiny_image_folder, tmp_path):
    """``make(name, **sections) -> Path``: write the YAML of a seconds-long classification
    run on ``tiny_image_folder`` (outputs under ``tmp_path/out``); ``sections`` override."""

    def make(name: str = "tiny", **sections) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(_tiny_cls_yaml(tiny_image_folder, tmp_path / "out", **sections))
        return path

    return make


def _tiny_cls_yaml(root: Path, out: Path, **sections) -> str:
    import yaml

    cfg = {
        "TASK": "classification", "OUTPUT_DIR": str(out), "WORKERS": 0, "SEED": 3,
        "DETERMINISTIC": True, "PRINT_FREQ": 1,
        "DATASET": {"ROOT": str(root), "TRAIN_SET": "train", "TEST_SET": "test",
                    "IMAGE_SIZE": 16},
        "MODEL": {"NAME": "cifar_resnet20", "NUM_CLASSES": 2},
        "TRAIN": {"BATCH_SIZE_PER_GPU": 8, "END_EPOCH": 3, "LR": 0.05, "LR_SCHEDULER": "cosine",
                  "WD": 1e-3},
        "SAM": {"METHOD": "bsam", "RHO_MIN_END": 0.0},
        "TEST": {"BATCH_SIZE_PER_GPU": 16},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return yaml.safe_dump(cfg)


def run_tool(*args, check: bool = True, env: dict | None = None, timeout: float = 600):
    """Run ``python tools/<args>`` from the repository root; returns the CompletedProcess."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def tool():
    return run_tool
