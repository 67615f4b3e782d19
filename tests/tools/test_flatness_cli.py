"""tools/flatness.py end to end: a checkpoint written by the trainer, measured through the
task's own loss, for a classification and a pose model; and its one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tasks.engine import checkpoint as checkpoint_lib
from tasks.engine import config
from tasks.engine import task as task_registry
from tasks.engine.errors import UserError
from tools import flatness as flatness_tool

REPO = Path(__file__).resolve().parents[2]


def _write_cfg(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _make_checkpoint(cfg_path: Path, folder: Path) -> Path:
    """A checkpoint in the trainer's format (``checkpoint.save``), of the model the config
    builds, with its BN running statistics moved off their initial values."""
    cfg = config.load(cfg_path)
    task = task_registry.get(cfg.TASK)(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    return checkpoint_lib.save(folder / "checkpoint_last.pth", model=model.state_dict(),
                               optimizer={}, epoch=1)


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("cls")
    cfg_path = _write_cfg(tmp / "cls_tiny.yaml", {
        "TASK": "classification",
        "OUTPUT_DIR": str(tmp / "out"),
        "DEVICE": "cpu",
        "WORKERS": 0,
        "DATASET": {"ROOT": str(shared_data / "cifar10_subset"), "TRAIN_SET": "train",
                    "TEST_SET": "test", "FORMAT": "imagefolder",
                    "IMAGE_SIZE": 8},  # 8x8 images keep double backward cheap on 2 cores
        "MODEL": {"NAME": "cifar_resnet20", "NUM_CLASSES": 10},
        "TRAIN": {"BATCH_SIZE_PER_GPU": 8},
    })
    return cfg_path, _make_checkpoint(cfg_path, tmp / "run")


def test_classification_checkpoint_writes_json_and_pngs(classification_run, tmp_path, capsys):
    cfg_path, checkpoint = classification_run
    before = torch.load(checkpoint, weights_only=True)["model"]
    out = tmp_path / "flat"
    code = flatness_tool.main(["--cfg", str(cfg_path), "--checkpoint", str(checkpoint),
                               "--batches", "2", "--batch-size", "4", "--topk", "2", "--iters", "4",
                               "--trace-samples", "2", "--landscape", "2d", "--steps", "3",
                               "--out", str(out)])
    assert code == 0
    result = json.loads((out / "flatness.json").read_text())
    top = result["eigenvalues"]["top"]
    assert len(top) == 2 and top[0] >= top[1] and np.isfinite(top).all()
    assert top[0] > 0  # cross-entropy of a ReLU network: the top curvature is positive
    assert np.isfinite(result["trace"]["trace"]) and result["trace"]["samples"] == 2
    grid = np.asarray(result["landscape_2d"]["loss"])
    assert grid.shape == (3, 3) and np.isfinite(grid).all()
    assert grid[1, 1] == pytest.approx(result["loss"], rel=1e-5)  # the centre is the model itself
    assert result["num_batches"] == 2 and result["batch_size"] == 4 and result["task"] == "classification"
    for name in ("flatness_spectrum.png", "flatness_landscape_2d.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "top eigenvalues" in capsys.readouterr().out
    after = torch.load(checkpoint, weights_only=True)["model"]  # the tool never writes back
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_same_seed_same_numbers_and_1d_default_location(classification_run):
    cfg_path, checkpoint = classification_run
    args = ["--cfg", str(cfg_path), "--checkpoint", str(checkpoint), "--batches", "1", "--batch-size", "4",
            "--topk", "1", "--iters", "2", "--trace-samples", "0", "--steps", "3"]
    assert flatness_tool.main(args) == 0
    default_out = checkpoint.parent / "flatness"
    first = json.loads((default_out / "flatness.json").read_text())
    assert "trace" not in first and len(first["landscape_1d"]["loss"]) == 3
    assert (default_out / "flatness_landscape_1d.png").is_file()
    assert flatness_tool.main(args) == 0
    second = json.loads((default_out / "flatness.json").read_text())
    assert first["eigenvalues"] == second["eigenvalues"]
    assert first["landscape_1d"] == second["landscape_1d"]


def test_wrong_architecture_is_a_user_error(classification_run, tmp_path):
    cfg_path, checkpoint = classification_run
    with pytest.raises(UserError, match="does not fit"):
        flatness_tool.main(["--cfg", str(cfg_path), "--checkpoint", str(checkpoint),
                            "--opts", "MODEL.NAME", "cifar_resnet56"])


def test_missing_checkpoint_is_one_line_and_exit_2(classification_run, tmp_path):
    cfg_path, _ = classification_run
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "flatness.py"), "--cfg", str(cfg_path),
         "--checkpoint", str(tmp_path / "nope.pth")],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: checkpoint") and "nope.pth" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_pose_checkpoint_through_task_loss(tmp_path, shared_data):
    """SimpleBaseline on the real COCO sample: heatmap MSE curvature, 1-D landscape, and the
    pose batch's non-tensor meta passing through to ``task.loss`` untouched."""
    cfg_path = _write_cfg(tmp_path / "pose_tiny.yaml", {
        "TASK": "pose",
        "DEVICE": "cpu",
        "WORKERS": 0,
        "DATASET": {"ROOT": str(shared_data / "coco_sample"), "TRAIN_SET": "train2017",
                    "TEST_SET": "val2017", "PHOTOMETRIC": False},
        "MODEL": {"IMAGE_SIZE": [32, 32], "HEATMAP_SIZE": [2, 2], "SIGMA": 1.0,
                  "EXTRA": {"NUM_LAYERS": 18, "NUM_DECONV_LAYERS": 1, "NUM_DECONV_FILTERS": [16],
                            "NUM_DECONV_KERNELS": [4]}},
        "TRAIN": {"BATCH_SIZE_PER_GPU": 2},  # ResNet-18: the smallest pose net, tiny input
    })
    checkpoint = _make_checkpoint(cfg_path, tmp_path / "run")
    out = tmp_path / "flat"
    assert flatness_tool.main(["--cfg", str(cfg_path), "--checkpoint", str(checkpoint),
                               "--batches", "1", "--topk", "1", "--iters", "2",
                               "--trace-samples", "0", "--landscape", "1d", "--steps", "3",
                               "--out", str(out)]) == 0  # (trace: covered above; HVPs cost here)
    result = json.loads((out / "flatness.json").read_text())
    assert result["task"] == "pose" and result["batch_size"] == 2
    assert result["eigenvalues"]["top"][0] > 0  # MSE on heatmaps: Gauss-Newton, PSD-dominated
    losses = result["landscape_1d"]["loss"]
    assert losses[1] == pytest.approx(result["loss"], rel=1e-5) and result["loss"] > 0
    assert (out / "flatness_landscape_1d.png").read_bytes()[:4] == b"\x89PNG"
