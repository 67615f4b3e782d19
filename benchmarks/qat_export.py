"""Float vs W8A8 / W4A4 / W2A2 after export: ONNX file size, onnxruntime CPU latency, test accuracy.

    python benchmarks/qat_export.py                       # CIFAR ResNet-20 on the CIFAR-10 subset
    python benchmarks/qat_export.py --float-checkpoint output/classification/x/model_best.pth \\
        --data data/cifar10 --float-epochs 0 --qat-epochs 30 --max-iters 0

Pipeline (everything through the suite's own trainer and exporter): train a float model (or take
``--float-checkpoint``), fine-tune it with QAT at each bit width (``--method``, BSAM by default),
export every model with ``quant.export`` (the parity check against PyTorch runs on the test
split), then time onnxruntime on CPU at batch 1 and score the ONNX files on the test split.
Numbers depend on the training budget: the defaults are a few CPU minutes, not a recipe.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from quant.export import onnx_session, run_onnx  # noqa: E402
from tasks.engine.config import make_config  # noqa: E402
from tasks.engine.io import save_json  # noqa: E402
from tasks.engine.task import get as get_task  # noqa: E402
from tasks.engine.trainer import Trainer  # noqa: E402
from tasks.qat.exporting import check_images, export_classifier  # noqa: E402


def base_config(args, task: str, name: str, epochs: int, lr: float, extra: dict | None = None):
    sections = {
        "NAME": name, "OUTPUT_DIR": str(args.out), "WORKERS": args.workers, "SEED": 0,
        "PRINT_FREQ": 50, "DEVICE": args.device,
        "DATASET": {"ROOT": str(args.data), "AUGMENT": "cifar", "IMAGE_SIZE": 32},
        "MODEL": {"NAME": args.model, "NUM_CLASSES": args.num_classes},
        "TRAIN": {"BATCH_SIZE_PER_GPU": args.batch, "END_EPOCH": max(epochs, 1),
                  "MAX_ITERS_PER_EPOCH": args.max_iters, "LR": lr, "LR_SCHEDULER": "cosine",
                  "WD": 5e-4 if task == "classification" else 1e-4, "EVAL_EVERY": max(epochs, 1)},
        "TEST": {"BATCH_SIZE_PER_GPU": 250},
    }
    for key, value in (extra or {}).items():
        sections.setdefault(key, {}).update(value)
    return make_config(sections, task=task, config_dir=str(REPO))


def train(cfg) -> Path:
    Trainer(cfg).fit()
    return Path(cfg.OUTPUT_DIR) / cfg.TASK / cfg.NAME / "checkpoint_last.pth"


def load_model(cfg, checkpoint: Path):
    from tasks.engine.pretrained import load_into, load_state_dict_file

    cfg.MODEL.PRETRAINED = ""
    model = get_task(cfg.TASK)(cfg).build_model()
    load_into(model, load_state_dict_file(checkpoint), skip_prefixes=(), source=str(checkpoint))
    return model.eval()


def latency_ms(path: Path, image: np.ndarray, threads: int, runs: int) -> float:
    """Median wall time of one batch-1 inference (after a warm-up)."""
    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name
    for _ in range(10):
        session.run(None, {name: image})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: image})
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def onnx_accuracy(path: Path, dataset, threads: int) -> float:
    images = check_images(dataset, len(dataset))
    labels = np.asarray(dataset.targets)  # check_images took every image, in order
    logits = run_onnx(path, images.numpy(), threads=threads)
    return float((logits.argmax(1) == labels).mean() * 100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_subset"))
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--float-checkpoint", help="skip float training and start from this checkpoint")
    p.add_argument("--float-epochs", type=int, default=3)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--max-iters", type=int, default=0, help="cap iterations per epoch (0 = whole epoch)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--bits", type=int, nargs="+", default=[8, 4, 2])
    p.add_argument("--method", default="bsam", choices=["none", "sam", "bsam"])
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for timing")
    p.add_argument("--runs", type=int, default=200, help="timed batch-1 inferences per model")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--torch-threads", type=int, default=0, help="PyTorch threads (0 = its default)")
    p.add_argument("--out", type=Path, default=REPO / "output" / "bench_qat_export")
    args = p.parse_args()
    args.data = Path(args.data).resolve()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    rows = []
    float_cfg = base_config(args, "classification", "bench_float", args.float_epochs, 0.05)
    float_ckpt = Path(args.float_checkpoint) if args.float_checkpoint else train(float_cfg)
    plans = [("float", float_cfg, float_ckpt)]
    for bits in args.bits:
        cfg = base_config(args, "qat", f"bench_w{bits}a{bits}", args.qat_epochs, 0.01, {
            "MODEL": {"PRETRAINED": str(float_ckpt)},
            "QUANT": {"W_BITS": bits, "A_BITS": bits, "CALIB_BATCHES": 4},
            "SAM": {"METHOD": args.method, "RHO_MIN_END": 0.0},
        })
        plans.append((f"W{bits}A{bits}", cfg, None))

    for label, cfg, checkpoint in plans:
        checkpoint = checkpoint or train(cfg)
        model = load_model(cfg, checkpoint)
        _, test_set = get_task(cfg.TASK)(cfg).build_datasets()
        path = args.out / "onnx" / f"{label}.onnx"
        report = export_classifier(model, cfg, test_set, path, images=len(test_set))
        torch_top1 = get_task(cfg.TASK)(cfg).evaluate(
            model, torch.utils.data.DataLoader(test_set, batch_size=250), None)["top1"]
        image = check_images(test_set, 1).numpy()
        rows.append({
            "model": label, "bytes": path.stat().st_size,
            "latency_ms": latency_ms(path, image, args.threads, args.runs),
            "onnx_top1": onnx_accuracy(path, test_set, args.threads), "torch_top1": torch_top1,
            "agreement": report.top1_agreement,
        })

    base = rows[0]["bytes"]
    print(f"\n{args.model} on {args.data.name}, QAT with {args.method}; onnxruntime CPU, "
          f"{args.threads} thread(s), batch 1")
    print(f"{'model':<7} {'ONNX size':>12} {'x float':>8} {'latency/img':>12} {'top-1 onnx':>11} "
          f"{'top-1 torch':>12} {'agree':>7}")
    for r in rows:
        print(f"{r['model']:<7} {r['bytes'] / 1e6:>9.3f} MB {r['bytes'] / base:>8.3f} "
              f"{r['latency_ms']:>9.3f} ms {r['onnx_top1']:>10.1f}% {r['torch_top1']:>11.1f}% "
              f"{r['agreement']:>7.3f}")
    save_json(rows, args.out / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
