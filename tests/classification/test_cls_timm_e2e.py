"""End to end through the tools with the shipped timm recipe and every one of its switches on:
a small timm ResNet created here and saved as a local safetensors file is fine-tuned on flowers5
through MODEL.PRETRAINED (EMA, RandAugment, random erasing, mixup/cutmix, layer decay, no-WD
norm/bias, BSAM), then evaluated and exported to ONNX.  Tiny images and a few iterations:
this checks that the pieces work together, not accuracy."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "transfer_timm_bsam.yaml"


def run_tool(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_timm_recipe_fine_tunes_a_local_timm_model_then_evaluates_and_exports(shared_data, tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = tmp_path / "test_resnet_backbone.safetensors"
    source = timm.create_model("test_resnet", num_classes=10)  # stands in for downloaded weights
    save_file(source.state_dict(), weights)

    opts = ["OUTPUT_DIR", tmp_path, "NAME", "timm_e2e", "WORKERS", 0, "DATASET.ROOT", shared_data / "flowers5",
            "MODEL.NAME", "timm/test_resnet", "MODEL.PRETRAINED", weights, "DATASET.IMAGE_SIZE", 32,
            "TRAIN.END_EPOCH", 2, "TRAIN.MAX_ITERS_PER_EPOCH", 3, "TRAIN.BATCH_SIZE_PER_GPU", 16,
            "TRAIN.EMA_DECAY", 0.5, "TEST.BATCH_SIZE_PER_GPU", 250]
    proc = run_tool("tools/train.py", "--cfg", RECIPE, "--opts", *opts)
    run_dir = tmp_path / "classification" / "timm_e2e"
    log = (run_dir / "train.log").read_text()
    assert "classifier re-initialised" in log and "fc.weight" in log
    assert "input: 32 px (DATASET.IMAGE_SIZE)" in log and "timm data config of test_resnet" in log
    assert "bilinear resizing (timm data config of test_resnet)" in log
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert {"val_top1", "val_top1_ema", "train_acc_mixed"} <= set(rows[0]) and "train_acc" not in rows[0]

    best = torch.load(run_dir / "model_best.pth", weights_only=True)
    assert best["weights"] in ("raw", "ema") and best["model"]["fc.weight"].shape[0] == 5
    results = json.loads((run_dir / "results.json").read_text())
    assert results["best"]["ema_weights"] == (best["weights"] == "ema")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["best"]["val_top1"] == results["best"]["val_top1"]

    evaluated = run_tool("tools/eval.py", "--cfg", RECIPE, "--checkpoint", run_dir / "model_best.pth",
                         "--out", tmp_path / "eval", "--opts", *opts)
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert metrics["top1"] == results["best"]["val_top1"]  # the kept weights are the scored ones

    onnx = tmp_path / "timm.onnx"
    exported = run_tool("tools/export.py", "--cfg", RECIPE, "--checkpoint", run_dir / "model_best.pth",
                        "--out", onnx, "--check-images", 16, "--opts", *opts)
    report = json.loads(exported.stdout.strip().splitlines()[-1])
    assert onnx.is_file() and onnx.stat().st_size > 500_000
    assert report["path"] == str(onnx), report
