"""Heatmaps of a model: the flip test in torch, and the decoding into keypoints
(:mod:`keypoints`, NumPy alone, re-exported here for the evaluation and the tests)."""
from __future__ import annotations

import torch

from .keypoints import (argmax_keypoints, decode_heatmaps, gaussian_blur, heatmap_to_image,  # noqa: F401
                        refine_dark, refine_quarter_pixel)
from .skeleton import flip_permutation


def flip_back(heatmaps: torch.Tensor, shift: bool = True) -> torch.Tensor:
    """Heatmaps of a mirrored input, mirrored back with left/right joints swapped.

    ``shift`` moves them one pixel right: mirroring the input maps input pixel x to
    W-1-x, which lands ~3/4 of a heatmap pixel off the mirrored heatmap grid (the
    reference's SHIFT_HEATMAP).
    """
    perm = torch.as_tensor(flip_permutation(heatmaps.shape[1]), device=heatmaps.device)
    out = heatmaps.flip(3)[:, perm]
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=3)
    return out


@torch.no_grad()
def predict_heatmaps(model, inputs: torch.Tensor, flip_test: bool, shift: bool = True) -> torch.Tensor:
    """Model heatmaps, averaged with the flipped-back heatmaps of the mirrored input."""
    heatmaps = model(inputs)
    if flip_test:
        heatmaps = (heatmaps + flip_back(model(inputs.flip(3)), shift)) * 0.5
    return heatmaps
