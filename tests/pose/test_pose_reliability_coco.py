"""COCO files that break the format are one line at build time, naming the file and the
record (they used to end in tracebacks, some inside COCOeval after the first epoch)."""
import copy
import json
import math

import pytest

import tools.train
from reliability_helpers import one_error, run_main
from tasks.engine.errors import UserError
from tasks.pose.coco_people import detection_records, load_coco

KEYPOINTS = [v for j in range(17) for v in (20 + j, 30 + j, 2)]
GOOD = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 120, "height": 160},
               {"id": 2, "file_name": "b.jpg", "width": 120, "height": 160}],
    "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 90], "area": 3000.0,
                     "iscrowd": 0, "num_keypoints": 17, "keypoints": KEYPOINTS}],
    "categories": [{"id": 1, "name": "person"}],
}


def mutated(change) -> dict:
    data = copy.deepcopy(GOOD)
    change(data)
    return data


def ann(**fields):
    return lambda d: d["annotations"][0].update(fields)


def without(record: str, key: str):
    return lambda d: d[record][0].pop(key)


CASES = {
    "image without width": (without("images", "width"), "images[0] (id 1): 'width' must be a number > 0, got nothing"),
    "keypoints of length 52": (ann(keypoints=KEYPOINTS + [1]), "annotations[0] (id 10): 'keypoints' must be 51"),
    "a keypoint 'x'": (ann(keypoints=["x"] + KEYPOINTS[1:]), "'keypoints' must be 51 finite numbers"),
    "all visible keypoints NaN": (ann(keypoints=[math.nan if i % 3 < 2 else 2 for i in range(51)]),
                                  "'keypoints' must be 51 finite numbers"),
    "bbox of 3 numbers": (ann(bbox=[10, 10, 50]), "'bbox' must be 4 numbers [x, y, w, h], got [10, 10, 50] (3 items)"),
    "string image id": (lambda d: d["images"][1].update(id="two"), "images[1]: 'id' must be an integer, got 'two'"),
    "string annotation image_id": (ann(image_id="1"), "'image_id' must be an integer, got '1'"),
    "duplicate image id": (lambda d: d["images"][1].update(id=1), "images[1]: id 1 appears twice"),
    "no area": (without("annotations", "area"), "'area' must be a number >= 0 (COCOeval needs it), got nothing"),
    "no num_keypoints": (without("annotations", "num_keypoints"), "'num_keypoints' must be an integer"),
    "no categories": (lambda d: d.pop("categories"), "needs the lists 'images' and 'categories'"),
    "no person category": (lambda d: d.update(categories=[{"id": 3, "name": "car"}]), "no person category (id 1)"),
}


@pytest.mark.parametrize("case", CASES)
def test_broken_records_are_one_line_naming_file_and_record(case, tmp_path):
    change, expected = CASES[case]
    path = tmp_path / "person_keypoints_val2017.json"
    path.write_text(json.dumps(mutated(change)))
    with pytest.raises(UserError) as err:
        load_coco(path)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("entry, expected", [
    ({"image_id": 1, "bbox": [10, 10, 50], "score": 0.9}, "entry 1: 'bbox' must be 4 numbers"),
    ({"image_id": [1], "bbox": [10, 10, 50, 90], "score": 0.9}, "entry 1: 'image_id' must be an integer, got [1]"),
    ({"image_id": 1, "bbox": [10, 10, 50, 90], "score": "high"}, "entry 1: 'score' must be a number, got 'high'"),
])
def test_broken_detections_are_one_line(entry, expected, tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(GOOD))
    det = tmp_path / "det.json"
    det.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 90], "score": 0.9}, entry]))
    with pytest.raises(UserError) as err:
        detection_records(det, load_coco(gt), tmp_path, 0.75, 17, 0.0)
    assert str(det) in str(err.value) and expected in str(err.value), str(err.value)


def test_a_val_file_without_area_stops_before_training(shared_data, tmp_path, capsys):
    """Through the tool: refused at build time, before any epoch or file of a run."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for split in ("train2017", "val2017"):
        (root / "images" / split).symlink_to(shared_data / "coco_sample" / "images" / split)
        data = json.loads((shared_data / "coco_sample" / "annotations" / f"person_keypoints_{split}.json").read_text())
        if split == "val2017":
            del data["annotations"][5]["area"]
        (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))
    cfg = tmp_path / "pose.yaml"
    cfg.write_text(f"TASK: pose\nOUTPUT_DIR: {tmp_path / 'out'}\nWORKERS: 0\nDATASET:\n  ROOT: {root}\n"
                   "MODEL:\n  EXTRA:\n    NUM_LAYERS: 18\n")
    one_error(*run_main(tools.train.main, "--cfg", cfg, capsys=capsys),
              "person_keypoints_val2017.json", "annotations[5]", "'area'")
    assert not list((tmp_path / "out").rglob("*.pth"))


def test_a_val_split_with_missing_image_files_is_scored_over_the_images_read(shared_data, tmp_path, caplog):
    """Half of val2017's files gone: said in one warning with the counts, and the metrics
    cover the images read (ground truth as predictions scores AP 1 there, where counting the
    missing persons as misses halved it)."""
    from tasks.engine.config import make_config
    from tasks.pose.evaluation import coco_keypoint_metrics
    from tasks.pose.task import PoseTask

    sample = shared_data / "coco_sample"
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "person_keypoints_val2017.json").symlink_to(
        sample / "annotations" / "person_keypoints_val2017.json")
    kept = root / "images" / "val2017"
    kept.mkdir(parents=True)
    files = sorted((sample / "images" / "val2017").iterdir())
    for image in files[::2]:
        (kept / image.name).symlink_to(image)
    cfg = make_config({"DATASET": {"ROOT": str(root), "TEST_SET": "val2017"},
                       "MODEL": {"EXTRA": {"NUM_LAYERS": 18}}}, task="pose")
    with caplog.at_level("WARNING"):
        dataset = PoseTask(cfg).build_val_dataset()
    coco = dataset.coco
    missing = sum(not (kept / image["file_name"]).exists() for image in coco.imgs.values())
    assert missing > 10 and f"{missing} of {len(coco.imgs)} image files are missing" in caplog.text
    assert f"metrics cover the {len(coco.imgs) - missing} images read" in caplog.text
    assert dataset.image_ids == sorted(i for i in coco.imgs if (kept / coco.imgs[i]["file_name"]).exists())
    truth = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
             for a in coco.anns.values() if a["image_id"] in set(dataset.image_ids) and a.get("num_keypoints")]
    assert coco_keypoint_metrics(coco, truth, dataset.image_ids)["AP"] > 0.95
    assert coco_keypoint_metrics(coco, truth, None)["AP"] < 0.75  # the missing persons as misses
