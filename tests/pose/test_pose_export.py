"""Float ONNX export of SimpleBaseline: onnxruntime's heatmaps match PyTorch's, through Task.export."""
import json

import numpy as np
import onnx
import pytest
import torch

from quant.export import run_onnx
from tasks.engine.config import make_config
from tasks.engine.errors import UserError
from tasks.engine.task import Task
from tasks.pose.task import PoseTask

TINY = {"MODEL": {"IMAGE_SIZE": [32, 64], "HEATMAP_SIZE": [8, 16],
                  "EXTRA": {"NUM_LAYERS": 18, "NUM_DECONV_FILTERS": [16, 16, 16]}},
        "TEST": {"USE_GT_BBOX": True}}


def test_pose_float_export_matches_pytorch_heatmaps(shared_data, tmp_path):
    cfg = make_config({**TINY, "DATASET": {"ROOT": str(shared_data / "coco_sample"), "TEST_SET": "val2017"}},
                      task="pose")
    torch.manual_seed(0)
    task = PoseTask(cfg)
    model = task.build_model()
    torch.nn.init.normal_(model.final_layer.weight, std=0.1)  # distinct peaks (the paper's init is near flat)
    model.eval()
    path = tmp_path / "pose.onnx"
    report = task.export(model, path, images=4)
    assert report["top1_agreement"] == 1.0  # every joint's peak on the same heatmap pixel
    assert report["max_abs_diff"] < 1e-3 and report["checked_inputs"] == 4
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["joints"] == "17" and json.loads(meta["input"])["width"] == 32
    crops = task.build_val_dataset()
    x = torch.stack([crops[i][0] for i in range(2)])
    with torch.no_grad():
        expected = model(x).numpy()
    got = run_onnx(path, x.numpy())  # a dynamic batch: another batch size than the check's
    assert got.shape == (2, 17, 16, 8) and np.allclose(got, expected, atol=1e-3)


def test_a_task_without_export_says_so():
    class NoExport(Task):
        name = "noexport"

    with pytest.raises(UserError, match="task noexport does not offer export"):
        NoExport(cfg=None).export(torch.nn.Linear(1, 1), "x.onnx")
