"""The synthetic demo data: real COCO files, deterministic by seed, honest labels."""

import cv2
import numpy as np
import pytest

from conftest import REPO
from tasks.engine.config import load
from tasks.engine.errors import UserError
from tasks.pose import synthetic
from tasks.pose.evaluation import coco_keypoint_metrics, coco_results
from tasks.pose.coco_people import detection_records, ground_truth_records, load_coco
from tasks.pose.synthetic import ensure_synthetic_coco, render_image
from tasks.pose.task import PoseTask


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return ensure_synthetic_coco(tmp_path_factory.mktemp("syn") / "pose_demo", "train", "val", 6, 4, seed=3)


def test_the_set_is_coco_keypoints_in_the_data_coco_layout(synthetic_root):
    coco = load_coco(synthetic_root / "annotations" / "person_keypoints_val.json")
    assert len(coco.imgs) == 4 and coco.loadCats(1)[0]["keypoints"][0] == "nose"
    for ann in coco.dataset["annotations"]:
        kpts = np.array(ann["keypoints"]).reshape(17, 3)
        info = coco.imgs[ann["image_id"]]
        labelled = kpts[:, 2] > 0
        assert ann["num_keypoints"] == labelled.sum()
        assert np.all((kpts[labelled, 0] >= 0) & (kpts[labelled, 0] < info["width"]))
        assert np.all((kpts[labelled, 1] >= 0) & (kpts[labelled, 1] < info["height"]))
        assert np.all(kpts[~labelled] == 0)
        x, y, w, h = ann["bbox"]
        assert 0 < ann["area"] <= w * h
    records = ground_truth_records(coco, synthetic_root / "images" / "val", 0.75, 17)
    assert len(records) >= 4
    image = cv2.imread(records[0].image_path)
    assert image.shape[:2] == (coco.imgs[records[0].image_id]["height"], coco.imgs[records[0].image_id]["width"])
    dets = detection_records(synthetic_root / "person_detection_results" / "synthetic_val_detections.json",
                             coco, synthetic_root / "images" / "val", 0.75, 17, 0.0)
    assert len(dets) >= len(records)


def test_ground_truth_scores_ap_1_on_the_synthetic_set(synthetic_root):
    coco = load_coco(synthetic_root / "annotations" / "person_keypoints_train.json")
    anns = [a for a in coco.dataset["annotations"] if a["num_keypoints"] > 0]
    poses = np.array([np.array(a["keypoints"], float).reshape(17, 3) for a in anns])
    poses[..., 2] = poses[..., 2] > 0
    results = coco_results([a["image_id"] for a in anns], poses, np.ones(len(anns)),
                           [a["bbox"][2] * a["bbox"][3] for a in anns], 0.2, 0.9)
    assert coco_keypoint_metrics(coco, results)["AP"] == pytest.approx(1.0)


def test_generation_is_deterministic_by_seed_and_varies_with_it():
    a_img, a_anns = render_image(np.random.default_rng([5, 1, 0]), 192, 160)
    b_img, b_anns = render_image(np.random.default_rng([5, 1, 0]), 192, 160)
    c_img, _ = render_image(np.random.default_rng([6, 1, 0]), 192, 160)
    np.testing.assert_array_equal(a_img, b_img)
    assert a_anns == b_anns
    assert not np.array_equal(a_img, c_img)


def test_an_existing_set_is_reused_and_foreign_data_is_never_overwritten(synthetic_root, tmp_path):
    stamp = (synthetic_root / "annotations" / "person_keypoints_train.json").stat().st_mtime_ns
    ensure_synthetic_coco(synthetic_root, "train", "val", 6, 4, seed=3)
    assert (synthetic_root / "annotations" / "person_keypoints_train.json").stat().st_mtime_ns == stamp
    foreign = tmp_path / "coco"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("user data")
    with pytest.raises(UserError, match="already holds other data"):
        ensure_synthetic_coco(foreign, "train", "val", 2, 2)
    assert (foreign / "mine.txt").read_text() == "user data"


# -- generation is an explicit step; runs only check ----------------------------------------
DEMO_CFG = REPO / "configs" / "demo" / "pose_bsam_demo.yaml"


def tiny_demo_opts(root, train_images=3):
    return ["DATASET.ROOT", str(root), "DATASET.SYNTHETIC_IMAGES", str(train_images),
            "DATASET.SYNTHETIC_VAL_IMAGES", "2"]


def test_the_command_generates_once_then_checks_and_reuses(tmp_path, caplog):
    root = tmp_path / "pose_demo"
    assert synthetic.main(["--cfg", str(DEMO_CFG), "--opts", *tiny_demo_opts(root)]) == 0
    ann = root / "annotations" / "person_keypoints_train.json"
    stamp = ann.stat().st_mtime_ns
    assert len(list((root / "images" / "train").glob("*.jpg"))) == 3
    with caplog.at_level("INFO", logger="bsam.pose"):
        assert synthetic.main(["--cfg", str(DEMO_CFG), "--opts", *tiny_demo_opts(root)]) == 0
    assert ann.stat().st_mtime_ns == stamp and "reused" in caplog.text
    next(iter((root / "images" / "val").glob("*.jpg"))).unlink()  # damaged: made again
    synthetic.main(["--cfg", str(DEMO_CFG), "--opts", *tiny_demo_opts(root)])
    assert len(list((root / "images" / "val").glob("*.jpg"))) == 2


def test_a_run_never_generates_and_names_the_command(tmp_path):
    root = tmp_path / "pose_demo"
    cfg = load(DEMO_CFG, tiny_demo_opts(root))
    with pytest.raises(UserError, match=r"does not exist; create the synthetic set first: "
                                        r"python -m tasks.pose.synthetic --cfg .*pose_bsam_demo.yaml") as err:
        PoseTask(cfg).build_datasets()
    assert "\n" not in str(err.value) and not root.exists()


def test_a_run_refuses_a_set_made_with_other_parameters_or_incomplete(tmp_path):
    root = tmp_path / "pose_demo"
    synthetic.main(["--cfg", str(DEMO_CFG), "--opts", *tiny_demo_opts(root)])
    assert len(PoseTask(load(DEMO_CFG, tiny_demo_opts(root))).build_datasets()[0]) > 0
    with pytest.raises(UserError, match=r"made with DATASET.SYNTHETIC_IMAGES 3 \(wanted 4\); create"):
        PoseTask(load(DEMO_CFG, tiny_demo_opts(root, train_images=4))).build_datasets()
    next(iter((root / "images" / "train").glob("*.jpg"))).unlink()
    with pytest.raises(UserError, match=r"incomplete synthetic set \(2 of 3 images in images/train\)"):
        PoseTask(load(DEMO_CFG, tiny_demo_opts(root))).build_datasets()


def test_the_command_refuses_a_config_without_synthetic_data(tmp_path):
    with pytest.raises(UserError, match="not a synthetic pose config"):
        synthetic.main(["--cfg", str(DEMO_CFG), "--opts", "DATASET.SYNTHETIC", "false"])
