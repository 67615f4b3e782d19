"""A run folder that holds a run is never overwritten silently, one run at a time uses it,
and NAME cannot point outside OUTPUT_DIR."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import tools.train
from reliability_helpers import one_error, run_folder, run_main, snapshot
from tasks.engine import run_dir
from tasks.engine.config import make_config
from tasks.engine.errors import UserError
from conftest import REPO

SHORT = dict(TRAIN={"END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": 2})


def test_a_finished_run_is_refused_then_moved_aside_with_overwrite(tiny_cls_cfg, capsys):
    cfg = tiny_cls_cfg("done", **SHORT)
    assert run_main(tools.train.main, "--cfg", cfg, capsys=capsys)[0] == 0
    folder = run_folder(cfg)
    before = snapshot(folder)

    line = one_error(*run_main(tools.train.main, "--cfg", cfg, capsys=capsys),
                     str(folder), "already holds a run", "--resume", "NAME", "--overwrite")
    assert "checkpoint_last.pth" in line
    assert snapshot(folder) == before

    line = one_error(*run_main(tools.train.main, "--cfg", cfg, "--resume", "--overwrite", capsys=capsys),
                     "--resume", "--overwrite")
    assert snapshot(folder) == before

    assert run_main(tools.train.main, "--cfg", cfg, "--overwrite", capsys=capsys)[0] == 0
    moved = [p for p in folder.parent.iterdir() if p.name.startswith("done.replaced-")]
    assert len(moved) == 1
    kept = snapshot(moved[0])
    assert all(kept[name] == data for name, data in before.items() if name != "train.log")
    assert (folder / "model_best.pth").is_file() and "--overwrite" in (folder / "train.log").read_text()


def test_a_second_run_is_locked_out_and_a_killed_run_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "out" / "classification" / "busy"
    with run_dir.claim(folder, resume=False):
        with pytest.raises(UserError, match="in use by another run"):
            with run_dir.claim(folder, resume=False):
                pass
    # a process that holds the lock and is killed (SIGKILL: no clean-up of any kind)
    code = ("import os, signal, sys; from tasks.engine import run_dir\n"
            f"with run_dir.claim({str(folder)!r}, resume=False):\n"
            "    print('held', flush=True); os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL and "held" in proc.stdout
    with run_dir.claim(folder, resume=False) as claim:  # the lock died with the process
        assert claim.resume is False


def test_stale_temp_files_are_removed_and_auto_resume_starts_fresh(tiny_cls_cfg, capsys):
    cfg = tiny_cls_cfg("auto", AUTO_RESUME=True, **SHORT)
    folder = run_folder(cfg)
    folder.mkdir(parents=True)
    stale = folder / ".checkpoint_last.pth.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert run_main(tools.train.main, "--cfg", cfg, capsys=capsys)[0] == 0  # no checkpoint: fresh
    assert not stale.exists()
    assert torch.load(folder / "checkpoint_last.pth", weights_only=True)["epoch"] == 1
    # the next AUTO_RESUME run continues the finished one instead of refusing it
    assert run_main(tools.train.main, "--cfg", cfg, capsys=capsys)[0] == 0
    assert len((folder / "metrics.csv").read_text().splitlines()) == 2


def test_train_log_does_not_follow_a_planted_symlink(tiny_cls_cfg, tmp_path, capsys):
    cfg = tiny_cls_cfg("linked", **SHORT)
    folder = run_folder(cfg)
    folder.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (folder / "train.log").symlink_to(victim)
    one_error(*run_main(tools.train.main, "--cfg", cfg, capsys=capsys), "train.log", "symbolic link")
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "a/b", "..", "x" * 300])
def test_name_must_be_a_plain_folder_name(name, tiny_cls_cfg, tmp_path, capsys):
    cfg = tiny_cls_cfg("named", NAME=name, **SHORT)
    one_error(*run_main(tools.train.main, "--cfg", cfg, capsys=capsys), "NAME", "plain run name")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escaped").exists()
    with pytest.raises(UserError, match="NAME"):
        make_config({"NAME": name})


def test_output_dir_that_is_a_file_is_one_line(tiny_cls_cfg, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    cfg = tiny_cls_cfg("blocked", OUTPUT_DIR=str(blocker), **SHORT)
    one_error(*run_main(tools.train.main, "--cfg", cfg, capsys=capsys), "cannot create the run folder",
              "OUTPUT_DIR")
    assert blocker.read_text() == "a file, not a folder"


def test_a_sigterm_stopped_run_exits_3(tiny_cls_cfg):
    cfg = tiny_cls_cfg("stopped", TRAIN={"END_EPOCH": 200, "BATCH_SIZE_PER_GPU": 4, "MAX_ITERS_PER_EPOCH": 2})
    last = run_folder(cfg) / "checkpoint_last.pth"
    proc = subprocess.Popen([sys.executable, "tools/train.py", "--cfg", str(cfg)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    while not last.exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 3, proc.stderr.read()  # stopped, resumable: not 0, not 2
    assert torch.load(last, weights_only=True)["epoch"] < 200
