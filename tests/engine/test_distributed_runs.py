"""torchrun with 2 and 3 gloo processes on the CPU, classification and pose, 2 epochs each:
the sharded evaluation equals one process evaluating the whole val set, every collective
carries tensors of the run's device, and a SIGTERM to one rank stops all ranks at the
same iteration, after which --resume ends bit-identical to the uninterrupted run.

The runs are the slowest tests of the suite, so each is made once and shared."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, _tiny_cls_yaml

WORKER = Path(__file__).with_name("distributed_worker.py")
POSE_CFG = REPO / "configs" / "demo" / "pose_coco_sample_tiny.yaml"


def launch(nproc: int, script: Path, args: list, env: dict | None = None, stopped: bool = False):
    """Run ``script args`` under torchrun with ``nproc`` gloo processes; ``stopped``: the ranks
    exit 3 (stopped by a signal)."""
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
         str(script), *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if stopped:
        codes = re.findall(r"exitcode\s*:\s*(-?\d+)", proc.stderr)
        # the first rank to exit 3 makes torchrun end the others (SIGTERM, -15) in their teardown
        assert proc.returncode != 0 and "3" in codes and set(codes) <= {"3", "-15"}, \
            proc.stdout[-3000:] + proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def torchrun(nproc: int, cfg: Path, opts: list, records: Path, *extra, env: dict | None = None,
             stopped: bool = False):
    """tools/train.py under torchrun through the recording worker (records in ``records``)."""
    records.mkdir(parents=True, exist_ok=True)
    return launch(nproc, WORKER, ["--cfg", cfg, *extra, "--opts", *opts],
                  {"RECORD_DIR": str(records), **(env or {})}, stopped)


class Runs:
    """Distributed runs made on first use: ``get(task, nproc)`` -> (run_dir, records dir)."""

    def __init__(self, root: Path, cls_root: Path, coco: Path):
        self.root, self.cls_root, self.coco = root, cls_root, coco
        self.done: dict = {}

    def config(self, task: str, name: str) -> tuple[Path, list, Path]:
        """(config file, --opts, run dir) of a 2-epoch run."""
        out = self.root / "out"
        if task == "classification":
            cfg = self.root / f"{name}.yaml"
            cfg.write_text(_tiny_cls_yaml(self.cls_root, out, DEVICE="cpu", TRAIN={"END_EPOCH": 2, "BATCH_SIZE_PER_GPU": 4},
                                          TEST={"BATCH_SIZE_PER_GPU": 4}))  # 4 val batches: 3 ranks get 2, 2, 0
            return cfg, [], out / "classification" / name
        opts = ["NAME", name, "OUTPUT_DIR", out, "DATASET.ROOT", self.coco, "TRAIN.END_EPOCH", 2,
                "TRAIN.EVAL_EVERY", 2, "TRAIN.MAX_ITERS_PER_EPOCH", 2, "MODEL.IMAGE_SIZE", "[32,64]",
                "MODEL.HEATMAP_SIZE", "[8,16]", "TEST.BATCH_SIZE_PER_GPU", 16, "TEST.NUM_DRAW", 0,
                "DETERMINISTIC", "true", "DEVICE", "cpu"]  # 68 val persons: 5 batches over the ranks
        return POSE_CFG, opts, out / "pose" / name

    def get(self, task: str, nproc: int) -> tuple[Path, Path]:
        if (task, nproc) not in self.done:
            name = f"{task}_{nproc}"
            cfg, opts, run_dir = self.config(task, name)
            torchrun(nproc, cfg, opts, self.root / "records" / name)
            self.done[task, nproc] = run_dir, self.root / "records" / name
        return self.done[task, nproc]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_image_folder, shared_data):
    return Runs(tmp_path_factory.mktemp("distributed"), tiny_image_folder, shared_data / "coco_sample")


def one_process_metrics(run_dir: Path) -> dict:
    """The run's final weights evaluated over the whole val set in this one process."""
    from tasks.engine import config
    from tasks.engine.weights import load_file_strict
    from tasks.engine.data import make_loader
    from tasks.engine.task import get as get_task

    cfg = config.load(run_dir / "config.yaml")
    task = get_task(cfg.TASK)(cfg)
    model = task.build_model()
    load_file_strict(model, run_dir / "checkpoint_last.pth")
    model.eval()
    _, val_set = task.build_datasets()
    with torch.no_grad():
        return task.evaluate(model, make_loader(val_set, cfg.TEST.BATCH_SIZE_PER_GPU, 0, None,
                                                task.collate_fn()), None)


@pytest.mark.parametrize("task,nproc", [("classification", 2), ("classification", 3), ("pose", 2), ("pose", 3)])
def test_sharded_evaluation_equals_one_process_on_the_whole_set(runs, task, nproc):
    run_dir, _ = runs.get(task, nproc)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs"] == 2 and f"world {nproc}" in (run_dir / "train.log").read_text()
    final = {k.removeprefix("val_"): v for k, v in results["final"].items() if k.startswith("val_")}
    expected = one_process_metrics(run_dir)
    assert final == expected  # exactly: every metric, bit for bit
    if task == "pose":  # rank 0 scored the gathered predictions of every rank
        assert len(json.loads((run_dir / "keypoints_val2017_results.json").read_text())) == 68


def test_every_collective_of_a_run_carries_tensors_of_its_device(runs):
    """NCCL moves CUDA tensors only; checked on gloo by recording every tensor handed to
    torch.distributed (the run's device here is the CPU, as its log says)."""
    run_dir, records = runs.get("classification", 3)
    assert "device cpu, world 3" in (run_dir / "train.log").read_text()
    calls = [call for rank in range(3) for call in json.loads((records / f"rank{rank}.json").read_text())]
    assert {"all_reduce", "all_gather"} <= {name for name, _ in calls}
    assert all(devices == ["cpu"] for _, devices in calls), [c for c in calls if c[1] != ["cpu"]]


def metrics_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "train_seconds"} for row in csv.DictReader(f)]


def test_sigterm_on_one_rank_stops_all_and_resume_is_bit_identical(runs):
    reference, _ = runs.get("classification", 2)  # 6 iterations per epoch and rank
    cfg, opts, run_dir = runs.config("classification", "interrupted")
    records = runs.root / "records" / "interrupted"
    stopped = torchrun(2, cfg, opts, records, env={"STOP_RANK": "1", "STOP_STEP": "9"}, stopped=True)
    lines = [ln.split(" ", 1)[1] for ln in stopped.stdout.splitlines() if "stopped at" in ln]
    assert lines == ["stopped at epoch 1, iteration 3; resume with --resume"], stopped.stdout  # rank 0 only
    assert sum(" optimizer: " in ln for ln in stopped.stdout.splitlines()) == 1  # every console line once
    state = torch.load(run_dir / "checkpoint_last.pth", weights_only=True)
    assert (state["epoch"], state["iters_done"]) == (1, 3) and len(state["rng"]) == 2
    torchrun(2, cfg, opts, records, "--resume")
    got = torch.load(run_dir / "checkpoint_last.pth", weights_only=True)["model"]
    expected = torch.load(reference / "checkpoint_last.pth", weights_only=True)["model"]
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert metrics_rows(run_dir) == metrics_rows(reference)  # train loss of both ranks too
