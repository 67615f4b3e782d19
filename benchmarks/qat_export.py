"""Deployed quantized models side by side: ONNX size, onnxruntime latency, integer kernels, accuracy.

    python benchmarks/qat_export.py --float-epochs 4 --qat-epochs 1   # ResNet-20, CIFAR-10 subset
    python benchmarks/qat_export.py --float-checkpoint output/classification/x/model_best.pth \\
        --data data/cifar10 --float-epochs 0 --qat-epochs 30 --max-iters 0

Pipeline (through the suite's own trainer and exporter): train a float model (or take
``--float-checkpoint``), fine-tune it with QAT at each bit width (``--method``, BSAM by
default), export each (W8A8, W4A4 as int8-stored and as int4-packed, W2A2) with the parity
check on the whole test split, and quantize the same float model two other ways:
onnxruntime's ``quantize_static`` (QDQ, U8S8, per-channel, BN folded, calibrated on the same
training images) and ``torch.ao`` FX int8 (x86 backend; run in PyTorch) when present.
Latency is measured in this one process at 1 thread (``--threads``), batch 1 and batch 64,
in interleaved rounds (every model in every round, each call timed on its own), so that load
from other processes hits every model alike; the table gives the fastest call of each model
(load only ever adds time, so the minimum is the estimate of a model's own cost that other
processes disturb least, the choice of Python's ``timeit``) and results.json the median too.  Numbers depend on the training
budget: the defaults are a few CPU minutes, not a recipe.
"""
from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from quant.export import onnx_session, run_onnx  # noqa: E402
from quant.onnx_runtime import deployed_session, kernel_counts  # noqa: E402
from tasks.engine.config import make_config  # noqa: E402
from tasks.engine.io import save_json  # noqa: E402
from tasks.engine.task import get as get_task  # noqa: E402
from tasks.engine.trainer import Trainer  # noqa: E402
from tasks.classification.export import export_classifier  # noqa: E402
from tasks.engine.exporting import check_images  # noqa: E402

BATCHES = (1, 64)


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
    return get_task(cfg.TASK)(cfg).load_trained(checkpoint).eval()


@torch.no_grad()
def torch_logits(model, images: torch.Tensor) -> np.ndarray:
    return torch.cat([model(images[i:i + 250]) for i in range(0, len(images), 250)]).float().numpy()


def calibration_images(cfg, count: int) -> torch.Tensor:
    """Training images under the test transform (what quantize_static and torch.ao calibrate on)."""
    task = get_task("classification")(cfg)
    train_set, test_set = task.build_datasets()
    train_set.transform = test_set.transform
    return check_images(train_set, count)


