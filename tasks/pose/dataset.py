"""The top-down pose Dataset: person record -> (input, heatmaps, target weight, meta).

One code path for training and evaluation; ``train`` only switches the random geometry
(scale, rotation, flip, half-body) and colour augmentation on.  ``meta`` carries what the
evaluation needs to put predictions back into the image (center, scale, box score...).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.engine.imagefile import check_image_file

from .coco_people import PersonRecord
from .images import read_image, to_input
from .photometric import apply_photometric, build_photometric
from .targets import encode_heatmaps
from .transforms import (affine_matrix, apply_affine, flip_joints, half_body_center_scale,
                         random_scale_rotation, warp_image)


@dataclass
class CropSettings:
    """Everything the sample pipeline needs from the config (see ``PoseTask.crop_settings``)."""

    image_size: tuple  # (w, h) of the network input
    heatmap_size: tuple  # (w, h)
    sigma: float = 2.0
    color_rgb: bool = True
    flip: bool = True
    scale_factor: float = 0.3
    rot_factor: float = 40.0
    half_body_prob: float = 0.0
    half_body_min_joints: int = 8
    photometric: bool = True
    unbiased_encoding: bool = False  # targets centred at the sub-pixel joint (DARK)


class PoseDataset(Dataset):
    """Persons of one COCO split.  ``coco`` (the ground truth) stays attached for COCOeval."""

    def __init__(self, records: list[PersonRecord], settings: CropSettings, train: bool,
                 coco=None, image_ids=None):
        self.records = records
        self.settings = settings
        self.train = train
        self.coco = coco
        #: images the evaluation scores (all images of the split, including person-less ones)
        self.image_ids = sorted(coco.getImgIds()) if (coco is not None and image_ids is None) else image_ids
        self._photometric = build_photometric() if (train and settings.photometric) else None
        if not train:  # a broken image would otherwise stop the run after the first epoch
            for path in sorted({rec.image_path for rec in records}):
                check_image_file(path)

    def __len__(self) -> int:
        return len(self.records)

    def sample_geometry(self, rec: PersonRecord, rng: np.random.Generator | None):
        """(center, scale, rotation, flip) of the crop; random when ``rng`` is given."""
        center, scale, rotation, flip = rec.center.copy(), rec.scale.copy(), 0.0, False
        if rng is None:
            return center, scale, rotation, flip
        st = self.settings
        aspect = st.image_size[0] / st.image_size[1]
        if st.half_body_prob > 0 and rec.visible.sum() > st.half_body_min_joints and rng.random() < st.half_body_prob:
            half = half_body_center_scale(rec.joints, rec.visible, aspect, rng)
            if half is not None:
                center, scale = half
        s, rotation = random_scale_rotation(rng, st.scale_factor, st.rot_factor)
        scale = scale * s
        flip = bool(st.flip and rng.random() < 0.5)
        return center, scale, rotation, flip

    def make_sample(self, idx: int, geometry):
        """Crop, targets and meta of record ``idx`` under a given geometry (used by tests)."""
        st, rec = self.settings, self.records[idx]
        center, scale, rotation, flip = geometry
        matrix = affine_matrix(center, scale, rotation, st.image_size, flip)
        crop = warp_image(read_image(rec.image_path, st.color_rgb), matrix, st.image_size)
        joints, visible = flip_joints(apply_affine(rec.joints, matrix), rec.visible.copy(), flip)
        target, weight = encode_heatmaps(joints, visible, st.image_size, st.heatmap_size, st.sigma,
                                        st.unbiased_encoding)
        meta = {
            "index": idx, "image_id": rec.image_id,
            "center": center.astype(np.float32), "scale": scale.astype(np.float32),
            "rotation": float(rotation), "flip": flip, "score": float(rec.score),
            "area": float(np.prod(scale)),
        }
        return crop, target, weight, meta

    def __getitem__(self, idx: int):
        rng = None
        if self.train:
            # drawn from torch's generator so the run seed and per-worker seeding apply
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        crop, target, weight, meta = self.make_sample(idx, self.sample_geometry(self.records[idx], rng))
        if self._photometric is not None:
            crop = apply_photometric(self._photometric, crop, rng)
        return to_input(crop), torch.from_numpy(target), torch.from_numpy(weight), meta
