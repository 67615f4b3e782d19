"""tools/ is a folder of scripts over the installed packages, not a package of its own: an
installed top-level ``tools`` would collide with any other project's ``tools``."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

FIND_TOOLS = "import importlib.util; spec = importlib.util.find_spec('tools'); print(spec and spec.origin)"


def run_elsewhere(tmp_path, *args) -> subprocess.CompletedProcess:
    """Run Python in an empty folder with only what is installed importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_install_does_not_provide_a_tools_package(tmp_path):
    proc = run_elsewhere(tmp_path, "-c", FIND_TOOLS)
    assert proc.returncode == 0, proc.stderr
    origin = proc.stdout.strip()
    assert origin == "None" or not origin.startswith(str(REPO)), origin


def test_a_tool_runs_from_another_folder(tmp_path):
    proc = run_elsewhere(tmp_path, str(REPO / "tools" / "train.py"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--cfg" in proc.stdout


def test_benchmarks_import_the_packages_not_the_tools():
    """Library code lives in the packages (e.g. flatness in tasks.engine.flatness_runs), so no
    benchmark reaches into tools/ for it."""
    for script in sorted((REPO / "benchmarks").rglob("*.py")):
        text = script.read_text()
        assert "from tools" not in text and "import tools" not in text, script
