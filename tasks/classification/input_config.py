"""What the network sees: input size, normalisation and resizing interpolation of a run.

Each comes from the config when it sets it (``DATASET.IMAGE_SIZE`` > 0, ``MEAN``/``STD`` not
[], ``INTERPOLATION`` not ``auto``), else, for a timm model, from timm's data config of its
weights (``timm.data.resolve_data_config``: what they were trained with), else from the
recipe (32 px, the data set's statistics, bilinear).  :meth:`InputConfig.describe` is the
startup line that says which value came from where.
"""
from __future__ import annotations

from dataclasses import dataclass

from .models import is_timm
from .models.timm_backbones import architecture, timm_data_config
from .transforms import normalisation

DEFAULT_SIZE = 32
INTERPOLATIONS = ("auto", "bilinear", "bicubic", "area", "nearest", "lanczos")


@dataclass(frozen=True)
class InputConfig:
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    sources: dict  # "size" | "normalisation" | "interpolation" -> where the value came from

    def describe(self) -> str:
        mean = ", ".join(f"{v:.4g}" for v in self.mean)
        std = ", ".join(f"{v:.4g}" for v in self.std)
        s = self.sources
        return (f"input: {self.size} px ({s['size']}), mean ({mean}) std ({std}) "
                f"({s['normalisation']}), {self.interpolation} resizing ({s['interpolation']})")


def input_config(cfg, dataset_format: str) -> InputConfig:
    d, name = cfg.DATASET, cfg.MODEL.NAME
    model = timm_data_config(name) if is_timm(name) else None
    where = f"timm data config of {architecture(name)}" if model else "recipe default"
    if d.IMAGE_SIZE:
        size, size_from = int(d.IMAGE_SIZE), "DATASET.IMAGE_SIZE"
    else:
        size, size_from = (int(model["input_size"][-1]) if model else DEFAULT_SIZE), where
    if d.MEAN and d.STD:
        mean, std, norm_from = tuple(d.MEAN), tuple(d.STD), "DATASET.MEAN/STD"
    elif model:
        mean, std, norm_from = tuple(model["mean"]), tuple(model["std"]), where
    else:
        mean, std = normalisation(d.AUGMENT, dataset_format, d.MEAN, d.STD)
        norm_from = "statistics of the data set / recipe"
    if d.INTERPOLATION != "auto":
        interpolation, interp_from = d.INTERPOLATION, "DATASET.INTERPOLATION"
    elif model and model.get("interpolation") in INTERPOLATIONS:
        interpolation, interp_from = model["interpolation"], where
    else:
        interpolation, interp_from = "bilinear", "recipe default"
    return InputConfig(size, tuple(map(float, mean)), tuple(map(float, std)), interpolation,
                       {"size": size_from, "normalisation": norm_from, "interpolation": interp_from})
