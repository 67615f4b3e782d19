"""A task of one's own, outside the repository's task packages (tests/tools/test_fourth_task.py).

``ToyTask``, a linear classifier of generated Gaussian blobs, is registered as ``TASK: toy``
when a config lists this module in ``CUSTOM_IMPORTS``.  It lives in its own module, not in
the test, so that the test process's task registry keeps only the built-in tasks.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from tasks.engine.distributed import gather_to_main
from tasks.engine.errors import UserError
from tasks.engine.io import save_json
from tasks.engine.task import Task, register

FEATURES, CLASSES = 4, 3


def blobs(count: int, seed: int) -> TensorDataset:
    """``count`` points around CLASSES well-separated centres, labelled by their centre."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    points = 4.0 * torch.eye(CLASSES, FEATURES)[labels] + torch.randn(count, FEATURES, generator=generator)
    return TensorDataset(points, labels)


@register("toy")
class ToyTask(Task):
    schema = {"DATASET": {"TRAIN_SIZE": 192, "TEST_SIZE": 96}}
    main_metric = "accuracy"

    def build_model(self, pretrained: bool = True) -> nn.Module:
        return nn.Linear(FEATURES, CLASSES)  # this task has no pretrained weights

    def build_datasets(self):
        d = self.cfg.DATASET
        return blobs(d.TRAIN_SIZE, self.cfg.SEED), self.build_eval_dataset()

    def build_eval_dataset(self):
        return blobs(self.cfg.DATASET.TEST_SIZE, self.cfg.SEED + 1)

    def loss(self, model, batch):
        points, labels = batch
        return F.cross_entropy(model(points), labels), {}

    @torch.no_grad()
    def evaluate(self, model, loader, out_dir):
        device = next(model.parameters()).device
        right = sum(int((model(x.to(device)).argmax(1) == y.to(device)).sum()) for x, y in loader)
        shards = gather_to_main((right, len(loader.dataset)))
        return {} if shards is None else {"accuracy": 100.0 * sum(r for r, _ in shards) / shards[0][1]}

    def export(self, model, path, images=None) -> dict:
        """The weights as JSON for a NumPy deployment, written only if NumPy's predictions on
        evaluation points are PyTorch's."""
        points = self.build_eval_dataset().tensors[0][: images or 32]
        weight, bias = model.weight.detach().numpy(), model.bias.detach().numpy()
        agree = float(np.mean((points.numpy() @ weight.T + bias).argmax(1) == model(points).argmax(1).numpy()))
        if agree < 1.0:
            raise UserError(f"the NumPy model agrees with PyTorch on {agree:.0%} of the points only")
        save_json({"weight": weight.tolist(), "bias": bias.tolist()}, path)
        return {"path": str(path), "checked_inputs": len(points), "agreement": agree}
