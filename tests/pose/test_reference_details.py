"""Three places where the pose pipeline follows the reference exactly: detection boxes are
cropped raw, the quarter-pixel refinement skips the same border peaks, and the half-body
crop is HRNet's."""
import json

import cv2
import numpy as np
from pycocotools.coco import COCO

from tasks.pose.decode import refine_quarter_pixel
from tasks.pose.coco_people import detection_records
from tasks.pose.transforms import box_to_center_scale, half_body_center_scale


def one_image_coco(tmp_path, width=64, height=48):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((height, width, 3), np.uint8))
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "file_name": "a.jpg", "width": width, "height": height}],
                    "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    coco.createIndex()
    return coco


def test_detection_boxes_are_used_raw(tmp_path):
    coco = one_image_coco(tmp_path)
    boxes = [[-5.0, 10.0, 40.0, 50.0], [30.5, -2.0, 60.0, 20.0], [1.0, 1.0, 0.0, 5.0]]
    det = tmp_path / "det.json"
    det.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": b, "score": 0.9} for b in boxes]))
    records = detection_records(det, coco, tmp_path, 0.75, 17, 0.0)
    assert [list(r.box) for r in records] == boxes[:2]  # the empty box is skipped
    for record, box in zip(records, boxes):
        center, scale = box_to_center_scale(box, 0.75)
        np.testing.assert_array_equal(record.center, center)
        np.testing.assert_array_equal(record.scale, scale)


def test_quarter_pixel_refinement_only_where_the_reference_refines():
    heatmaps = np.zeros((1, 3, 8, 10), np.float32)
    for joint, (x, y) in enumerate([(1, 4), (2, 4), (4, 1)]):
        heatmaps[0, joint, y, x] = 1.0
        heatmaps[0, joint, y, x + 1] = 0.5  # a higher right neighbour: shift +0.25 in x
        heatmaps[0, joint, y + 1, x] = 0.5  # and in y
    coords = np.array([[[1.0, 4.0], [2.0, 4.0], [4.0, 1.0]]])
    refined = refine_quarter_pixel(heatmaps, coords)
    np.testing.assert_array_equal(refined[0, 0], [1.0, 4.0])  # column 1: left alone
    np.testing.assert_array_equal(refined[0, 1], [2.25, 4.25])
    np.testing.assert_array_equal(refined[0, 2], [4.0, 1.0])  # row 1: left alone


def half_body_by_hand(joints, visible, aspect, normal_draw):
    """HRNet's half_body_transform written out (``normal_draw`` stands for its randn())."""
    upper = [joints[j] for j in range(17) if visible[j] > 0 and j <= 10]
    lower = [joints[j] for j in range(17) if visible[j] > 0 and j > 10]
    chosen = upper if (normal_draw < 0.5 and len(upper) > 2) else (lower if len(lower) > 2 else upper)
    pts = np.array(chosen, np.float32)
    w, h = pts.max(0) - pts.min(0)
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return pts.mean(0), np.array([w, h]) * 1.5


def test_half_body_is_hrnets():
    rng = np.random.default_rng(3)
    joints = rng.uniform(0, 200, size=(17, 2)).astype(np.float32)
    visible = np.ones(17, np.float32)
    visible[[1, 2, 15]] = 0
    for seed in range(20):
        draw = np.random.default_rng(seed).standard_normal()
        center, scale = half_body_center_scale(joints, visible, 0.75, np.random.default_rng(seed))
        want_center, want_scale = half_body_by_hand(joints, visible, 0.75, draw)
        np.testing.assert_allclose(center, want_center, rtol=1e-6)
        np.testing.assert_allclose(scale, want_scale, rtol=1e-6)
    # the upper body is chosen with HRNet's probability P(N(0,1) < 0.5) ~ 0.69, not 0.5
    rng = np.random.default_rng(0)
    upper_mean = joints[[j for j in range(11) if visible[j]]].mean(0)
    hits = sum(np.allclose(half_body_center_scale(joints, visible, 0.75, rng)[0], upper_mean)
               for _ in range(2000))
    assert 0.66 < hits / 2000 < 0.72
