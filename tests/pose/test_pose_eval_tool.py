"""tools/eval.py for pose users: only the evaluated split is read, metrics without ground
truth are null (and the results json is still written), and --image reports its poses."""
import json
import shutil
import sys
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
import yaml
from pycocotools.coco import COCO

import tools.eval
from tasks.engine import cli
from tasks.engine.config import make_config
from tasks.engine.errors import UserError
from tasks.pose.evaluation import coco_keypoint_metrics
from tasks.pose.task import PoseTask

TINY = {"IMAGE_SIZE": [32, 64], "HEATMAP_SIZE": [8, 16],
        "EXTRA": {"NUM_LAYERS": 18, "NUM_DECONV_FILTERS": [16, 16, 16]}}


def run_eval(*args, capsys):
    with mock.patch.object(sys, "argv", ["eval.py", *map(str, args)]):
        with pytest.raises(SystemExit) as exited:
            cli.run(tools.eval.main)
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = PoseTask(make_config({"MODEL": TINY}, task="pose")).build_model()
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


def write_cfg(tmp_path, **sections):
    data = {"TASK": "pose", "OUTPUT_DIR": str(tmp_path / "out"), "WORKERS": 0, "MODEL": TINY,
            "TEST": {"BATCH_SIZE_PER_GPU": 16, "NUM_DRAW": 0}, **sections}
    path = tmp_path / "tiny_pose.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_eval_reads_only_the_test_split_and_nulls_metrics_without_ground_truth(
        shared_data, tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "coco"  # val2017 only: no train annotations, no train images
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(shared_data / "coco_sample" / "images" / "val2017", root / "images" / "val2017")
    val = json.loads((shared_data / "coco_sample" / "annotations" / "person_keypoints_val2017.json").read_text())
    image_info = {k: v for k, v in val.items() if k != "annotations"}  # test-dev style
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(image_info))
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
            for a in val["annotations"][:6]]  # person boxes, as a detector would give them
    (root / "det.json").write_text(json.dumps(dets))
    cfg = write_cfg(tmp_path, DATASET={"ROOT": str(root), "TRAIN_SET": "train2017", "TEST_SET": "val2017"},
                    TEST={"USE_GT_BBOX": False, "COCO_BBOX_FILE": str(root / "det.json"), "NUM_DRAW": 0})
    code, out, err = run_eval("--cfg", cfg, "--checkpoint", tiny_checkpoint, "--out", tmp_path / "ev",
                              capsys=capsys)
    assert code == 0, err
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["AP"] is None and metrics["AR"] is None
    results = json.loads((tmp_path / "ev" / "keypoints_val2017_results.json").read_text())
    assert len(results) >= 1 and len(results[0]["keypoints"]) == 51


def test_a_metric_without_ground_truth_in_its_range_is_null_not_zero():
    coco = COCO()
    kpts = np.zeros((17, 3))
    kpts[:, 0], kpts[:, 1], kpts[:, 2] = np.linspace(100, 300, 17), np.linspace(50, 400, 17), 2
    coco.dataset = {"images": [{"id": 1, "width": 640, "height": 480, "file_name": "a.jpg"}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                     "bbox": [90, 40, 220, 370], "area": 220 * 370.0,
                                     "keypoints": kpts.reshape(-1).tolist(), "num_keypoints": 17}],
                    "categories": [{"id": 1, "name": "person"}]}
    coco.createIndex()
    kpts[:, 2] = 1
    metrics = coco_keypoint_metrics(coco, [{"image_id": 1, "category_id": 1, "score": 1.0,
                                            "keypoints": kpts.reshape(-1).tolist()}])
    assert metrics["AP"] == pytest.approx(1.0) and metrics["APl"] == pytest.approx(1.0)
    assert metrics["APm"] is None and metrics["ARm"] is None  # no medium person: not 0.0


def test_boxes_in_either_format_and_the_default_stated_in_help(capsys):
    assert tools.eval.parse_boxes("10,20,30,40") == [[10, 20, 30, 40]]
    assert tools.eval.parse_boxes("10,20,40,60;1,2,3,4", "xyxy") == [[10, 20, 30, 40], [1, 2, 2, 2]]
    with pytest.raises(UserError, match="x2 > x1"):
        tools.eval.parse_boxes("10,20,5,60", "xyxy")
    with mock.patch.object(sys, "argv", ["eval.py", "--help"]), pytest.raises(SystemExit):
        tools.eval.main()
    assert "xywh = x,y,w,h as in COCO (the default)" in " ".join(capsys.readouterr().out.split())


def test_image_mode_prints_and_saves_keypoints_draws_the_box_and_says_when_nothing_is_drawn(
        shared_data, tmp_path, tiny_checkpoint, capsys):
    image = shared_data / "coco_sample" / "images" / "val2017" / "000000000785.jpg"
    cfg = write_cfg(tmp_path, TEST={"IN_VIS_THRE": 0.99})  # an untrained model: no joint above 0.99
    code, out, err = run_eval("--cfg", cfg, "--checkpoint", tiny_checkpoint, "--out", tmp_path / "img",
                              "--image", image, "--boxes", "280,45,499,392", "--box-format", "xyxy",
                              capsys=capsys)
    assert code == 0, err
    report = json.loads(out)
    saved = json.loads((tmp_path / "img" / "000000000785_keypoints.json").read_text())
    assert saved == report
    person = report["persons"][0]
    assert person["box_xywh"] == [280, 45, 219, 347]
    assert len(person["keypoints"]) == 17 and all(len(k) == 3 for k in person["keypoints"])
    assert person["joints_drawn"] == 0
    assert "person 0" in err and "no joint scored above TEST.IN_VIS_THRE 0.99" in err
    drawn = cv2.imread(report["picture"]).astype(int)
    plain = cv2.imread(str(image)).astype(int)
    assert np.abs(drawn[45:392, 280] - plain[45:392, 280]).mean() > 20  # the box's left edge
