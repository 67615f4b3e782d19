"""End to end through the command-line tools, on the real data samples:

1. train a CIFAR ResNet-20 with BSAM on the CIFAR-10 subset (briefly: a stand-in for a
   pretrained backbone);
2. fine-tune it with BSAM on flowers5 (5 classes) starting from that checkpoint: the
   10-class head is replaced, the backbone loaded.  Photos shrink to 24x24 and are not
   augmented so that 8 short epochs fit a CPU test (about 60% test accuracy; 50% asked);
3. ``tools/eval.py`` on the saved best checkpoint reproduces the reported accuracy exactly.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "demo" / "cls_cifar10_subset_tiny.yaml"
PRETRAIN = ["TRAIN.END_EPOCH", 2, "TRAIN.MAX_ITERS_PER_EPOCH", 30, "TRAIN.BATCH_SIZE_PER_GPU", 64]
FINETUNE_EPOCHS = 8  # full flowers5 epochs: 79 BSAM steps of 32 images at 24x24 each


def run_tool(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=1200, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_pretrain_on_cifar_finetune_on_flowers_then_eval(shared_data, tmp_path):
    common = ["OUTPUT_DIR", tmp_path, "SAM.METHOD", "bsam", "SEED", 0]
    run_tool("tools/train.py", "--cfg", TINY, "--opts", *common, *PRETRAIN, "NAME", "cifar_pretrain",
             "DATASET.ROOT", shared_data / "cifar10_subset")
    pretrained = tmp_path / "classification" / "cifar_pretrain" / "model_best.pth"
    assert pretrained.is_file()

    finetune = [*common, "NAME", "flowers_finetune", "DATASET.ROOT", shared_data / "flowers5",
                "MODEL.NUM_CLASSES", 5, "MODEL.PRETRAINED", pretrained, "DATASET.CUTOUT", 0,
                "DATASET.AUGMENT", "none", "DATASET.IMAGE_SIZE", 24,
                "TRAIN.END_EPOCH", FINETUNE_EPOCHS, "TRAIN.MAX_ITERS_PER_EPOCH", 0,
                "TRAIN.BATCH_SIZE_PER_GPU", 32, "TRAIN.LR", 0.1, "TRAIN.EVAL_EVERY", 1]
    run_tool("tools/train.py", "--cfg", TINY, "--opts", *finetune)
    run_dir = tmp_path / "classification" / "flowers_finetune"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "bsam" and results["main_metric"] == "top1"
    best = results["best"]
    assert best["val_top1"] >= 50.0, best
    assert {"val_acc_daisy", "val_acc_dandelion", "val_acc_rose", "val_acc_sunflower", "val_acc_tulip"} <= set(best)
    log = (run_dir / "train.log").read_text()
    assert "classifier re-initialised" in log and "fc.weight" in log
    assert (run_dir / "confusion_matrix.png").stat().st_size > 1000

    proc = run_tool("tools/eval.py", "--cfg", TINY, "--checkpoint", run_dir / "model_best.pth",
                    "--out", tmp_path / "eval", "--opts", *finetune)
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["top1"] == best["val_top1"]  # exactly: evaluation is deterministic
    assert all(metrics[k[len("val_"):]] == v for k, v in best.items() if k.startswith("val_acc_"))
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()
