"""A fourth task runs through the tools without touching them: ``toy_task.py`` beside this
file is that task (``TASK: toy``), loaded by the config's ``CUSTOM_IMPORTS``; the tools, run as
scripts, train, evaluate and export it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent


def write_config(tmp_path: Path) -> Path:
    cfg = {"TASK": "toy", "CUSTOM_IMPORTS": ["toy_task"], "OUTPUT_DIR": str(tmp_path / "out"),
           "DEVICE": "cpu", "WORKERS": 0, "SEED": 3,
           "TRAIN": {"END_EPOCH": 3, "LR": 0.2, "LR_SCHEDULER": "constant", "BATCH_SIZE_PER_GPU": 32},
           "SAM": {"METHOD": "bsam", "RHO": 0.05, "RHO_MIN": 0.05}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_task_of_ones_own_trains_evaluates_and_exports_through_the_tools(tmp_path, tool):
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    cfg = write_config(tmp_path)
    tool("tools/train.py", "--cfg", cfg, env=env)
    run = tmp_path / "out" / "toy" / "toy"
    best = json.loads((run / "results.json").read_text())["best"]
    assert best["val_accuracy"] >= 90.0  # the blobs are far apart: the model did learn

    evaluated = tool("tools/eval.py", "--cfg", cfg, "--checkpoint", run / "model_best.pth", env=env)
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["accuracy"] == best["val_accuracy"]
    assert (run / "eval" / "results.json").is_file()

    exported = tool("tools/export.py", "--cfg", cfg, "--checkpoint", run / "model_best.pth",
                    "--out", tmp_path / "toy.json", env=env)
    report = json.loads(exported.stdout.strip().splitlines()[-1])
    assert report["agreement"] == 1.0 and report["checked_inputs"] == 32
    deployed = json.loads((tmp_path / "toy.json").read_text())
    trained = torch.load(run / "model_best.pth", weights_only=True)["model"]
    assert np.allclose(deployed["weight"], trained["weight"].numpy())

