"""End to end through the command-line tools: train a tiny BSAM SimpleBaseline on the COCO
sample, evaluate with COCOeval, then draw predictions on a picture from its checkpoint."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CFG = REPO / "configs" / "demo" / "pose_coco_sample_tiny.yaml"


def run_tool(*args):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_train_then_eval_on_the_coco_sample(shared_data, tmp_path):
    coco = shared_data / "coco_sample"
    opts = ["DATASET.ROOT", str(coco), "OUTPUT_DIR", str(tmp_path), "TRAIN.MAX_ITERS_PER_EPOCH", "2",
            "MODEL.IMAGE_SIZE", "[32,64]", "MODEL.HEATMAP_SIZE", "[8,16]"]  # smaller still: CI speed
    run_tool("tools/train.py", "--cfg", str(CFG), "--opts", *opts)
    run_dir = tmp_path / "pose" / "pose_coco_sample_tiny"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "bsam" and results["main_metric"] == "AP"
    assert 0.0 <= results["best"]["val_AP"] <= 1.0 and "val_AR" in results["best"]
    assert (run_dir / "model_best.pth").is_file() and (run_dir / "checkpoint_last.pth").is_file()
    written = json.loads((run_dir / "keypoints_val2017_results.json").read_text())
    assert len(written) == 68 and {"image_id", "category_id", "keypoints", "score"} <= set(written[0])
    assert len(list((run_dir / "pose_pictures").glob("pose_*.jpg"))) == 2
    image = coco / "images" / "val2017" / "000000000785.jpg"
    proc = run_tool("tools/eval.py", "--cfg", str(CFG), "--checkpoint", str(run_dir / "model_best.pth"),
                    "--out", str(tmp_path / "eval"), "--image", str(image), "--boxes", "280,45,219,347",
                    "--opts", *opts)
    picture = Path(json.loads(proc.stdout.strip().splitlines()[-1])["picture"])
    assert picture.is_file() and picture.stat().st_size > 10_000
