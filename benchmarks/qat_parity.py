"""How often onnxruntime's integer graph and the PyTorch QAT model pick the same class, per bit width.

    python benchmarks/qat_parity.py                       # ResNet-20, CIFAR-10 subset, 10 QAT iterations
    python benchmarks/qat_parity.py --float-checkpoint output/classification/x/model_best.pth

Trains a float ResNet-20 briefly (or takes ``--float-checkpoint``), fine-tunes it with QAT for
``--qat-iters`` iterations at each bit configuration (W/A bits with 8-bit, float and equal
first/last layers), exports each without a gate and compares onnxruntime's optimised run with
the PyTorch model's evaluation on every test image: top-1 agreement, the largest logit
difference, and how many images differ at all.  Prints a markdown table, writes results.json.
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

from quant.export import Tolerance, export_onnx  # noqa: E402
from tasks.classification.export import export_metadata  # noqa: E402
from tasks.engine.config import make_config  # noqa: E402
from tasks.engine.exporting import check_images  # noqa: E402
from tasks.engine.io import save_json  # noqa: E402
from tasks.engine.task import get as get_task  # noqa: E402
from tasks.engine.trainer import Trainer  # noqa: E402

#: (W_BITS, A_BITS, FIRST_LAST_BITS) measured by default.
CONFIGS = ((8, 8, 8), (4, 4, 8), (3, 3, 8), (2, 2, 8), (4, 4, 0), (4, 4, 4), (2, 2, 0), (2, 2, 2))


def config(args, task: str, name: str, iters: int, lr: float, extra: dict | None = None):
    sections = {
        "NAME": name, "OUTPUT_DIR": str(args.out), "WORKERS": 0, "SEED": 0, "PRINT_FREQ": 50,
        "DEVICE": args.device,
        "DATASET": {"ROOT": str(args.data), "FORMAT": "imagefolder", "AUGMENT": "cifar", "IMAGE_SIZE": 32},
        "MODEL": {"NAME": "cifar_resnet20", "NUM_CLASSES": 10},
        "TRAIN": {"BATCH_SIZE_PER_GPU": 32, "END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": iters, "LR": lr,
                  "LR_SCHEDULER": "cosine", "WD": 1e-4},
        "TEST": {"BATCH_SIZE_PER_GPU": 250},
    }
    for key, value in (extra or {}).items():
        sections.setdefault(key, {}).update(value)
    return make_config(sections, task=task, config_dir=str(REPO))


def trained(cfg):
    Trainer(cfg).fit()
    path = Path(cfg.OUTPUT_DIR) / cfg.TASK / cfg.NAME / "checkpoint_last.pth"
    return get_task(cfg.TASK)(cfg).load_trained(path).eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(os.environ.get("BSAM_DATA", REPO.parent / "shared" / "data")) / "cifar10_subset"
    p.add_argument("--data", default=str(data))
    p.add_argument("--float-checkpoint", help="skip float training and start from this checkpoint")
    p.add_argument("--float-iters", type=int, default=40)
    p.add_argument("--qat-iters", type=int, default=10)
    p.add_argument("--configs", default=",".join("w{}a{}f{}".format(*c) for c in CONFIGS),
                   help="comma-separated wXaYfZ (f0: float first/last layers)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=REPO / "output" / "bench_qat_parity")
    args = p.parse_args()
    args.data = Path(args.data).resolve()
    float_cfg = config(args, "classification", "parity_float", args.float_iters, 0.05, {"SAM": {"METHOD": "none"}})
    if args.float_checkpoint:
        float_ckpt = Path(args.float_checkpoint)
    else:
        Trainer(float_cfg).fit()
        float_ckpt = args.out / "classification" / "parity_float" / "checkpoint_last.pth"
    _, test_set = get_task("classification")(float_cfg).build_datasets()
    images = check_images(test_set, len(test_set))
    rows = []
    for spec in args.configs.split(","):
        w, rest = spec[1:].split("a")
        a, f = rest.split("f")
        cfg = config(args, "qat", f"parity_{spec}", args.qat_iters, 0.002, {
            "MODEL": {"PRETRAINED": str(float_ckpt)},
            "QUANT": {"W_BITS": int(w), "A_BITS": int(a), "FIRST_LAST_BITS": int(f), "CALIB_BATCHES": 2},
            "SAM": {"METHOD": "bsam", "RHO": 0.05, "RHO_MIN": 0.05, "RHO_MIN_END": 0.0},
        })
        model = trained(cfg)
        start = time.perf_counter()
        with torch.no_grad():
            torch_out = torch.cat([model(images[i:i + 250]) for i in range(0, len(images), 250)]).numpy()
        torch_seconds = time.perf_counter() - start
        _, report = export_onnx(model, images, metadata=export_metadata(cfg, test_set),
                                tolerance=Tolerance(0.0, float("inf")))
        labels = np.asarray(test_set.targets)
        rows.append({"config": spec, "top1_agreement": report.top1_agreement, "max_logit_diff": report.max_abs_diff,
                     "rel_mean_diff": report.rel_mean_diff, "torch_top1": float((torch_out.argmax(1) == labels).mean()),
                     "torch_eval_seconds": torch_seconds, "images": report.checked_inputs})
        print(rows[-1], flush=True)
    print(f"\n| config | top-1 agreement | max logit diff | PyTorch eval s ({len(images)} images) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['top1_agreement']:.4f} | {r['max_logit_diff']:.3g} | {r['torch_eval_seconds']:.2f} |")
    save_json(rows, args.out / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
