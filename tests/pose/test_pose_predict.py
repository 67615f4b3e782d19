"""Drawing predictions on a user's own picture, and OKS-NMS."""
import cv2
import numpy as np
import pytest
import torch

from tasks.engine.config import make_config
from tasks.engine.errors import UserError
from tasks.pose.nms import oks_nms, oks_similarity
from tasks.pose.predict import predict_image
from tasks.pose.task import PoseTask

TINY = {"MODEL": {"IMAGE_SIZE": [32, 64], "HEATMAP_SIZE": [8, 16],
                  "EXTRA": {"NUM_LAYERS": 18, "NUM_DECONV_FILTERS": [16, 16, 16]}}}


def test_predict_image_returns_one_pose_per_box_inside_the_image_and_draws_them(shared_data, tmp_path):
    image_path = shared_data / "coco_sample" / "images" / "val2017" / "000000000785.jpg"
    cfg = make_config(TINY, task="pose")
    torch.manual_seed(0)
    model = PoseTask(cfg).build_model()
    out = tmp_path / "pred.jpg"
    poses = predict_image(model, cfg, image_path, [(280, 45, 219, 347), (10, 10, 50, 80)], out)
    assert len(poses) == 2 and all(p.shape == (17, 3) for p in poses)
    height, width = cv2.imread(str(image_path)).shape[:2]
    first = poses[0]
    assert np.all((first[:, 0] >= 280 - 0.2 * 219) & (first[:, 0] <= 499 + 0.2 * 219))  # inside the padded box
    drawn = cv2.imread(str(out))
    assert drawn.shape[:2] == (height, width)


def test_boxes_that_are_empty_or_off_the_image_and_missing_pictures_are_user_errors(shared_data):
    cfg = make_config(TINY, task="pose")
    model = PoseTask(cfg).build_model()
    image_path = shared_data / "coco_sample" / "images" / "val2017" / "000000000785.jpg"
    with pytest.raises(UserError, match="w, h > 0"):
        predict_image(model, cfg, image_path, [(1, 2, 0, 5)])
    with pytest.raises(UserError, match="outside the image"):
        predict_image(model, cfg, image_path, [(5000, 5000, 10, 10)])
    with pytest.raises(UserError, match="cannot read image"):
        predict_image(model, cfg, image_path.with_name("no_such.jpg"), [(0, 0, 10, 10)])


def test_oks_nms_drops_duplicates_and_keeps_distinct_people():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 100, (17, 2)), np.ones((17, 1))], axis=1)
    near = a.copy()
    near[:, :2] += 0.5
    far = a.copy()
    far[:, :2] += 300
    poses = np.stack([a, near, far])
    assert oks_similarity(a, 1e4, a[None], np.array([1e4]))[0] == pytest.approx(1.0)
    keep = oks_nms(poses, np.array([0.9, 0.95, 0.5]), np.full(3, 1e4), threshold=0.9)
    assert keep == [1, 2]  # the higher-scored twin survives, the far person too


def test_many_boxes_go_through_the_model_one_batch_at_a_time(shared_data):
    """Memory is that of TEST.BATCH_SIZE_PER_GPU crops, whatever the number of boxes (--image
    with 4000 boxes grew with them); the poses equal those of a box predicted alone."""
    image_path = shared_data / "coco_sample" / "images" / "val2017" / "000000000785.jpg"
    cfg = make_config({**TINY, "TEST": {"BATCH_SIZE_PER_GPU": 16}}, task="pose")
    torch.manual_seed(0)
    model = PoseTask(cfg).build_model()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    boxes = [(10 + i % 300, 20 + i % 200, 60 + i % 50, 120) for i in range(200)]
    poses = predict_image(model, cfg, image_path, boxes)
    assert len(poses) == 200 and max(seen) <= 2 * 16  # the flip test may double a batch
    alone = predict_image(model, cfg, image_path, boxes[-1:])[0]
    np.testing.assert_allclose(poses[-1], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_an_image_path_that_is_no_regular_file_is_refused_before_reading(kind, tmp_path):
    """A FIFO would block the reader for ever and /dev/zero would fill the memory."""
    import os

    path = tmp_path / "me.jpg"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path = "/dev/zero"
    cfg = make_config(TINY, task="pose")
    with pytest.raises(UserError, match={"fifo": "is a FIFO", "folder": "is a folder",
                                         "device": "is a character device"}[kind]):
        predict_image(PoseTask(cfg).build_model(), cfg, path, [(1, 2, 10, 10)])
