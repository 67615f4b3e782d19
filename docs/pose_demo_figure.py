"""Redraw docs/pose_demo_example.jpg from a finished demo run: a few validation images
enlarged before drawing, so that the skeletons are readable on a web page (the run's own
pose_pictures/ are enlarged too, one picture each).  Predictions orange (left side blue) over
the ground truth in magenta, as in the run's pictures.

    python docs/pose_demo_figure.py output/pose/pose_bsam_demo [docs/pose_demo_example.jpg]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.engine.config import load  # noqa: E402
from tasks.pose.coco_people import load_coco  # noqa: E402
from tasks.engine.io import atomic_write  # noqa: E402
from tasks.pose.drawing import GT_COLOR, PRED_COLOR, PRED_LEFT_COLOR, draw_pose  # noqa: E402
from tasks.pose.layout import split_files  # noqa: E402

SCALE = 2  # enlargement before drawing
COLUMNS, ROWS = 3, 2
JPEG_QUALITY = 80  # keeps the picture under 300 KB


def panel(image: np.ndarray, truths: list, predictions: list, threshold: float) -> np.ndarray:
    big = cv2.resize(image, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_CUBIC)
    scale = np.array([SCALE, SCALE, 1.0])
    for kpts in truths:
        draw_pose(big, kpts * scale, threshold=0, color=GT_COLOR, thickness=2)
    for kpts in predictions:
        draw_pose(big, kpts * scale, threshold, PRED_COLOR, PRED_LEFT_COLOR, thickness=2)
    return big


def main(run_dir: str, out: str = "docs/pose_demo_example.jpg") -> None:
    run = Path(run_dir)
    cfg = load(run / "config.yaml")
    files = split_files(cfg.resolve_path(cfg.DATASET.ROOT), cfg.DATASET.TEST_SET)
    coco = load_coco(files.annotations)
    results = json.loads((run / f"keypoints_{cfg.DATASET.TEST_SET}_results.json").read_text())
    by_image: dict[int, list] = {}
    for r in results:
        if r["score"] > 0:
            by_image.setdefault(int(r["image_id"]), []).append(np.asarray(r["keypoints"]).reshape(-1, 3))
    panels = []
    for image_id in sorted(by_image)[:COLUMNS * ROWS]:
        image = cv2.imread(str(files.images / coco.imgs[image_id]["file_name"]), cv2.IMREAD_COLOR)
        truths = [np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3) for a in coco.imgToAnns[image_id]]
        panels.append(panel(image, truths, by_image[image_id], float(cfg.TEST.IN_VIS_THRE)))
    height = max(p.shape[0] for p in panels)
    width = max(p.shape[1] for p in panels)
    cells = [cv2.copyMakeBorder(p, 0, height - p.shape[0] + 4, 0, width - p.shape[1] + 4, cv2.BORDER_CONSTANT,
                                value=(255, 255, 255)) for p in panels]
    cells += [np.full_like(cells[0], 255)] * (COLUMNS * ROWS - len(cells))
    grid = np.vstack([np.hstack(cells[r * COLUMNS:(r + 1) * COLUMNS]) for r in range(ROWS)])
    data = cv2.imencode(".jpg", grid, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
    atomic_write(Path(out), lambda tmp: Path(tmp).write_bytes(data))
    print(f"{out}: {grid.shape[1]}x{grid.shape[0]}, {Path(out).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(*sys.argv[1:])
