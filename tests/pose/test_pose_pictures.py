"""Pose pictures read at a glance: enlarged from a small image, the ground truth magenta
(a colour distinct from grass, sky and skin), predictions orange/blue, a legend."""
import cv2
import numpy as np
from pycocotools.coco import COCO

from tasks.pose.drawing import GT_COLOR, PRED_COLOR, draw_evaluation_pictures, scaled


def near(image, color, tol=40):
    return (np.abs(image.astype(int) - np.array(color)).max(axis=2) < tol)


def standing_person(x0=60.0, y0=30.0):
    kpts = np.zeros((17, 3))
    kpts[:, 0] = x0 + np.array([0, -3, 3, -6, 6, -15, 15, -20, 20, -22, 22, -10, 10, -10, 10, -10, 10])
    kpts[:, 1] = y0 + np.array([0, -3, -3, 0, 0, 20, 20, 45, 45, 70, 70, 75, 75, 110, 110, 145, 145])
    kpts[:, 2] = 2
    return kpts


def test_a_small_image_is_enlarged_with_magenta_truth_and_a_legend(tmp_path):
    grass = np.zeros((192, 144, 3), np.uint8)
    grass[:] = (40, 160, 40)  # BGR green background: the old ground-truth colour vanished on it
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), grass)
    truth = standing_person()
    coco = COCO()
    coco.dataset = {"images": [{"id": 7, "width": 144, "height": 192, "file_name": "img.png"}],
                    "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 1.0,
                                     "bbox": [30, 20, 60, 160], "num_keypoints": 17,
                                     "keypoints": truth.ravel().tolist()}],
                    "categories": [{"id": 1, "name": "person"}]}
    coco.createIndex()
    predicted = truth.copy()
    predicted[:, 0] += 25
    predicted[:, 2] = 0.9
    results = [{"image_id": 7, "score": 0.9, "keypoints": predicted.ravel().tolist()}]
    [picture] = draw_evaluation_pictures(coco, results, {7: path}, tmp_path / "pictures", count=4)
    drawn = cv2.imread(str(picture))
    assert drawn.shape[:2] == (192 * 5, 144 * 5)  # the smallest whole factor to reach 800 pixels
    factor = 5
    hip, knee = scaled(truth[[11, 13]], factor)[:, :2]  # the left thigh of the ground truth
    mid = tuple(int(round(v)) for v in (hip + knee) / 2)
    assert near(drawn[mid[1] - 2:mid[1] + 3, mid[0] - 2:mid[0] + 3], GT_COLOR).any()
    assert near(drawn, GT_COLOR).sum() > 500 and near(drawn, PRED_COLOR).sum() > 500
    corner = drawn[:120, :400]  # the legend: dark box, white text, the three colours
    assert near(corner, (255, 255, 255), 60).sum() > 100
    assert near(corner, GT_COLOR).sum() > 20 and near(corner, PRED_COLOR).sum() > 20
    assert near(drawn[400:, :], (40, 160, 40)).mean() > 0.5  # the picture itself is not darkened
