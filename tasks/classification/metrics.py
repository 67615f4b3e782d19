"""Classification metrics, all in percent (0-100), and the confusion-matrix picture.

Percentages because that is how CIFAR/ImageNet results are quoted (torchvision's and
timm's references print Acc@1 in %), so the numbers in logs and results.json can be
compared with papers directly.  ``evaluate`` returns:

* ``top1``, ``top5``: accuracy of the best / five best scores (top5 is top-K when there
  are K < 5 classes, i.e. 100);
* ``mean_class_acc``: the mean of the per-class accuracies (balanced accuracy);
* ``acc_<class>``: accuracy on each class that has test samples (name made identifier-safe);
* ``loss``: mean cross-entropy without label smoothing.
"""
from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F


class ClassificationMeter:
    """Accumulates a confusion matrix, top-5 hits and the loss over batches (on the device).

    The loss is kept as one sum per batch and added up in batch order at the end, so that
    meters of consecutive shards of the val set, :meth:`merged` in order, give exactly the
    numbers of one meter over the whole set (distributed evaluation)."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self.top5_hits = torch.zeros((), dtype=torch.long, device=device)
        self.loss_sums: list[torch.Tensor] = []
        self.count = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.float()
        k = self.num_classes
        pred = logits.argmax(1)
        self.matrix += torch.bincount(labels * k + pred, minlength=k * k).view(k, k)
        top = logits.topk(min(5, k), dim=1).indices
        self.top5_hits += (top == labels[:, None]).any(1).sum()
        self.loss_sums.append(F.cross_entropy(logits, labels, reduction="sum").double())
        self.count += int(labels.numel())

    def state(self) -> dict:
        """The counts as CPU tensors and ints, for gathering from other ranks."""
        losses = torch.stack(self.loss_sums).cpu() if self.loss_sums else torch.zeros(0, dtype=torch.float64)
        return {"matrix": self.matrix.cpu(), "top5_hits": int(self.top5_hits), "loss_sums": losses,
                "count": self.count}

    @classmethod
    def merged(cls, states: list[dict]) -> "ClassificationMeter":
        """One (CPU) meter over shards given in val-set order."""
        meter = cls(states[0]["matrix"].shape[0])
        for state in states:
            meter.matrix += state["matrix"]
            meter.top5_hits += state["top5_hits"]
            meter.loss_sums += list(state["loss_sums"])
            meter.count += state["count"]
        return meter

    def confusion(self) -> np.ndarray:
        """``[true class, predicted class]`` counts."""
        return self.matrix.cpu().numpy()

    def summary(self, class_names: list[str] | None = None) -> dict[str, float]:
        m = self.confusion()
        total = max(self.count, 1)
        per_class = m.diagonal() / np.maximum(m.sum(1), 1)
        present = m.sum(1) > 0
        names = class_names or [str(i) for i in range(self.num_classes)]
        out = {
            "top1": 100.0 * float(m.trace()) / total,
            "top5": 100.0 * float(self.top5_hits) / total,
            "mean_class_acc": 100.0 * float(per_class[present].mean()) if present.any() else 0.0,
            "loss": sum(float(s) for s in self.loss_sums) / total,
        }
        for i in np.flatnonzero(present):
            out[f"acc_{safe_name(names[i])}"] = 100.0 * float(per_class[i])
        return out


def safe_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", str(name)).strip("_") or "class"


def confusion_figure(matrix: np.ndarray, class_names: list[str]):
    """A matplotlib Figure of the row-normalised confusion matrix (counts written if few classes).

    Built on ``matplotlib.figure.Figure`` directly (Agg canvas), so it needs no display
    and does not touch pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(class_names)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    side = min(4 + 0.45 * k, 30)
    fig = Figure(figsize=(side, side * 0.9))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 30:
        ax.set_xticks(range(k), labels=class_names, rotation=90)
        ax.set_yticks(range(k), labels=class_names)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    color = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=color, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix (top-1 {100.0 * matrix.trace() / max(matrix.sum(), 1):.2f}%)")
    fig.tight_layout()
    return fig
