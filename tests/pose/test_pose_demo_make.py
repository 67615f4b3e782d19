"""`make demo` twice on one checkout: the second run reuses the generated data and starts a
fresh run (the first is moved aside).  The test runs the very commands of the Makefile
(`make -n`), shortened by --opts to a one-iteration run on a 3-image set."""
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make (as `make demo` does)")


def demo_commands(*variables) -> list[list[str]]:
    # under `make test` the outer make's MAKEFLAGS/MAKELEVEL would make this one print
    # "Entering directory" lines: run it as a user's own `make demo` runs
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.installed-stamp", "demo",
                          f"PY={sys.executable}", *variables], cwd=REPO, capture_output=True, text=True,
                         check=True, env=env).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def test_make_demo_passes_only_command_line_variables(monkeypatch):
    monkeypatch.setenv("NAME", "from_the_environment")  # WSL sets NAME to the host name
    generate, train = demo_commands("SEED=2", "AMP=none")
    assert generate[1:] == ["-m", "tasks.pose.synthetic", "--cfg", "configs/demo/pose_bsam_demo.yaml"]
    assert train[1:] == ["tools/train.py", "--cfg", "configs/demo/pose_bsam_demo.yaml", "--overwrite",
                         "--opts", "SEED", "2", "AMP", "none"]


def test_a_second_make_demo_reuses_the_data_and_starts_a_fresh_run(tmp_path):
    """The earlier run is a stand-in (its files, no training) to keep the test short."""
    data, out = tmp_path / "pose_demo", tmp_path / "out"
    tiny = ["DATASET.ROOT", str(data), "DATASET.SYNTHETIC_IMAGES", "3", "DATASET.SYNTHETIC_VAL_IMAGES", "2",
            "OUTPUT_DIR", str(out), "TRAIN.END_EPOCH", "1", "TRAIN.MAX_ITERS_PER_EPOCH", "1", "TEST.NUM_DRAW", "0",
            "MODEL.IMAGE_SIZE", "[32, 64]", "MODEL.HEATMAP_SIZE", "[8, 16]", "TEST.FLIP_TEST", "false"]
    generate, train = demo_commands("NAME=twice")
    earlier = out / "pose" / "twice"
    earlier.mkdir(parents=True)
    (earlier / "results.json").write_text("{}")
    logs = []
    for command in (generate + ["--opts", *tiny], generate + ["--opts", *tiny], train + tiny):
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        logs.append(proc.stderr)
    assert "generating synthetic pose data" in logs[0] and "reused" in logs[1]
    runs = sorted(p.name for p in (out / "pose").iterdir())
    assert runs[0] == "twice" and runs[1].startswith("twice.replaced-") and len(runs) == 2
    assert (out / "pose" / runs[1] / "results.json").read_text() == "{}"
    assert "best" in (earlier / "results.json").read_text()
    assert "the earlier run was moved to" in (earlier / "train.log").read_text()
