"""The exported pose model decoded with NumPy and onnxruntime alone (tasks/pose/onnx_decode.py)
gives what ``tools/eval.py --image`` gives, flip test and DARK included, from the settings the
export recorded in the model's metadata; a float model's metadata says float."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime
import pytest
import torch
import yaml

import tools.eval
import tools.export
from conftest import REPO
from tasks.engine import cli
from tasks.engine.config import make_config
from tasks.pose.onnx_decode import PoseSession, warp_crop
from tasks.pose.task import PoseTask
from tasks.pose.transforms import affine_matrix, box_to_center_scale, warp_image

TINY = {"IMAGE_SIZE": [64, 96], "HEATMAP_SIZE": [16, 24],
        "EXTRA": {"NUM_LAYERS": 18, "NUM_DECONV_FILTERS": [16, 16, 16]}}
IMAGE = "000000000785.jpg"  # a val2017 picture of the COCO sample with one person
BOXES = [[280, 45, 219, 347], [250, 20, 280, 420]]


def run_tool(main, *args):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["tool", *map(str, args)])
        with pytest.raises(SystemExit) as exited:
            cli.run(main)
    assert exited.value.code == 0


@pytest.fixture(scope="module")
def exported(shared_data, tmp_path_factory):
    """A tiny pose model (seeded weights), its config with DARK and the flip test, its ONNX file."""
    tmp = tmp_path_factory.mktemp("onnx_decode")
    torch.manual_seed(0)
    model = PoseTask(make_config({"MODEL": TINY}, task="pose")).build_model()
    checkpoint = tmp / "tiny.pth"
    torch.save(model.state_dict(), checkpoint)
    cfg = tmp / "tiny_pose.yaml"
    cfg.write_text(yaml.safe_dump({
        "TASK": "pose", "OUTPUT_DIR": str(tmp / "out"), "WORKERS": 0, "MODEL": TINY,
        "DATASET": {"ROOT": str(shared_data / "coco_sample"), "TRAIN_SET": "train2017", "TEST_SET": "val2017"},
        "TEST": {"FLIP_TEST": True, "SHIFT_HEATMAP": True, "POST_PROCESS": "dark", "BLUR_KERNEL": 11,
                 "NUM_DRAW": 0}}))
    onnx_file = tmp / "pose.onnx"
    run_tool(tools.export.main, "--cfg", cfg, "--checkpoint", checkpoint, "--out", onnx_file, "--check-images", 4)
    return cfg, checkpoint, onnx_file


def test_it_imports_without_torch_or_opencv():
    blocked = "import sys; sys.modules.update(torch=None, cv2=None, torchvision=None); "
    code = blocked + "import tasks.pose.onnx_decode as m; print(sorted(k for k in sys.modules if k in ('torch', 'cv2')))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-c", "import sys, tasks.pose.onnx_decode; print('torch' in sys.modules)"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_onnx_keypoints_reproduce_eval_image(exported, shared_data, tmp_path, capsys):
    cfg, checkpoint, onnx_file = exported
    image_path = shared_data / "coco_sample" / "images" / "val2017" / IMAGE
    boxes = ";".join(",".join(str(v) for v in box) for box in BOXES)
    run_tool(tools.eval.main, "--cfg", cfg, "--checkpoint", checkpoint, "--image", image_path,
             "--boxes", boxes, "--out", tmp_path)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = np.array([person["keypoints"] for person in report["persons"]])  # rounded to 0.01 px

    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    got = PoseSession(onnx_file).predict(image, BOXES)
    assert got.shape == (2, 17, 3)
    assert np.abs(got[..., :2] - expected[..., :2]).max() < 0.1
    assert np.abs(got[..., 2] - expected[..., 2]).max() < 1e-3


def test_the_settings_are_in_the_metadata_and_a_float_model_says_float(exported):
    _, _, onnx_file = exported
    meta = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).get_modelmeta()
    meta = meta.custom_metadata_map
    assert json.loads(meta["decoding"]) == {"flip_test": True, "shift_heatmap": True, "post_process": "dark",
                                            "blur_kernel": 11, "box_padding": 1.25,
                                            "flip_pairs": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12],
                                                           [13, 14], [15, 16]]}
    assert meta["weight_format"] == "float" and "quant_layers" not in meta


def test_the_numpy_crop_is_opencvs(shared_data):
    image = cv2.imread(str(shared_data / "coco_sample" / "images" / "val2017" / IMAGE))
    for box in ([280, 45, 219, 347], [-40, -25, 200, 180], [33.3, 12.7, 77.1, 150.9]):
        center, scale = box_to_center_scale(box, 192 / 256)
        matrix = affine_matrix(center, scale, 0.0, (192, 256))
        ours, opencv = warp_crop(image, matrix, (192, 256)).astype(int), warp_image(image, matrix, (192, 256))
        assert np.abs(ours - opencv).max() <= 1 and (ours != opencv).mean() < 1e-4  # OpenCV 5.0: equal
