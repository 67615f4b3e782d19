"""HRNet end to end through the command-line tools on the COCO sample: a tiny pose_hrnet
trained with BSAM (channels_last), evaluated with flip test, DARK and COCOeval from its
checkpoint, run on a picture with --image, and exported to ONNX with heatmap parity."""
import json
from pathlib import Path

import onnx

REPO = Path(__file__).resolve().parents[2]
CFG = REPO / "configs" / "demo" / "pose_hrnet_coco_sample_tiny.yaml"


def test_train_eval_image_and_export_of_a_tiny_hrnet(shared_data, tmp_path, tool):
    coco = shared_data / "coco_sample"
    opts = ["DATASET.ROOT", str(coco), "OUTPUT_DIR", str(tmp_path), "TRAIN.MAX_ITERS_PER_EPOCH", "2",
            "CHANNELS_LAST", "true"]
    train = tool("tools/train.py", "--cfg", CFG, "--opts", *opts)
    run_dir = tmp_path / "pose" / CFG.stem
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "bsam" and 0.0 <= results["best"]["val_AP"] <= 1.0
    assert "pose_hrnet" in (run_dir / "train.log").read_text() + train.stderr + train.stdout
    checkpoint = run_dir / "model_best.pth"
    evaluated = tool("tools/eval.py", "--cfg", CFG, "--checkpoint", checkpoint, "--out", tmp_path / "eval",
                     "--opts", *opts, "TEST.POST_PROCESS", "dark", "TEST.FLIP_TEST", "true")
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert {"AP", "AP50", "AR"} <= set(metrics) and 0.0 <= metrics["AP"] <= 1.0
    written = json.loads((tmp_path / "eval" / "keypoints_val2017_results.json").read_text())
    assert len(written) == 68
    image = coco / "images" / "val2017" / "000000000785.jpg"
    shown = tool("tools/eval.py", "--cfg", CFG, "--checkpoint", checkpoint, "--out", tmp_path / "picture",
                 "--image", image, "--boxes", "280,45,219,347", "--opts", *opts)
    persons = json.loads(shown.stdout.strip().splitlines()[-1])["persons"]
    assert len(persons) == 1 and len(persons[0]["keypoints"]) == 17
    exported = tool("tools/export.py", "--cfg", CFG, "--checkpoint", checkpoint, "--out", tmp_path / "hrnet.onnx",
                    "--check-images", "8", "--opts", *opts)
    report = json.loads(exported.stdout.strip().splitlines()[-1])
    assert report["checked_inputs"] == 8 and report["top1_agreement"] >= 0.99
    meta = {p.key: p.value for p in onnx.load(tmp_path / "hrnet.onnx").metadata_props}
    assert meta["model"] == "pose_hrnet" and json.loads(meta["input"])["height"] == 64
