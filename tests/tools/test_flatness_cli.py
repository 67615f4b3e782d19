"""tools/flatness.py end to end: a checkpoint written by the trainer, measured through the
task's own loss, for a classification and a pose model; several checkpoints compared on the
same batches and directions; the pictures; and its one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tasks.engine import checkpoint as checkpoint_lib
from tasks.engine import config
from tasks.engine import task as task_registry
from tasks.engine.errors import UserError
from tasks.engine import flatness_pictures, flatness_runs
from tools import flatness as flatness_tool

REPO = Path(__file__).resolve().parents[2]


def _write_cfg(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _make_checkpoint(cfg_path: Path, folder: Path, seed: int = 0) -> Path:
    """A checkpoint in the trainer's format (``checkpoint.save``), of the model the config
    builds (initialised with ``seed``), with its BN running statistics moved off their
    initial values."""
    cfg = config.load(cfg_path)
    task = task_registry.get(cfg.TASK)(cfg)
    torch.manual_seed(seed)
    model = task.build_model()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    return checkpoint_lib.save(folder / "checkpoint_last.pth", model=model.state_dict(),
                               optimizer={}, epoch=1)


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("cls")
    cfg_path = _write_cfg(tmp / "cls_tiny.yaml", {
        "TASK": "classification",
        "OUTPUT_DIR": str(tmp / "out"),
        "DEVICE": "cpu",
        "WORKERS": 0,
        "DATASET": {"ROOT": str(shared_data / "cifar10_subset"), "TRAIN_SET": "train",
                    "TEST_SET": "test", "FORMAT": "imagefolder",
                    "IMAGE_SIZE": 8},  # 8x8 images keep double backward cheap on 2 cores
        "MODEL": {"NAME": "cifar_resnet20", "NUM_CLASSES": 10},
        "TRAIN": {"BATCH_SIZE_PER_GPU": 8},
    })
    return cfg_path, _make_checkpoint(cfg_path, tmp / "run")


def test_classification_checkpoint_writes_json_and_pngs(classification_run, tmp_path, capsys):
    cfg_path, checkpoint = classification_run
    before = torch.load(checkpoint, weights_only=True)["model"]
    out = tmp_path / "flat"
    code = flatness_tool.main(["--cfg", str(cfg_path), "--checkpoint", str(checkpoint),
                               "--batches", "2", "--batch-size", "4", "--topk", "2", "--iters", "4",
                               "--trace-samples", "2", "--landscape", "2d", "--steps", "3",
                               "--out", str(out)])
    assert code == 0
    result = json.loads((out / "flatness.json").read_text())
    top = result["eigenvalues"]["top"]
    assert len(top) == 2 and top[0] >= top[1] and np.isfinite(top).all()
    assert top[0] > 0  # cross-entropy of a ReLU network: the top curvature is positive
    assert np.isfinite(result["trace"]["trace"]) and result["trace"]["samples"] == 2
    grid = np.asarray(result["landscape_2d"]["loss"])
    assert grid.shape == (3, 3) and np.isfinite(grid).all()
    assert grid[1, 1] == pytest.approx(result["loss"], rel=1e-5)  # the centre is the model itself
    assert result["num_batches"] == 2 and result["batch_size"] == 4 and result["task"] == "classification"
    for name in ("flatness_spectrum.png", "flatness_landscape_2d.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "top eigenvalues" in capsys.readouterr().out
    after = torch.load(checkpoint, weights_only=True)["model"]  # the tool never writes back
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_same_seed_same_numbers_and_1d_default_location(classification_run):
    cfg_path, checkpoint = classification_run
    args = ["--cfg", str(cfg_path), "--checkpoint", str(checkpoint), "--batches", "1", "--batch-size", "4",
            "--topk", "1", "--iters", "2", "--trace-samples", "0", "--steps", "3"]
    assert flatness_tool.main(args) == 0
    default_out = checkpoint.parent / "flatness"
    first = json.loads((default_out / "flatness.json").read_text())
    assert "trace" not in first and len(first["landscape_1d"]["loss"]) == 3
    assert (default_out / "flatness_landscape_1d.png").is_file()
    assert flatness_tool.main(args) == 0
    second = json.loads((default_out / "flatness.json").read_text())
    assert first["eigenvalues"] == second["eigenvalues"]
    assert first["landscape_1d"] == second["landscape_1d"]


def test_wrong_architecture_is_a_user_error(classification_run, tmp_path):
    cfg_path, checkpoint = classification_run
    with pytest.raises(UserError, match="does not fit"):
        flatness_tool.main(["--cfg", str(cfg_path), "--checkpoint", str(checkpoint),
                            "--opts", "MODEL.NAME", "cifar_resnet56"])


def test_missing_checkpoint_is_one_line_and_exit_2(classification_run, tmp_path):
    cfg_path, _ = classification_run
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "flatness.py"), "--cfg", str(cfg_path),
         "--checkpoint", str(tmp_path / "nope.pth")],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: checkpoint") and "nope.pth" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_pose_checkpoint_through_task_loss(tmp_path, shared_data):
    """SimpleBaseline on the real COCO sample: heatmap MSE curvature, 1-D landscape, and the
    pose batch's non-tensor meta passing through to ``task.loss`` untouched."""
    cfg_path = _write_cfg(tmp_path / "pose_tiny.yaml", {
        "TASK": "pose",
        "DEVICE": "cpu",
        "WORKERS": 0,
        "DATASET": {"ROOT": str(shared_data / "coco_sample"), "TRAIN_SET": "train2017",
                    "TEST_SET": "val2017", "PHOTOMETRIC": False},
        "MODEL": {"IMAGE_SIZE": [32, 32], "HEATMAP_SIZE": [2, 2], "SIGMA": 1.0,
                  "EXTRA": {"NUM_LAYERS": 18, "NUM_DECONV_LAYERS": 1, "NUM_DECONV_FILTERS": [16],
                            "NUM_DECONV_KERNELS": [4]}},
        "TRAIN": {"BATCH_SIZE_PER_GPU": 2},  # ResNet-18: the smallest pose net, tiny input
    })
    checkpoint = _make_checkpoint(cfg_path, tmp_path / "run")
    out = tmp_path / "flat"
    assert flatness_tool.main(["--cfg", str(cfg_path), "--checkpoint", str(checkpoint),
                               "--batches", "1", "--topk", "1", "--iters", "2",
                               "--trace-samples", "0", "--landscape", "1d", "--steps", "3",
                               "--out", str(out)]) == 0  # (trace: covered above; HVPs cost here)
    result = json.loads((out / "flatness.json").read_text())
    assert result["task"] == "pose" and result["batch_size"] == 2
    assert result["eigenvalues"]["top"][0] > 0  # MSE on heatmaps: Gauss-Newton, PSD-dominated
    losses = result["landscape_1d"]["loss"]
    assert losses[1] == pytest.approx(result["loss"], rel=1e-5) and result["loss"] > 0
    assert (out / "flatness_landscape_1d.png").read_bytes()[:4] == b"\x89PNG"


