"""tools/train.py and tools/eval.py end to end on a generated image folder: outputs,
bad input as one-line errors, resume after SIGKILL / SIGINT, and a 2-process torchrun."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import torch

from conftest import REPO

RUN_FILES = {"config.yaml", "train.log", "metrics.csv", "checkpoint_last.pth", "model_best.pth",
             "results.json", "curves.png"}


def run_dir(cfg_path: Path) -> Path:
    return cfg_path.parent / "out" / "classification" / cfg_path.stem


def final_weights(cfg_path: Path) -> dict:
    return torch.load(run_dir(cfg_path) / "checkpoint_last.pth", weights_only=True)["model"]


def test_train_writes_run_files_and_eval_reproduces(tiny_cls_cfg, tool):
    cfg = tiny_cls_cfg()
    tool("tools/train.py", "--cfg", cfg)
    out = run_dir(cfg)
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # header + one row per epoch
    header = rows[0].split(",")
    for column in ("train_loss", "val_top1", "grad_norm", "min_grad_norm", "cos_g0_g2",
                   "conflict_frac", "rho_min"):
        assert column in header
    per_class = [c for c in header if c.startswith("val_acc_")]
    assert per_class  # per-class accuracies are recorded, but kept off the console's epoch line
    epoch_lines = [ln for ln in (out / "train.log").read_text().splitlines() if " epoch 2: " in ln]
    assert len(epoch_lines) == 1 and "val_top1=" in epoch_lines[0]
    assert not any(f"{c}=" in epoch_lines[0] for c in per_class)
    evaluated = tool("tools/eval.py", "--cfg", cfg, "--checkpoint", out / "model_best.pth")
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert metrics["top1"] == results["best"]["val_top1"]
    assert results["best"]["val_top1"] >= 75.0  # red vs blue is easy


def run_in_process(tool_main, *args, capsys) -> tuple[int, str]:
    """A tool's main() through cli.run, as its ``__main__`` runs it: (exit code, stderr)."""
    from tasks.engine import cli

    with mock.patch.object(sys, "argv", ["tool", *map(str, args)]):
        with pytest.raises(SystemExit) as exited:
            cli.run(tool_main)
    return exited.value.code, capsys.readouterr().err


def test_bad_inputs_are_one_line_errors(tiny_cls_cfg, tmp_path, tool, capsys):
    import tools.eval
    import tools.train

    good = tiny_cls_cfg("good")
    bad_cases = {
        "unknown key": (tiny_cls_cfg("k1", TRAIN={"LRR": 0.1}), [], "TRAIN.LRR: unknown key (did you mean TRAIN.LR?)"),
        "wrong type": (tiny_cls_cfg("k2", TRAIN={"LR": "fast"}), [], "TRAIN.LR: expected a number"),
        "bad override": (good, ["--opts", "SAM.METHOD", "bsma"], "did you mean bsam?"),
        "missing data": (tiny_cls_cfg("k3", DATASET={"ROOT": str(tmp_path / "nowhere")}), [], "nowhere"),
    }
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("TASK: !!python/object/apply:os.system ['touch pwned']\n")
    bad_cases["unsafe tag"] = (unsafe, [], "unsafe or unknown YAML tag refused")
    for name, (cfg, extra, expected) in bad_cases.items():
        code, err = run_in_process(tools.train.main, "--cfg", cfg, *extra, capsys=capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert expected in lines[0], (name, lines[0])
        assert not (REPO / "pwned").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.pth"))

    # a truncated checkpoint: eval and resume refuse it in one line, and it is left alone
    tool("tools/train.py", "--cfg", good, "--opts", "TRAIN.END_EPOCH", "1")
    last = run_dir(good) / "checkpoint_last.pth"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    for main, args in ((tools.eval.main, ["--cfg", good, "--checkpoint", last]),
                       (tools.train.main, ["--cfg", good, "--resume"])):
        code, err = run_in_process(main, *args, capsys=capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert "truncated" in lines[0] and "checkpoint_last.pth" in lines[0]
    assert last.read_bytes() == data[: len(data) // 2]


def start_training(cfg: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "tools/train.py", "--cfg", str(cfg), *extra],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_epoch(cfg: Path, epoch: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until checkpoint_last.pth says ``epoch`` epochs are complete."""
    last = run_dir(cfg) / "checkpoint_last.pth"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        if last.exists() and torch.load(last, weights_only=True)["epoch"] >= epoch:
            return
        time.sleep(0.05)
    raise AssertionError("training did not reach the epoch in time")


def test_resume_after_sigkill_and_sigint_is_bit_identical(tiny_cls_cfg, tool):
    sections = dict(TRAIN={"END_EPOCH": 3, "BATCH_SIZE_PER_GPU": 6})
    reference = tiny_cls_cfg("reference", **sections)
    tool("tools/train.py", "--cfg", reference)
    expected = final_weights(reference)

    killed = tiny_cls_cfg("killed", **sections)
    proc = start_training(killed)
    wait_for_epoch(killed, 1, proc)
    time.sleep(0.3)  # somewhere inside epoch 1 (8 iterations)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tool("tools/train.py", "--cfg", killed, "--resume")

    interrupted = tiny_cls_cfg("interrupted", **sections)
    proc = start_training(interrupted)
    wait_for_epoch(interrupted, 1, proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 3, proc.stderr.read()  # stopped: resumable, not finished
    state = torch.load(run_dir(interrupted) / "checkpoint_last.pth", weights_only=True)
    tool("tools/train.py", "--cfg", interrupted, "--resume")

    for cfg in (killed, interrupted):
        got = final_weights(cfg)
        for key, value in expected.items():
            assert torch.equal(got[key], value), (cfg.stem, key)
        rows = (run_dir(cfg) / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + 3
    assert state["epoch"] >= 1  # the SIGINT checkpoint was written during (or after) epoch 1


def test_torchrun_two_processes_bf16_write_one_set_of_files(tiny_cls_cfg, tool):
    cfg = tiny_cls_cfg("ddp", TRAIN={"END_EPOCH": 2}, AMP="bf16", DEVICE="cpu")  # gloo, also on a GPU machine
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(29500 + os.getpid() % 1000), "tools/train.py", "--cfg", str(cfg)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir(cfg)
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    log = (out / "train.log").read_text()
    assert log.count("epoch 1:") == 1 and "world 2" in log
    assert len(list(out.parent.iterdir())) == 1
