"""Speed of the pose pipeline on the real COCO sample.

Training samples/s of the data pipeline (read JPEG, random scale/rotation/flip, affine crop,
colour augmentation, heatmap targets) in one process and through a 2-worker DataLoader, and
inference images/s (person crops) of the model with flip test, decoding and back-projection.
The model is the one of ``--cfg`` (default: the published ResNet-50 256x192 setting).

    python benchmarks/pose_data.py [--cfg configs/pose_bsam.yaml] [--samples 256] [--batches 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.engine.acceleration import resolve_amp  # noqa: E402
from tasks.engine.config import load  # noqa: E402
from tasks.engine.data import seed_worker  # noqa: E402
from tasks.pose.decode import decode_heatmaps, predict_heatmaps  # noqa: E402
from tasks.pose.task import PoseTask  # noqa: E402


def coco_sample() -> Path:
    root = Path(os.environ.get("BSAM_DATA", REPO.parent / "shared" / "data")) / "coco_sample"
    if not root.is_dir():
        sys.exit(f"error: COCO sample not found at {root}; set BSAM_DATA to the folder holding coco_sample")
    return root


def samples_per_second(dataset, count: int, workers: int, batch_size: int = 32) -> float:
    """Training samples produced per second (the first batch, i.e. start-up, is not timed)."""
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=count + batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                                         num_workers=workers, worker_init_fn=seed_worker)
    it = iter(loader)
    next(it)
    start, seen = time.perf_counter(), 0
    for batch in it:
        seen += batch[0].shape[0]
    return seen / (time.perf_counter() - start)


@torch.no_grad()
def inference_per_second(model, dataset, batches: int, batch_size: int, flip: bool, bf16: bool) -> float:
    """Person crops per second through model (+ flip test) + decoding, data loading excluded;
    under bfloat16 autocast when the config asks for it (AMP: bf16), as training does."""
    items = [dataset[i % len(dataset)] for i in range(batch_size)]
    inputs = torch.stack([x for x, *_ in items])
    centers = np.stack([m["center"] for *_, m in items])
    scales = np.stack([m["scale"] for *_, m in items])
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with autocast:
        predict_heatmaps(model, inputs, flip)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        with autocast:
            heatmaps = predict_heatmaps(model, inputs, flip).float().cpu().numpy()
        decode_heatmaps(heatmaps, centers, scales)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default=str(REPO / "configs" / "pose_bsam.yaml"))
    parser.add_argument("--samples", type=int, default=256, help="training samples timed per row")
    parser.add_argument("--batches", type=int, default=3, help="inference batches timed")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = coco_sample()
    cfg = load(args.cfg, ["DATASET.ROOT", str(root), "DATASET.SYNTHETIC", "false", "DATASET.TRAIN_SET", "train2017",
                          "DATASET.TEST_SET", "val2017", "DATASET.TEST_ANN_FILE", "", "MODEL.PRETRAINED", "",
                          "TEST.USE_GT_BBOX", "true"])
    task = PoseTask(cfg)
    train, val = task.build_datasets()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = task.build_model().to(device).eval()
    w, h = cfg.MODEL.IMAGE_SIZE
    amp = resolve_amp(cfg.AMP, device)[0]  # the demo's 'auto' -> bf16 or none
    bf16 = amp == "bf16"
    rows = [
        ("data pipeline, 1 process", samples_per_second(train, args.samples, 0), "samples/s"),
        ("data pipeline, DataLoader 2 workers", samples_per_second(train, args.samples, 2), "samples/s"),
        (f"inference, flip test ({device.type}, {amp})",
         inference_per_second(model, val, args.batches, args.batch_size, True, bf16), "crops/s"),
        (f"inference, no flip ({device.type}, {amp})",
         inference_per_second(model, val, args.batches, args.batch_size, False, bf16), "crops/s"),
    ]
    print(f"\npose pipeline on coco_sample ({len(train)} train persons), input {h}x{w}, "
          f"ResNet-{cfg.MODEL.EXTRA.NUM_LAYERS}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (other processes slow every row)\n")
    print(f"| {'what':40s} | {'rate':>10s} | unit      |")
    print(f"|{'-' * 42}|{'-' * 12}|-----------|")
    for what, rate, unit in rows:
        print(f"| {what:40s} | {rate:10.1f} | {unit:9s} |")


if __name__ == "__main__":
    main()
