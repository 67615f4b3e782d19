"""TRAIN.ACCUMULATE_STEPS through the trainer, with a model without batch norm (timm's
``test_efficientnet_gn``: GroupNorm, so a micro-batch's statistics are not a batch's):

* 4 micro-batches of 8 equal one batch of 32 in every weight after 10 optimizer steps, for
  SGD, Adam, SAM and BSAM, in one process and in 2 gloo processes (2 x 4 x 4 = 32 images,
  global perturbation);
* under torchrun, a SIGTERM in the middle of an accumulation cycle stops after that
  optimizer step, and ``--resume`` ends bit-identical to the uninterrupted run.

The tiny folder holds 48 training images: 2 optimizer steps per epoch (32 + 16 images), 5
epochs.
"""
from pathlib import Path

import pytest
import torch

from conftest import _tiny_cls_yaml
from tasks.engine import config
from tasks.engine.trainer import Trainer
from test_distributed_runs import launch

WORKER = Path(__file__).with_name("accumulation_worker.py")
METHODS = {
    "sgd": ({"OPTIMIZER": "sgd", "LR": 0.002}, {"METHOD": "none"}),
    "adam": ({"OPTIMIZER": "adam", "LR": 0.0005}, {"METHOD": "none"}),
    "sam": ({"OPTIMIZER": "sgd", "LR": 0.002}, {"METHOD": "sam"}),
    "bsam": ({"OPTIMIZER": "sgd", "LR": 0.002}, {"METHOD": "bsam", "RHO_MIN_END": 0.0}),
}
EPOCHS = 5
IMAGE_SIZE = 64
STEPS = 2 * EPOCHS


class Runs:
    """Config files of the runs, written into one folder; ``weights(path)`` trains one in
    this process (once) and gives its final weights."""

    def __init__(self, root: Path, images: Path):
        self.root, self.images, self.trained = root, images, {}

    def config(self, method: str, batch: int, steps: int, name: str | None = None) -> Path:
        train, sam = METHODS[method]
        name = name or f"{method}_{batch}x{steps}"
        path = self.root / f"{name}.yaml"
        path.write_text(_tiny_cls_yaml(
            self.images, self.root / "out", NAME=name, AMP="none", DEVICE="cpu",
            MODEL={"NAME": "timm/test_efficientnet_gn", "NUM_CLASSES": 2},
            DATASET={"AUGMENT": "none", "IMAGE_SIZE": IMAGE_SIZE},
            TRAIN={**train, "END_EPOCH": EPOCHS, "EVAL_EVERY": EPOCHS, "BATCH_SIZE_PER_GPU": batch,
                   "ACCUMULATE_STEPS": steps},
            SAM=sam))
        return path

    def run_dir(self, path: Path) -> Path:
        return self.root / "out" / "classification" / path.stem

    def weights(self, path: Path) -> dict:
        if path not in self.trained:
            run = Trainer(config.load(path))
            run.fit()
            assert run.global_step == STEPS
            self.trained[path] = final_weights(self.run_dir(path))
        return self.trained[path]


def final_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint_last.pth", weights_only=True)["model"]


def assert_close_weights(got: dict, expected: dict, what: str) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=1e-5, rtol=0, msg=lambda m: f"{what}: {key} differs: {m}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_image_folder):
    return Runs(tmp_path_factory.mktemp("accumulation"), tiny_image_folder)


@pytest.fixture(scope="module")
def two_processes(runs):
    """The four methods trained by 2 gloo processes at 4 images x 4 micro-batches each (one
    torchrun launch): method -> run folder."""
    paths = {m: runs.config(m, batch=4, steps=4) for m in METHODS}
    launch(2, WORKER, list(paths.values()))
    return {m: runs.run_dir(p) for m, p in paths.items()}


@pytest.mark.parametrize("method", list(METHODS))
def test_four_micro_batches_of_8_equal_one_batch_of_32_through_the_trainer(runs, method):
    whole = runs.weights(runs.config(method, batch=32, steps=1))
    accumulated = runs.weights(runs.config(method, batch=8, steps=4))
    assert_close_weights(accumulated, whole, method)


def test_two_processes_accumulating_equal_one_process_on_the_whole_batch(runs, two_processes):
    for method, run_dir in two_processes.items():
        assert "total batch 2 process(es) x 4 x 4 accumulated = 32" in (run_dir / "train.log").read_text()
        assert_close_weights(final_weights(run_dir), runs.weights(runs.config(method, batch=32, steps=1)),
                             f"2 processes, {method}")


def test_sigterm_mid_cycle_under_torchrun_stops_after_the_step_and_resumes_bit_identically(
        runs, two_processes):
    """BSAM, 3 passes per micro-batch: the first epoch's steps take 4 x 3 and 2 x 3 loss
    computations, so call 20 is the second micro-batch of the third step (epoch 1)."""
    path = runs.config("bsam", batch=4, steps=4, name="bsam_interrupted")
    launch(2, WORKER, [path], env={"STOP_RANK": "1", "STOP_LOSS_CALL": "20"}, stopped=True)
    state = torch.load(runs.run_dir(path) / "checkpoint_last.pth", weights_only=True)
    assert (state["epoch"], state["iters_done"], state["global_step"]) == (1, 1, 3)
    launch(2, WORKER, [path, "--resume"])
    got, expected = final_weights(runs.run_dir(path)), final_weights(two_processes["bsam"])
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
