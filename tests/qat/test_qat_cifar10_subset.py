"""Real data end to end: a float CIFAR ResNet-20 trained briefly on the CIFAR-10 subset, then
QAT with BSAM at W8A8 and W4A4 through tools/train.py, then ONNX through tools/export.py.

The runs are tiny (tens of iterations) so the accuracies are low; what is checked is how the
quantized models relate to the float one and to their ONNX files, on the 1000 test images.
"""
import json
import sys
from pathlib import Path
from unittest import mock

import onnx
import pytest
import torch
import yaml
from onnx import TensorProto

from tasks.engine.errors import UserError

TEST_IMAGES = 1000
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tools in subprocesses: small models, shared cores


def qat_yaml(root: Path, out: Path, **sections) -> dict:
    cfg = {
        "TASK": "qat", "OUTPUT_DIR": str(out), "WORKERS": 0, "SEED": 0, "PRINT_FREQ": 10,
        "DATASET": {"ROOT": str(root), "FORMAT": "imagefolder", "AUGMENT": "cifar", "IMAGE_SIZE": 32},
        "MODEL": {"NAME": "cifar_resnet20", "NUM_CLASSES": 10},
        "TRAIN": {"BATCH_SIZE_PER_GPU": 32, "END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": 4, "LR": 0.002,
                  "LR_SCHEDULER": "cosine", "WD": 1e-4},
        "SAM": {"METHOD": "bsam", "RHO": 0.05, "RHO_MIN": 0.05, "RHO_MIN_END": 0.0},
        "TEST": {"BATCH_SIZE_PER_GPU": 250},
        "QUANT": {"CALIB_BATCHES": 2, "EXPORT_CHECK_IMAGES": TEST_IMAGES},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(cfg_path: Path) -> dict:
    """tools/train.py in this process (saves the interpreter start-up of a subprocess)."""
    import tools.train

    with mock.patch.object(sys, "argv", ["tools/train.py", "--cfg", str(cfg_path)]):
        assert tools.train.main() == 0
    cfg = yaml.safe_load(cfg_path.read_text())
    run_dir = Path(cfg["OUTPUT_DIR"]) / cfg["TASK"] / cfg_path.stem
    return {**json.loads((run_dir / "results.json").read_text()), "run_dir": run_dir}


@pytest.fixture(scope="module")
def runs(shared_data, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("qat_runs")
    root = shared_data / "cifar10_subset"
    float_cfg = qat_yaml(root, out, TASK="classification",
                         TRAIN={"MAX_ITERS_PER_EPOCH": 40, "LR": 0.05}, SAM={"METHOD": "none"})
    del float_cfg["QUANT"]
    result = {"float": train(write(out / "float.yaml", float_cfg))}
    float_ckpt = result["float"]["run_dir"] / "model_best.pth"
    for name, bits, export in (("w8a8", 8, False), ("w4a4", 4, True)):
        cfg = qat_yaml(root, out, MODEL={"PRETRAINED": str(float_ckpt)}, TRAIN={"MAX_ITERS_PER_EPOCH": 10},
                       QUANT={"W_BITS": bits, "A_BITS": bits, "EXPORT": export})
        result[name] = train(write(out / f"{name}.yaml", cfg))
        result[name]["cfg"] = out / f"{name}.yaml"
    result["float"]["cfg"] = out / "float.yaml"
    for name, r in result.items():
        print(f"{name}: top1 {r['best']['val_top1']:.1f} top5 {r['best']['val_top5']:.1f}")
    return result


def top1(run) -> float:
    return run["best"]["val_top1"]


def test_w8a8_bsam_stays_within_one_point_of_float(runs):
    assert top1(runs["float"]) >= 20.0  # trained: well above the 10% of chance
    assert abs(top1(runs["w8a8"]) - top1(runs["float"])) <= 1.0


def test_w4a4_bsam_runs_and_reports_accuracy(runs):
    best = runs["w4a4"]["best"]
    assert 0.0 <= best["val_top5"] <= 100.0 and best["val_top1"] <= best["val_top5"]
    assert best["val_top1"] >= 15.0  # still a classifier after 4-bit QAT
    log = (runs["w4a4"]["run_dir"] / "train.log").read_text()
    assert "QAT layers:" in log and "20 Conv2d/Linear layers: 18 x W4A4, 2 x W8A8" in log


def test_export_at_end_of_training_runs_integer_kernels_with_parity(runs):
    run = runs["w4a4"]
    path = run["run_dir"] / "model.onnx"
    assert run["onnx_exported"] == 1.0
    # evaluation computes the integer kernels' arithmetic: on all 1000 test images, after 10
    # QAT iterations, onnxruntime's optimised run returns PyTorch's logits bit for bit
    assert run["onnx_top1_agreement"] == 1.0 and run["onnx_max_logit_diff"] == 0.0
    assert run["onnx_integer_kernels"]["QLinearConv"] == 19 and run["onnx_integer_kernels"]["QLinearAdd"] == 9
    proto = onnx.load(path)
    inits = {t.name: t for t in proto.graph.initializer}
    layers = json.loads({p.key: p.value for p in proto.metadata_props}["quant_layers"])
    assert len(layers) == 20
    for name, info in layers.items():  # EXPORT_FORMAT int8: 4-bit values stored in int8
        weight = inits[f"{name}.weight_int{info['w_bits']}"]
        assert weight.data_type == TensorProto.INT8
        values = onnx.numpy_helper.to_array(weight)
        assert -(2 ** (info["w_bits"] - 1)) <= values.min() and values.max() < 2 ** (info["w_bits"] - 1)
        assert f"{name}.weight" not in inits
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"])[0] == "airplane"
    assert json.loads(meta["input"])["size"] == 32


def test_export_tool_parity_and_float_export(runs, tmp_path, tool):
    w4 = runs["w4a4"]
    out = tmp_path / "w4a4.onnx"
    proc = tool("tools/export.py", "--cfg", w4["cfg"], "--checkpoint", w4["run_dir"] / "model_best.pth",
                "--out", out, "--check-images", str(TEST_IMAGES), "--opts", "QUANT.EXPORT_FORMAT", "int4",
                env=ONE_THREAD)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["top1_agreement"] >= 0.99 and report["checked_inputs"] == TEST_IMAGES
    assert report["weight_format"] == "int4" and report["ir_version"] == 10
    assert out.stat().st_size == report["bytes"]
    fl = runs["float"]
    float_out = tmp_path / "float.onnx"
    proc = tool("tools/export.py", "--cfg", fl["cfg"], "--checkpoint", fl["run_dir"] / "model_best.pth",
                    "--out", float_out, "--check-images", "200", env=ONE_THREAD)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["top1_agreement"] == 1.0
    print(f"ONNX bytes: float {float_out.stat().st_size}, W4A4 {out.stat().st_size}")
    assert out.stat().st_size < 0.3 * float_out.stat().st_size


def test_a_failed_export_fails_the_run_and_results_say_why(runs, tmp_path, capsys):
    from quant.export import ExportParityError

    cfg = yaml.safe_load(runs["w4a4"]["cfg"].read_text())
    cfg.update(OUTPUT_DIR=str(tmp_path))
    cfg["TRAIN"]["MAX_ITERS_PER_EPOCH"] = 1
    path = write(tmp_path / "failing.yaml", cfg)

    def refuse(*args, **kwargs):
        raise ExportParityError("onnxruntime disagrees with PyTorch (planted); no file written")

    with mock.patch("tasks.qat.task.export_classifier", refuse), pytest.raises(UserError, match="ONNX export failed") as err:
        train(path)
    run_dir = tmp_path / "qat" / "failing"
    assert f"checkpoints are kept in {run_dir}; to export anyway: python tools/export.py" in str(err.value)
    assert "--min-agreement" in str(err.value)
    assert "ONNX export failed" not in capsys.readouterr().out  # the console: only cli's error: line
    assert (run_dir / "train.log").read_text().count("ONNX export failed") == 1
    results = json.loads((run_dir / "results.json").read_text())
    assert "planted" in results["error"] and "onnx_exported" not in results
    assert results["epochs"] >= 1 and "final" in results  # the training's metrics are kept
    assert (run_dir / "checkpoint_last.pth").exists() and not (run_dir / "model.onnx").exists()


def export_main(*args):
    import tools.export

    with mock.patch.object(sys, "argv", ["tools/export.py", *map(str, args)]):
        return tools.export.main()


def test_export_tool_bad_inputs_are_clear_errors(runs, tmp_path, tool):
    w4, fl = runs["w4a4"], runs["float"]
    w4_ckpt, float_ckpt = w4["run_dir"] / "model_best.pth", fl["run_dir"] / "model_best.pth"
    cases = [
        ((w4["cfg"], float_ckpt), "it is a float model"),
        ((fl["cfg"], w4_ckpt), "is a QAT checkpoint"),
        ((w4["cfg"], w4_ckpt, "--opts", "MODEL.NAME", "cifar_resnet56"), "does not fit MODEL"),
        ((w4["cfg"], w4_ckpt, "--opts", "QUANT.W_BITS", "9"), "QUANT.W_BITS: 9 is not allowed"),
        ((w4["cfg"], w4_ckpt, "--opts", "QUANT.W_BITS", "2"), "QUANT.W_BITS 4 in the checkpoint, 2 in this"),
        ((w4["cfg"], w4_ckpt, "--min-agreement", "1.5"), "--min-agreement 1.5: use a fraction from 0 to 1"),
        ((w4["cfg"], tmp_path / "nope.pth"), "not found"),
    ]
    for args, expected in cases:
        with pytest.raises(UserError, match=expected):
            export_main("--cfg", *args[:1], "--checkpoint", *args[1:], "--out", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    proc = tool("tools/export.py", "--cfg", w4["cfg"], "--checkpoint", float_ckpt, check=False, env=ONE_THREAD)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_onnx_write_failures_are_one_line_errors_naming_the_file(runs, tmp_path, tool):
    """A path under a regular file, a folder where the file goes (also at the end of a QAT
    run), a folder without write permission: one error line naming the file, nothing written."""
    w4 = runs["w4a4"]
    ckpt = w4["run_dir"] / "model_best.pth"
    (tmp_path / "file").write_text("x")
    blocked = tmp_path / "file" / "model.onnx"
    proc = tool("tools/export.py", "--cfg", w4["cfg"], "--checkpoint", ckpt, "--out", blocked,
                "--check-images", "20", check=False, env=ONE_THREAD)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot write {blocked}: ")
    with mock.patch("tempfile.mkstemp", side_effect=PermissionError(13, "Permission denied")), \
            pytest.raises(UserError, match=f"cannot write {tmp_path / 'ro.onnx'}: Permission denied"):
        export_main("--cfg", w4["cfg"], "--checkpoint", ckpt, "--out", tmp_path / "ro.onnx", "--check-images", "20")
    from tasks.engine.config import load
    from tasks.engine.task import get as get_task

    cfg = load(w4["cfg"], ["QUANT.EXPORT_CHECK_IMAGES", "20"])
    task = get_task("qat")(cfg)
    (tmp_path / "run" / "model.onnx").mkdir(parents=True)  # a folder at the output path
    loader = mock.Mock(dataset=task.build_datasets()[1])
    with pytest.raises(UserError, match=f"ONNX export failed: cannot write {tmp_path / 'run' / 'model.onnx'}: "
                                        f".*The trained checkpoints are kept in {tmp_path / 'run'}"):
        task.on_fit_end(task.load_trained(ckpt).eval(), loader, tmp_path / "run")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["file", "model.onnx", "run"]  # no temp files
