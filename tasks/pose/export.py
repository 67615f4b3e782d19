"""Export a SimpleBaseline pose model to float ONNX, checked on the config's validation crops.

The parity check runs the exported heatmaps in onnxruntime against PyTorch: every joint's
heatmap peak must land on the same pixel (>= 99% of them) and the heatmaps must agree to
float noise.  Metadata records what a deployment needs besides the graph (joints, input
size, colour order, normalisation, and the evaluation's decoding: flip test, heatmap shift,
sub-pixel refinement, DARK's blur kernel, box padding), which :mod:`onnx_decode` reads to
reproduce ``tools/eval.py --image`` with NumPy and onnxruntime alone.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from torch import nn

from quant.export import ExportReport, Tolerance, export_onnx
from tasks.engine.exporting import check_images

from .images import IMAGENET_MEAN, IMAGENET_STD
from .skeleton import FLIP_PAIRS, NUM_JOINTS
from .transforms import BOX_PADDING

#: Float export: the heatmaps match up to summation order, so the peaks match.
HEATMAP_TOLERANCE = Tolerance(min_top1_agreement=0.99, max_rel_mean_diff=1e-3)


def pose_metadata(cfg) -> dict[str, str]:
    width, height = (int(v) for v in cfg.MODEL.IMAGE_SIZE)
    return {
        "task": cfg.TASK,
        "config": cfg.NAME,
        "model": cfg.MODEL.NAME,
        "joints": str(NUM_JOINTS),
        "input": json.dumps({"width": width, "height": height, "mean": IMAGENET_MEAN.tolist(),
                             "std": IMAGENET_STD.tolist(), "color": "RGB" if cfg.DATASET.COLOR_RGB else "BGR",
                             "layout": "NCHW float, (x/255 - mean) / std of a person crop"}),
        "output": "NCHW joint heatmaps (COCO joint order); decode with tasks.pose.onnx_decode.PoseSession",
        "decoding": json.dumps({"flip_test": bool(cfg.TEST.FLIP_TEST), "shift_heatmap": bool(cfg.TEST.SHIFT_HEATMAP),
                                "post_process": cfg.TEST.POST_PROCESS, "blur_kernel": int(cfg.TEST.BLUR_KERNEL),
                                "box_padding": BOX_PADDING, "flip_pairs": [list(p) for p in FLIP_PAIRS]}),
    }


def export_pose(model: nn.Module, cfg, dataset, path: str | Path | None, images: int = 16,
                threads: int | None = None, agreement: float | None = None) -> ExportReport:
    """Float ONNX of ``model`` at ``path`` (atomically, only if onnxruntime's heatmaps agree
    with PyTorch's on ``images`` validation crops: the peaks of ``agreement`` of the joints,
    default HEATMAP_TOLERANCE's); raises ExportParityError / ValueError."""
    inputs = check_images(dataset, images)
    tolerance = HEATMAP_TOLERANCE if agreement is None else replace(HEATMAP_TOLERANCE, min_top1_agreement=agreement)
    _, report = export_onnx(model, inputs, path, opset=17, tolerance=tolerance,
                            metadata=pose_metadata(cfg), threads=threads)
    return report