# -- several checkpoints compared ------------------------------------------------------------
MEASURED = ("loss", "grad_norm", "eigenvalues", "trace", "landscape_1d", "landscape_2d")


def _assert_same_numbers(a, b):
    """Equal structure, floats equal to rounding (one process, one thread: in practice bit
    for bit)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same_numbers(a[key], b[key])
    elif isinstance(a, list):
        np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-6)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6)
    else:
        assert a == b


def test_comparison_measures_every_checkpoint_as_its_own_single_run(classification_run, tmp_path):
    """Three checkpoints in one call: one entry each, with the numbers a single-checkpoint
    run with the same seed gives (same batches, same Lanczos start, Hutchinson probes and
    landscape directions), and one set of pictures in their common folder."""
    cfg_path, _ = classification_run
    checkpoints = [_make_checkpoint(cfg_path, tmp_path / "runs" / name, seed=i)
                   for i, name in enumerate(("sgd0", "sam0", "bsam0"))]
    options = ["--batches", "2", "--batch-size", "4", "--topk", "2", "--iters", "3",
               "--trace-samples", "2", "--landscape", "both", "--steps", "3", "--seed", "5"]
    assert flatness_tool.main(["--cfg", str(cfg_path), "--checkpoint", *map(str, checkpoints),
                               *options]) == 0
    comparison = json.loads((tmp_path / "runs" / "flatness_comparison" / "flatness.json").read_text())
    entries = comparison["entries"]
    assert [e["label"] for e in entries] == ["sgd0", "sam0", "bsam0"]  # run folders by default
    assert [e["checkpoint"] for e in entries] == list(map(str, checkpoints))
    assert comparison["num_batches"] == 2 and comparison["batch_size"] == 4 and comparison["seed"] == 5
    assert len({e["loss"] for e in entries}) == 3  # three different models, three different numbers
    cfg = config.load(cfg_path)
    for checkpoint, entry in zip(checkpoints, entries):  # what the tool runs for one checkpoint
        single = flatness_runs.measure_checkpoint(
            cfg, checkpoint, batches=2, batch_size=4, topk=2, iters=3, trace_samples=2,
            landscape="both", steps=3, seed=5)
        assert "entries" not in single and single["label"] == entry["label"]
        for key in MEASURED:
            _assert_same_numbers(entry[key], single[key])
    for name in ("flatness_spectrum.png", "flatness_landscape_1d.png", "flatness_landscape_2d.png"):
        assert (tmp_path / "runs" / "flatness_comparison" / name).stat().st_size > 20_000


def _trained_mlp(seed: int, steps: int):
    """A tiny MLP (>50 parameters) fitted for ``steps`` Adam steps on a fixed 3-class problem,
    and its batches: a sharp-walled basin whose loss grows many-fold within one filter norm."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, [(x[:32], y[:32]), (x[32:], y[32:])]


