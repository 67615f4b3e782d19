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
def _few_threads():
    """Keep each test on at most 2 threads (the CI machine has 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 2))
    yield
    torch.set_num_threads(before)