def quantize_static_row(float_onnx: Path, calib: torch.Tensor, out: Path) -> Path:
    """onnxruntime's own post-training quantization of the float export (BN folded first)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib[i:i + 32].numpy()} for i in range(0, len(calib), 32)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        quant_pre_process(str(float_onnx), str(folded))  # onnxruntime's optimiser folds BN into Conv
        quantize_static(str(folded), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def torch_ao_model(float_model, calib: torch.Tensor):
    """torch.ao FX int8 (x86 backend), or None where this torch has no such API."""
    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError:
        return None
    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(float_model).eval(), get_default_qconfig_mapping("x86"),
                          example_inputs=(calib[:1],))
    with torch.no_grad():
        for i in range(0, len(calib), 32):
            prepared(calib[i:i + 32])
    return convert_fx(prepared).eval()


def interleaved_latency(runners: dict, images: np.ndarray, rounds: int, runs: dict[int, int]) -> dict:
    """{name: {batch: ms of every call}}.  Each round runs every model ``runs[b]`` times per
    batch size, in an order rotated from round to round, and every call is timed on its own:
    a burst of load from other processes then spoils single calls of every model alike, which
    the minimum (or the median) over all calls discards (a mean over a block would keep it)."""
    names = list(runners)
    times = {name: {b: [] for b in BATCHES} for name in names}
    for name in names:  # warm-up
        for b in BATCHES:
            runners[name](images[:b])
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for b in BATCHES:
            for name in order:
                for _ in range(runs[b]):
                    start = time.perf_counter()
                    runners[name](images[:b])
                    times[name][b].append(1e3 * (time.perf_counter() - start))
    return times


def onnx_runner(path: Path, threads: int):
    session = onnx_session(path, threads)
    return lambda x: session.run(None, {"input": x})


def torch_runner(model):
    def run(x):
        with torch.no_grad():
            model(torch.from_numpy(x))

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_subset"))
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--float-checkpoint", help="skip float training and start from this checkpoint")
    p.add_argument("--float-epochs", type=int, default=4)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--max-iters", type=int, default=0, help="cap iterations per epoch (0 = whole epoch)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--method", default="bsam", choices=["none", "sam", "bsam"])
    p.add_argument("--threads", type=int, default=1, help="onnxruntime and PyTorch threads for timing")
    p.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    p.add_argument("--calib-images", type=int, default=256, help="training images for quantize_static/torch.ao")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=REPO / "output" / "bench_qat_export")
    args = p.parse_args()
    args.data = Path(args.data).resolve()
    torch.set_num_threads(args.threads)
    onnx_dir = args.out / "onnx"

    float_cfg = base_config(args, "classification", "bench_float", args.float_epochs, 0.05)
    float_ckpt = Path(args.float_checkpoint) if args.float_checkpoint else train(float_cfg)
    float_model = load_model(float_cfg, float_ckpt)
    _, test_set = get_task("classification")(float_cfg).build_datasets()
    images = check_images(test_set, len(test_set))
    labels = np.asarray(test_set.targets)  # check_images took every image, in order
    float_logits = torch_logits(float_model, images)

    rows, models = [], {}  # rows: what the table prints; models: name -> (path or torch model)

    def onnx_row(name, path, torch_out, agreement=None):
        logits = run_onnx(path, images.numpy(), threads=args.threads)
        integer, floating = kernel_counts(deployed_session(path, args.threads)[1])
        rows.append({"model": name, "bytes": path.stat().st_size, "integer_kernels": integer,
                     "float_kernels": floating, "onnx_top1": float((logits.argmax(1) == labels).mean() * 100),
                     "torch_top1": float((torch_out.argmax(1) == labels).mean() * 100),
                     "agreement": float((logits.argmax(1) == torch_out.argmax(1)).mean()),
                     "max_logit_diff": float(np.abs(logits - torch_out).max())})
        models[name] = onnx_runner(path, args.threads)

    report = export_classifier(float_model, float_cfg, test_set, onnx_dir / "float.onnx", images=len(test_set))
    onnx_row("float", onnx_dir / "float.onnx", float_logits)
    for bits, formats in ((8, ("int8",)), (4, ("int8", "int4")), (2, ("int8",))):
        cfg = base_config(args, "qat", f"bench_w{bits}a{bits}", args.qat_epochs, 0.01, {
            "MODEL": {"PRETRAINED": str(float_ckpt)},
            "QUANT": {"W_BITS": bits, "A_BITS": bits, "CALIB_BATCHES": 4},
            "SAM": {"METHOD": args.method, "RHO_MIN_END": 0.0},
        })
        model = load_model(cfg, train(cfg))
        logits = torch_logits(model, images)
        for fmt in formats:
            cfg.QUANT.EXPORT_FORMAT = fmt
            name = f"W{bits}A{bits}" + (f" {fmt}" if bits < 8 else "")
            path = onnx_dir / f"w{bits}a{bits}_{fmt}.onnx"
            report = export_classifier(model, cfg, test_set, path, images=len(test_set))
            onnx_row(name, path, logits)
            rows[-1]["export_agreement"] = report.top1_agreement

    calib = calibration_images(float_cfg, args.calib_images)
    onnx_row("ORT quantize_static", quantize_static_row(onnx_dir / "float.onnx", calib, onnx_dir / "ort_static.onnx"),
             float_logits)
    ao = torch_ao_model(float_model, calib)
    if ao is not None:
        logits = torch_logits(ao, images)
        buffer = io.BytesIO()
        torch.save(ao.state_dict(), buffer)
        rows.append({"model": "torch.ao FX int8 (PyTorch)", "bytes": buffer.tell(), "integer_kernels": "x86 int8",
                     "baseline": "float (PyTorch)",
                     "onnx_top1": None, "torch_top1": float((logits.argmax(1) == labels).mean() * 100),
                     "agreement": float((logits.argmax(1) == float_logits.argmax(1)).mean())})
        models[rows[-1]["model"]] = torch_runner(ao)
    models["float (PyTorch)"] = torch_runner(float_model)

    calls = interleaved_latency(models, images.numpy(), args.rounds, {1: 20, 64: 3})
    latency = {name: {b: min(t) for b, t in per.items()} for name, per in calls.items()}
    for row in rows:
        row["latency_ms"] = latency[row["model"]]
        row["latency_median_ms"] = {b: statistics.median(t) for b, t in calls[row["model"]].items()}
    print(f"\n{args.model} on {args.data.name}, QAT with {args.method}; {args.threads} thread(s), fastest "
          f"call over {args.rounds} interleaved rounds; float in PyTorch: {latency['float (PyTorch)'][1]:.2f} ms "
          f"(batch 1), {latency['float (PyTorch)'][64]:.1f} ms (batch 64)")
    print("| model | size | latency b1 | vs float | latency b64 | vs float | integer kernels | top-1 ONNX "
          "| top-1 PyTorch | agreement |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        lat, base = r["latency_ms"], latency[r.get("baseline", "float")]  # torch.ao: vs float in PyTorch
        kernels = r["integer_kernels"] if isinstance(r["integer_kernels"], str) else (
            ", ".join(f"{n} {k}" for k, n in r["integer_kernels"].items()) or "no")
        onnx_top1 = "-" if r["onnx_top1"] is None else f"{r['onnx_top1']:.1f}%"
        print(f"| {r['model']} | {r['bytes'] / 1e6:.3f} MB | {lat[1]:.3f} ms | {base[1] / lat[1]:.2f}x "
              f"| {lat[64]:.1f} ms | {base[64] / lat[64]:.2f}x | {kernels} | {onnx_top1} | {r['torch_top1']:.1f}% "
              f"| {r['agreement']:.3f} |")
    save_json(rows, args.out / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
