"""What every task's export shares: the images it is checked on, and an exporter's refusal
turned into a user-facing error."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from quant.export import ExportParityError, ExportReport, ExportWriteError
from tasks.engine.errors import UserError


def check_images(dataset, count: int) -> torch.Tensor:
    """``count`` model inputs spread evenly over ``dataset`` (an ImageFolder is sorted by
    class, so its first images would all be of one class), after the evaluation transform."""
    if len(dataset) == 0:
        raise ValueError("the evaluation set is empty: there are no images to check the export on")
    idx = np.unique(np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int))
    return torch.stack([dataset[int(i)][0] for i in idx])


def checked_export(export: Callable[..., ExportReport], *args, **kwargs) -> dict:
    """Run an exporter; its refusal (parity check, unsupported layer) becomes a UserError."""
    try:
        return export(*args, **kwargs).as_dict()
    except (ExportParityError, ExportWriteError) as err:
        raise UserError(str(err)) from None
    except ValueError as err:
        raise UserError(f"cannot export the model: {err}") from None
