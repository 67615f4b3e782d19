"""The task registry imports only the task a config names, and says which tasks exist."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from tasks.engine import task as task_registry
from tasks.engine.errors import UserError

ONLY_CLASSIFICATION = """
import os, sys
from tasks.engine import config
from tasks.engine.task import get
cfg = config.load("configs/cls_cifar10_bsam.yaml", [])
get(cfg.TASK)(cfg).build_model()
from tasks.classification import transforms  # the module that imports albumentations
print(sorted(m for m in sys.modules if m.split(".")[0] == "pycocotools" or m.startswith(("tasks.pose", "tasks.qat"))))
print(os.environ.get("NO_ALBUMENTATIONS_UPDATE"))
"""


def test_a_classification_run_imports_no_other_task():
    proc = subprocess.run([sys.executable, "-c", ONLY_CLASSIFICATION], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported, no_update = proc.stdout.splitlines()[-2:]
    assert imported == "[]"
    assert no_update == "1"  # albumentations was imported offline


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown TASK 'posse'; known tasks: classification, pose, qat"):
        task_registry.get("posse")


def test_a_broken_task_package_is_not_swallowed(monkeypatch):
    monkeypatch.setitem(task_registry.TASK_MODULES, "ghost", "tasks.no_such_task_package")
    assert "ghost" in task_registry.available()
    with pytest.raises(ModuleNotFoundError, match="tasks.no_such_task_package"):
        task_registry.get("ghost")
