"""Person boxes like a detector's, for the detection-box evaluation of the synthetic set."""
from __future__ import annotations


def fake_detections(rng, annotations_by_image, sizes) -> list[dict]:
    """Person boxes like a detector's: jittered true boxes, some duplicates and false alarms."""
    dets = []
    for image_id, anns in annotations_by_image.items():
        w_img, h_img = sizes[image_id]
        for ann in anns:
            x, y, w, h = ann["bbox"]
            for _ in range(2 if rng.random() < 0.2 else 1):
                jit = rng.normal(0, 0.05, 4) * [w, h, w, h]
                dets.append({"image_id": image_id, "category_id": 1, "score": round(float(rng.uniform(0.6, 1.0)), 4),
                             "bbox": [round(float(v), 2) for v in (x + jit[0], y + jit[1], w + jit[2], h + jit[3])]})
        if rng.random() < 0.3:
            w, h = rng.uniform(0.1, 0.4) * w_img, rng.uniform(0.2, 0.6) * h_img
            dets.append({"image_id": image_id, "category_id": 1, "score": round(float(rng.uniform(0.05, 0.4)), 4),
                         "bbox": [round(float(rng.uniform(0, w_img - w)), 2), round(float(rng.uniform(0, h_img - h)), 2),
                                  round(float(w), 2), round(float(h), 2)]})
    return dets
