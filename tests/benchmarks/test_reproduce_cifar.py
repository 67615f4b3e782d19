"""The converged reproduction preset end to end at smoke size: every row of its table is
trained (2 iterations), measured and reported, and --dry-run lists every run's command."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "reproduce_cifar.py"


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory) -> Path:
    """A 3-class ImageFolder of 32x32 images (class = dominant colour)."""
    root = tmp_path_factory.mktemp("cifar_like")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for channel, name in enumerate(("red", "green", "blue")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 90, (32, 32, 3), dtype=np.uint8)
                img[..., channel] = 200
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--preset", "converged", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=900)


LEDGER = REPO / "benchmarks" / "results" / "reproduce_cifar_converged"
#: The preset's first 18 runs, finished in the committed ledger.
FIRST_RUNS = [f"{m}_noise0_seed{s}" for s in range(3) for m in ("sgd", "sam", "bsam", "bsam_ref")] + [
    "sgd_noise40_seed0", "sam_noise40_seed0", "bsam_noise40_seed0", "sgd_x3_noise0_seed0", "sam_x1.5_noise0_seed0",
    "sgd_fp32_noise0_seed0"]


def test_dry_run_lists_every_run_and_the_time():
    proc = run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "37 runs" in out and "estimated" in out
    for name in ("sgd_x3_noise0_seed2", "sam_x1.5_noise0_seed1", "bsam_look5_noise0_seed2", "bsam_every5_noise0_seed0",
                 "sam_look5_noise0_seed1", "sgd_x1.4_noise0_seed2", "sgd_x1.2_noise0_seed0"):
        assert name in out
    assert out.count("python tools/train.py") == 37
    assert "DATASET.TRAIN_PER_CLASS 100" in out and "AMP bf16" in out and "TRAIN.END_EPOCH 450" in out
    # SGD at the cheap variants' compute: 150 epochs x 1.4 and x 1.2 passes per step
    assert "TRAIN.END_EPOCH 210" in out and "TRAIN.END_EPOCH 180" in out
    assert "SAM.INTERVAL 5 SAM.REUSE look" in out and "SAM.INTERVAL 5 SAM.REUSE none" in out
    # the ledger's records are reused wherever the checkout and the data live
    listed = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("  "))
    assert all(listed[name].strip() == "done" for name in FIRST_RUNS if (LEDGER / f"{name}.json").is_file())


def test_tuned_rows_train_at_the_values_their_sweep_chose(tmp_path):
    """--tuned lists a sweep per tuned method (on a 10% validation split); once a sweep holds
    its trials, its best values are the tuned rows' options.  An empty ledger of its own: the
    committed one holds both finished sweeps."""
    out, ledger = tmp_path / "bench", tmp_path / "ledger"
    ledger.mkdir()
    trials = [{"state": "complete", "params": {"SAM.RHO": 0.0123}, "value": 40.0},
              {"state": "fail", "params": {"SAM.RHO": 0.4}, "value": None}]
    best = {**trials[0], "trial": 0, "run": "tune_sam_trial000"}
    (out / "sweeps" / "sam_tuned").mkdir(parents=True)
    (out / "sweeps" / "sam_tuned" / "trials.json").write_text(json.dumps({"trials": trials, "best": best}))
    proc = run("--tuned", "--tune-trials", "2", "--dry-run", "--out", str(out), "--ledger", str(ledger))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("python tools/sweep.py") == 2 and "--trials 2" in proc.stdout
    assert "--space SAM.RHO=log:0.005:0.5 --space SAM.RHO_MIN=log:0.001:0.5" in proc.stdout
    assert "DATASET.VAL_FROM_TRAIN 0.1" in proc.stdout
    sam = [line for line in proc.stdout.splitlines() if "NAME sam_tuned_noise0_seed1" in line]
    assert len(sam) == 1 and "SAM.METHOD sam SAM.RHO 0.0123 " in sam[0]
    listed = dict(line.split(None, 1) for line in proc.stdout.splitlines() if line.startswith("  "))
    assert "after its sweep" in listed["bsam_tuned_noise0_seed0"]  # its sweep has not run
    assert "after its sweep" not in listed["sam_tuned_noise0_seed0"]


def test_same_recipe_ignores_where_the_checkout_and_the_data_are():
    """A ledger written from /work/main (data at ../shared/data/...) is reused from a checkout
    elsewhere, which sees the same data folder by another path."""
    from benchmarks.reproduction.plan import same_recipe

    recipe = ["DATASET.ROOT", "../shared/data/cifar10_subset", "TRAIN.LR", "0.05", "OUTPUT_DIR", "a"]
    moved = ["DATASET.ROOT", "/work/shared/data/cifar10_subset", "TRAIN.LR", "0.05", "OUTPUT_DIR", "b"]
    assert same_recipe(recipe, moved)
    assert not same_recipe(recipe, ["DATASET.ROOT", "/data/cifar100", "TRAIN.LR", "0.05"])
    assert not same_recipe(recipe, [*moved[:3], "0.1"])


def test_smoke_every_row(cifar_like, tmp_path):
    out = tmp_path / "bench"
    proc = run("--data", str(cifar_like), "--epochs", "1", "--max-iters", "2", "--seeds", "0", "--variant-seeds",
               "--lanczos-iters", "2", "--trace-samples", "1", "--landscape-steps", "3", "--compare-topk", "3",
               "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    rows = {r["row"]: r for r in results["rows"]}
    assert set(rows) == {"sgd_noise0", "sam_noise0", "bsam_noise0", "bsam_ref_noise0", "sgd_noise40",
                         "sam_noise40", "bsam_noise40", "sgd_x3_noise0", "sam_x1.5_noise0", "sgd_fp32_noise0"}
    for row in rows.values():
        assert len(row["acc"]) == 1 and 0 <= row["train_acc"][0] <= 100
        assert (len(row["top_eig"]) == 1) == (row["noise"] == 0)
    # the equal-compute rows trained 3x and 1.5x (rounded) the epochs
    epochs = {r["name"]: r["epochs"] for r in results["runs"]}
    assert epochs["sgd_x3_noise0_seed0"] == 3 and epochs["sam_x1.5_noise0_seed0"] == 2
    assert (out / "reproduce_cifar.png").stat().st_size > 10_000
    assert "memorisation" in (out / "results.md").read_text()
    # the first clean seed of each method, compared side by side on the same batches
    comparison = json.loads((out / "flatness" / "flatness.json").read_text())
    assert [e["checkpoint_name"] for e in comparison["entries"]] == [
        "sgd_noise0_seed0", "sam_noise0_seed0", "bsam_noise0_seed0", "bsam_ref_noise0_seed0"]
    assert len(list((out / "flatness").glob("*.png"))) >= 2
    # finished runs are reused, not retrained
    again = run("--data", str(cifar_like), "--epochs", "1", "--max-iters", "2", "--seeds", "0", "--variant-seeds",
                "--lanczos-iters", "2", "--trace-samples", "1", "--landscape-steps", "3", "--compare-topk", "3",
                "--out", str(out), "--report")
    assert again.returncode == 0 and "10 done, 0 to run" in again.stdout


def test_cheap_variants_train_and_report_their_passes(cifar_like, tmp_path):
    out = tmp_path / "bench"
    proc = run("--data", str(cifar_like), "--epochs", "1", "--max-iters", "2", "--seeds", "0", "--methods", "sam_look5",
               "bsam_every5", "--noise", "0", "--compute-seeds", "--lanczos-iters", "2", "--trace-samples", "1",
               "--landscape-steps", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {r["row"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"sam_look5_noise0", "bsam_every5_noise0"}
    assert rows["sam_look5_noise0"]["passes"] == 1.2 and rows["bsam_every5_noise0"]["passes"] == 1.4
    table = (out / "results.md").read_text()
    assert "| passes |" in table and "| SAM look k=5 (LookSAM) |" in table
    runs = {r["name"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert "SAM.INTERVAL" in runs["sam_look5_noise0_seed0"]["opts"]


def test_a_run_another_process_holds_is_left_to_it(cifar_like, tmp_path):
    """Two benchmark processes on one checkout: the run the other one holds is skipped (listed
    as remaining), and trained by the next start once its lock is free."""
    out = tmp_path / "bench"
    args = ("--data", str(cifar_like), "--epochs", "1", "--max-iters", "2", "--seeds", "0", "--methods", "sam",
            "--noise", "0", "--compute-seeds", "--lanczos-iters", "2", "--trace-samples", "1",
            "--landscape-steps", "3", "--compare-topk", "3", "--out", str(out))
    lock = out / "runs" / ".claims" / "sam_noise0_seed0.lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a training benchmark process holds
    try:
        held = run(*args)
    finally:
        os.close(fd)
    assert held.returncode == 0, held.stdout[-2000:] + held.stderr[-2000:]
    assert "being trained by another benchmark process" in held.stdout
    assert not (out / "runs" / "classification" / "sam_noise0_seed0").exists()
    assert json.loads((out / "results.json").read_text())["meta"]["remaining"] == ["sam_noise0_seed0"]
    free = run(*args)
    assert free.returncode == 0, free.stdout[-2000:] + free.stderr[-2000:]
    assert (out / "runs" / "classification" / "sam_noise0_seed0" / "record.json").is_file()
    assert json.loads((out / "results.json").read_text())["meta"]["remaining"] == []


def test_time_axis_is_each_runs_cpu_time_also_for_a_resumed_run():
    """A resumed run's curve spans every attempt while its wall_seconds is the last attempt's:
    the plotted time must end at the run's CPU time, not at the curve stretched by their ratio."""
    from benchmarks.reproduction.report import figure

    row = {"row": "sgd_noise0", "noise": 0.0, "mult": 1, "label": "SGD", "amp": "default"}
    records = [{"row": "sgd_noise0", "curve": [[100.0, 30.0], [400.0, 45.0]], "cpu_seconds": 600.0,
                "wall_seconds": 100.0},  # resumed: the last attempt trained 100 of the 400 s
               {"row": "sgd_noise0", "curve": [[150.0, 32.0], [300.0, 47.0]], "cpu_seconds": 300.0,
                "wall_seconds": 300.0}]
    line = figure([row], records).axes[0].get_lines()[0]
    assert list(line.get_xdata()) == pytest.approx([(150 + 150) / 2 / 60, (600 + 300) / 2 / 60])
    assert list(line.get_ydata()) == pytest.approx([31.0, 46.0])
