"""One labelled picture: a background, one to three people side by side, maybe an occluder,
and the COCO annotation of each person as what is visible of it."""
from __future__ import annotations

import numpy as np

from ..skeleton import NUM_JOINTS
from .figure import L_HIP, L_SH, R_HIP, R_SH, sample_figure
from .paint import background, draw_figure, occluder

#: how often an image holds 1, 2, 3 people
_PEOPLE_PROBS = {1: [1.0], 2: [0.6, 0.4], 3: [0.5, 0.3, 0.2]}


def render_image(rng: np.random.Generator, width: int, height: int, max_people: int = 3):
    """One picture and its person annotations (without ids)."""
    canvas = background(rng, height, width)
    count = 1 + int(rng.choice(max_people, p=_PEOPLE_PROBS[max_people]))
    figures, masks = [], []
    slots = rng.permutation(count)  # side by side, overlapping only with their limbs
    for slot in slots:
        person_h = rng.uniform(0.42, 0.9) * height
        x = (slot + rng.uniform(0.3, 0.7)) / count
        pelvis = ((0.1 + 0.8 * x) * width, rng.uniform(0.45, 0.65) * height)
        fig = sample_figure(rng, person_h, pelvis)
        figures.append(fig)
        masks.append(draw_figure(canvas, fig))
    covers = [np.zeros((height, width), bool) for _ in figures]  # what hides each figure
    for i in range(len(figures)):
        for later in masks[i + 1:]:
            covers[i] |= later > 0
    if rng.random() < 0.2:
        target = int(rng.integers(len(figures)))
        occ = occluder(rng, canvas, width, height, figures[target].joints[[L_HIP, R_HIP, L_SH, R_SH]].mean(0)) > 0
        for c in covers:
            c |= occ
    annotations = []
    for fig, mask, cover in zip(figures, masks, covers):
        visible_mask = (mask > 0) & ~cover
        kpts = np.zeros((NUM_JOINTS, 3))
        for k, (x, y) in enumerate(fig.joints):
            xi, yi = int(round(x)), int(round(y))
            if not fig.labelled[k] or not (0 <= xi < width and 0 <= yi < height):
                continue
            kpts[k] = (x, y, 1 if cover[yi, xi] else 2)
        ys, xs = np.nonzero(visible_mask)
        if len(xs) == 0:
            continue
        x0, y0 = float(xs.min()), float(ys.min())
        annotations.append({
            "bbox": [round(x0, 2), round(y0, 2), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)],
            "area": float(len(xs)), "iscrowd": 0, "category_id": 1,
            "num_keypoints": int((kpts[:, 2] > 0).sum()),
            "keypoints": [round(float(v), 2) if i % 3 < 2 else int(v) for i, v in enumerate(kpts.reshape(-1))],
            "segmentation": [],
        })
    return canvas, annotations
