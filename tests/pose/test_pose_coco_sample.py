"""The pose pipeline on the real COCO sample: records, ground-truth AP, flips, detection boxes."""
import json

import numpy as np
import pytest
import torch

from tasks.engine.config import make_config
from tasks.engine.errors import UserError
from tasks.pose.decode import decode_heatmaps, flip_back
from tasks.pose.evaluation import METRIC_NAMES, coco_keypoint_metrics, coco_results
from tasks.pose.coco_people import load_coco
from tasks.pose.skeleton import flip_permutation
from tasks.pose.task import PoseTask

SMALL_MODEL = {"IMAGE_SIZE": [64, 96], "HEATMAP_SIZE": [16, 24],
               "EXTRA": {"NUM_LAYERS": 18, "NUM_DECONV_FILTERS": [32, 32, 32]}}


def pose_task(root, **sections):
    data = {"DATASET": {"ROOT": str(root), **sections.pop("DATASET", {})}, "MODEL": SMALL_MODEL, **sections}
    return PoseTask(make_config(data, task="pose"))


@pytest.fixture(scope="module")
def coco_root(shared_data):
    return shared_data / "coco_sample"


def test_records_keep_exactly_the_labelled_non_crowd_persons(coco_root):
    task = pose_task(coco_root)
    train, val = task.build_datasets()
    # SOURCE.md: 86 train / 68 val instances with keypoints (crowd ones have none)
    assert (len(train), len(val)) == (86, 68)
    assert all(r.visible.sum() > 0 for r in val.records)
    x, target, weight, meta = train[0]
    assert x.shape == (3, 96, 64) and target.shape == (17, 24, 16) and weight.shape == (17, 1)
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 3


def test_ground_truth_through_the_results_writer_and_evaluator_gives_ap_1(coco_root):
    coco = load_coco(coco_root / "annotations" / "person_keypoints_val2017.json")
    image_ids, poses, areas = [], [], []
    for ann in coco.dataset["annotations"]:
        if ann["iscrowd"] or ann["num_keypoints"] == 0:
            continue
        kpts = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        x, y, w, h = ann["bbox"]
        labelled = kpts[:, 2] > 0
        kpts[~labelled, :2] = (x + w / 2, y + h / 2)  # unlabelled joints: anywhere
        kpts[:, 2] = labelled  # joint score
        image_ids.append(ann["image_id"])
        poses.append(kpts)
        areas.append(w * h)
    results = coco_results(image_ids, np.array(poses), np.ones(len(poses)), areas, 0.2, 0.9)
    assert len(results) == 68  # OKS-NMS keeps every distinct person
    metrics = coco_keypoint_metrics(coco, results, sorted(coco.getImgIds()))
    assert set(metrics) == set(METRIC_NAMES)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)


def test_encoded_targets_decoded_back_score_high_ap(coco_root):
    """Targets -> decode -> back-projection -> COCOeval: the quantisation of a 24x16 heatmap
    costs little at 128x96, so a model that learned the targets perfectly would score near 1."""
    task = PoseTask(make_config({"DATASET": {"ROOT": str(coco_root)},
                                 "MODEL": {"IMAGE_SIZE": [96, 128], "HEATMAP_SIZE": [24, 32]}}, task="pose"))
    val = task.build_val_dataset()
    poses, ids, areas = [], [], []
    for i in range(len(val)):
        _, target, weight, meta = val[i]
        coords, maxvals = decode_heatmaps(target[None].numpy(), [meta["center"]], [meta["scale"]])
        poses.append(np.concatenate([coords[0], maxvals[0]], axis=1))
        ids.append(meta["image_id"])
        areas.append(meta["area"])
    results = coco_results(ids, np.array(poses), np.ones(len(ids)), areas, 0.2, 0.9)
    assert coco_keypoint_metrics(val.coco, results, val.image_ids)["AP"] > 0.85


def test_the_flip_augmentation_mirrors_the_crop_and_swaps_left_and_right(coco_root):
    task = pose_task(coco_root)
    train, _ = task.build_datasets()
    idx = max(range(len(train)), key=lambda i: train.records[i].visible.sum())
    rec = train.records[idx]
    geometry = (rec.center, rec.scale, 10.0, False)
    crop, target, weight, _ = train.make_sample(idx, geometry)
    crop_f, target_f, weight_f, _ = train.make_sample(idx, (rec.center, rec.scale, 10.0, True))
    assert np.abs(crop_f.astype(int) - crop[:, ::-1].astype(int)).max() <= 1
    np.testing.assert_array_equal(weight_f, weight[flip_permutation()])
    back = flip_back(torch.from_numpy(target_f)[None]).numpy()[0]
    peaks = lambda h: np.stack(np.unravel_index(h.reshape(17, -1).argmax(1), h.shape[1:]), 1)
    shown = weight[:, 0] > 0
    assert shown.sum() >= 5
    assert np.abs(peaks(back)[shown] - peaks(target)[shown]).max() <= 1


