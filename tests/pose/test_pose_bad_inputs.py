"""Bad data is skipped with a count in the log or refused with one clear UserError."""
import json
import logging

import cv2
import numpy as np
import pytest

from tasks.engine.config import make_config
from tasks.engine.errors import UserError
from tasks.pose.dataset import PoseDataset
from tasks.pose.coco_people import detection_records, ground_truth_records, load_coco
from tasks.pose.task import PoseTask

KPTS = [10 + (i % 5) * 10 for i in range(17)]


def person(ann_id, image_id, bbox=(20, 20, 60, 100), num=17, crowd=0):
    kpts = []
    for j in range(17):
        kpts += [bbox[0] + 5 + j * 2, bbox[1] + 5 + j * 5, 2 if j < num else 0]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": list(bbox), "area": 3000.0,
            "iscrowd": crowd, "num_keypoints": num, "keypoints": kpts}


@pytest.fixture
def messy_coco(tmp_path):
    """Five images: good, missing file, no persons, corrupt file; and persons that are
    crowd, keypoint-less or boxed outside their image."""
    img_dir = tmp_path / "images" / "val2017"
    img_dir.mkdir(parents=True)
    picture = np.full((160, 120, 3), 128, np.uint8)
    for name in ("good.jpg", "empty.jpg"):
        cv2.imwrite(str(img_dir / name), picture)
    (img_dir / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    images = [{"id": i, "file_name": n, "width": 120, "height": 160}
              for i, n in enumerate(["good.jpg", "missing.jpg", "empty.jpg", "corrupt.jpg"], start=1)]
    anns = [person(1, 1), person(2, 1, num=0), person(3, 1, bbox=(500, 500, 30, 30)),
            person(4, 1, crowd=1), person(5, 2), person(6, 4)]
    (tmp_path / "annotations").mkdir()
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    for split in ("train2017", "val2017"):
        (tmp_path / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))
    (tmp_path / "images" / "train2017").symlink_to(img_dir)
    return tmp_path


@pytest.fixture
def pose_log():
    """Collect what the pose task logs (its logger is a child of the run logger)."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("bsam.pose")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_unusable_persons_and_images_are_skipped_and_counted(messy_coco, pose_log):
    coco = load_coco(messy_coco / "annotations" / "person_keypoints_val2017.json")
    records = ground_truth_records(coco, messy_coco / "images" / "val2017", 0.75, 17, "val")
    assert [r.image_id for r in records] == [1, 4]  # the good person, and the one in the corrupt file
    message = " ".join(pose_log)
    for expected in ("2 persons kept", "1 crowd", "1 without keypoints", "1 with a box outside the image",
                     "1 in missing image files", "1 images without persons"):
        assert expected in message


def test_a_corrupt_image_is_a_user_error_naming_the_file(messy_coco):
    task = PoseTask(make_config({"DATASET": {"ROOT": str(messy_coco), "PHOTOMETRIC": False}}, task="pose"))
    with pytest.raises(UserError, match="corrupt.jpg"):  # in the val split: found when it is built
        task.build_datasets()
    coco = load_coco(messy_coco / "annotations" / "person_keypoints_train2017.json")
    records = ground_truth_records(coco, messy_coco / "images" / "train2017", 0.75, 17, "train")
    train = PoseDataset(records, task.crop_settings(), train=True)
    assert train[0][0].shape[1:] == (256, 192)
    with pytest.raises(UserError, match="corrupt.jpg"):  # in the training split: when it is read
        train[1]


def test_detection_files_empty_broken_or_off_image(messy_coco, pose_log):
    coco = load_coco(messy_coco / "annotations" / "person_keypoints_val2017.json")
    img_dir = messy_coco / "images" / "val2017"
    det = messy_coco / "det.json"
    det.write_text("[]")
    with pytest.raises(UserError, match="no usable person boxes"):
        detection_records(det, coco, img_dir, 0.75, 17, 0.0)
    det.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        detection_records(det, coco, img_dir, 0.75, 17, 0.0)
    with pytest.raises(UserError, match="not found"):
        detection_records(messy_coco / "absent.json", coco, img_dir, 0.75, 17, 0.0)
    boxes = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 90], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [900, 900, 50, 90], "score": 0.9},  # off the image
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 90], "score": 0.01},  # below threshold
        {"image_id": 2, "category_id": 1, "bbox": [10, 10, 50, 90], "score": 0.9},  # missing file
        {"image_id": 77, "category_id": 1, "bbox": [10, 10, 50, 90], "score": 0.9},  # unknown image
        {"image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 90], "score": 0.9},  # not a person
    ]
    det.write_text(json.dumps(boxes))
    records = detection_records(det, coco, img_dir, 0.75, 17, 0.1)
    assert len(records) == 1 and records[0].score == pytest.approx(0.9)
    assert "1 with a box outside the image" in " ".join(pose_log)


def test_detection_mode_without_a_box_file_is_a_user_error(messy_coco):
    task = PoseTask(make_config({"DATASET": {"ROOT": str(messy_coco)}, "TEST": {"USE_GT_BBOX": False}}, task="pose"))
    with pytest.raises(UserError, match="COCO_BBOX_FILE"):
        task.build_val_dataset()


def test_a_training_set_without_labelled_persons_is_a_user_error(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images" / "train2017").mkdir(parents=True)
    (tmp_path / "annotations" / "person_keypoints_train2017.json").write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
                    "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    task = PoseTask(make_config({"DATASET": {"ROOT": str(tmp_path)}}, task="pose"))
    with pytest.raises(UserError, match="no usable labelled person"):
        task.build_datasets()
    (tmp_path / "annotations" / "person_keypoints_train2017.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a COCO keypoint annotation file"):
        task.build_datasets()