def _cross_entropy(model, batch):
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])


@pytest.fixture(scope="module")
def mlp_comparison():
    """Two MLP minima measured as the tool does (top-50, both landscapes), in its JSON shape."""
    from optim import flatness
    entries = []
    for label, steps in (("short", 30), ("long", 300)):
        model, batches = _trained_mlp(seed=1, steps=steps)
        result = flatness.measure(model, _cross_entropy, batches, topk=50, iters=50, trace_samples=4,
                                  landscape="both", steps=9, seed=0)
        entries.append({"label": label, "checkpoint": f"{label}.pth", **result})
    return {"task": "mlp", "split": "train", "batch_size": 32, "num_batches": 2, "seed": 0,
            "span": 1.0, "entries": entries}


def test_2d_contour_levels_crowd_around_the_minimum(mlp_comparison):
    from matplotlib.contour import ContourSet
    grids = [e["landscape_2d"]["loss"] for e in mlp_comparison["entries"]]
    low, high = min(np.min(g) for g in grids), max(np.max(g) for g in grids)
    assert high > 20 * low  # the edges are far above the basin: linear levels would miss it
    assert np.sum(np.linspace(low, high, 15) <= 2 * low) <= 1
    levels, note = flatness_pictures.contour_levels(grids)
    assert np.sum(levels <= 2 * low) > 1 and levels[0] == pytest.approx(low)
    assert "log-spaced" in note and "grey" in note
    fig = flatness_pictures.landscape_2d_figure(mlp_comparison)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title().splitlines()[0] for ax in panels] == ["short", "long"]
    drawn = [c for ax in panels for c in ax.collections if isinstance(c, ContourSet)]
    assert len(drawn) == 4  # filled and lines, per panel, all on the shared levels
    for contours in drawn:
        np.testing.assert_allclose(contours.levels, levels)
    title = fig.get_suptitle()
    assert "train split" in title and "2 batches of 32" in title and "seed 0" in title and note in title
    assert "x filter norm" in panels[0].get_xlabel()


def test_spectrum_has_integer_ranks_and_one_distribution_per_model(mlp_comparison, tmp_path):
    fig = flatness_pictures.spectrum_figure(mlp_comparison)
    ranks, density = fig.axes
    ticks = [t for t in ranks.get_xticks() if 1 <= t <= 50]
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks)
    assert len(ranks.get_lines()) == 2 and all(len(line.get_xdata()) == 50 for line in ranks.get_lines())
    assert [t.get_text() for t in density.get_legend().get_texts()] == ["short", "long"]
    assert "top-50" in fig.get_suptitle() and "seed 0" in fig.get_suptitle()
    written = flatness_pictures.draw_comparison(mlp_comparison, tmp_path)
    assert [p.name for p in written] == ["flatness_spectrum.png", "flatness_landscape_1d.png",
                                         "flatness_landscape_2d.png"]
    assert all(p.stat().st_size > 20_000 for p in written)  # drawn, not blank


def test_comparison_bad_input_is_a_user_error(classification_run, tmp_path):
    cfg_path, checkpoint = classification_run
    with pytest.raises(UserError, match="--labels gives 1 name"):
        flatness_tool.main(["--cfg", str(cfg_path), "--checkpoint", str(checkpoint), str(checkpoint),
                            "--labels", "SGD"])
    cfg = config.load(cfg_path)
    other = config.load(cfg_path, ["DATASET.IMAGE_SIZE", "16"])
    with pytest.raises(UserError, match="TASK/DATASET differ"):
        flatness_runs.compare_checkpoints([(cfg, checkpoint), (other, checkpoint)], ["a", "b"])
    with pytest.raises(UserError, match="one distinct label"):
        flatness_runs.compare_checkpoints([(cfg, checkpoint), (cfg, checkpoint)], ["a", "a"])


@pytest.mark.parametrize("topk, expected", [(10 ** 9, "trainable weights, so at most"),
                                            (90000, "GiB, more than the")])
def test_topk_beyond_the_model_or_memory_is_refused_before_the_allocation(classification_run, tmp_path,
                                                                           capsys, topk, expected):
    """cifar_resnet20 has ~270k weights: Lanczos for 90000 keeps 270k vectors of them, ~270 GiB."""
    from reliability_helpers import one_error, run_main

    cfg_path, checkpoint = classification_run
    one_error(*run_main(flatness_tool.main, "--cfg", cfg_path, "--checkpoint", checkpoint, "--topk", topk,
                        "--out", tmp_path / "flat", capsys=capsys), f"--topk {topk}", expected)
    assert not (tmp_path / "flat").exists()