def _write_coco(root, images, annotations, split="val2017"):
    (root / "annotations").mkdir(exist_ok=True)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))


def test_a_mirrored_image_gives_mirrored_keypoints(coco_root, tmp_path):
    """The same picture, plain and mirrored on disk, through records -> crop -> targets ->
    decode -> back-projection: the keypoints of the mirrored one are the mirror image."""
    import cv2

    coco = load_coco(coco_root / "annotations" / "person_keypoints_val2017.json")
    ann = max((a for a in coco.dataset["annotations"] if not a["iscrowd"]), key=lambda a: a["num_keypoints"])
    info = coco.imgs[ann["image_id"]]
    image = cv2.imread(str(coco_root / "images" / "val2017" / info["file_name"]))
    (tmp_path / "images" / "val2017").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "val2017" / "plain.png"), image)
    cv2.imwrite(str(tmp_path / "images" / "val2017" / "mirror.png"), image[:, ::-1])
    width = info["width"]
    kpts = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
    mirrored = kpts.copy()
    mirrored[:, 0] = np.where(kpts[:, 2] > 0, width - 1 - kpts[:, 0], 0)
    mirrored = mirrored[flip_permutation()]
    x, y, w, h = ann["bbox"]
    anns = [dict(ann, id=1, image_id=1), dict(ann, id=2, image_id=2, bbox=[width - x - w, y, w, h],
                                              keypoints=mirrored.reshape(-1).tolist())]
    images = [dict(info, id=1, file_name="plain.png"), dict(info, id=2, file_name="mirror.png")]
    _write_coco(tmp_path, images, anns)
    task = pose_task(tmp_path, DATASET={"TRAIN_SET": "val2017"})
    val = task.build_val_dataset()
    out = []
    for i in range(2):
        _, target, _, meta = val[i]
        coords, _ = decode_heatmaps(target[None].numpy(), [meta["center"]], [meta["scale"]])
        out.append(coords[0])
    plain, flipped = out
    back = flipped[flip_permutation()].copy()
    back[:, 0] = width - 1 - back[:, 0]
    labelled = kpts[:, 2] > 0
    pixel = val.records[0].scale[0] / 16  # image pixels per heatmap pixel
    assert np.abs(back - plain)[labelled].max() <= 1.5 * pixel


def test_detection_boxes_mode_runs_on_test_coco(coco_root, tmp_path):
    det = coco_root / "person_detection_results" / "test_coco_det_AP_H_56.json"
    task = pose_task(coco_root, DATASET={"TEST_ANN_FILE": "annotations/test_coco.json"},
                     TEST={"USE_GT_BBOX": False, "COCO_BBOX_FILE": str(det), "IMAGE_THRE": 0.0, "NUM_DRAW": 2})
    assert len(task.build_val_dataset()) == 118
    task.cfg.TEST.IMAGE_THRE = 0.5  # SOURCE.md: 18 boxes score >= 0.5 (keeps the test fast)
    task.cfg.MODEL.IMAGE_SIZE, task.cfg.MODEL.HEATMAP_SIZE = [32, 64], [8, 16]
    val = task.build_val_dataset()
    assert len(val) == 18 and val.image_ids == [785, 40083, 196141, 197388]
    torch.manual_seed(0)
    model = task.build_model().eval()
    loader = torch.utils.data.DataLoader(val, batch_size=64)
    metrics = task.evaluate(model, loader, tmp_path)
    assert set(metrics) == set(METRIC_NAMES) and all(0 <= v <= 1 for v in metrics.values())
    results = json.loads((tmp_path / "keypoints_val2017_results.json").read_text())
    assert 0 < len(results) <= 18 and len(results[0]["keypoints"]) == 51
    assert len(list((tmp_path / "pose_pictures").glob("*.jpg"))) == 2
    assert task.evaluate(model, loader, None) == metrics  # out_dir None writes nothing, same numbers


def test_missing_coco_says_what_to_download_and_points_to_the_demo(tmp_path):
    with pytest.raises(UserError, match="cocodataset.org.*demo"):
        pose_task(tmp_path / "nothing").build_datasets()
