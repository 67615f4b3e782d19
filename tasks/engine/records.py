"""What a run leaves behind for people: a text log, metrics.csv, TensorBoard scalars and
a PNG of the curves (including BSAM's gradient diagnostics, the paper's Figures 2-3)."""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .errors import UserError
from .io import atomic_write, save_figure

DIAGNOSTICS = ("grad_norm", "perturbed_grad_norm", "min_grad_norm", "cos_g0_g2", "rho_min",
               "full_step", "reuse_factor", "held_share")


def make_logger(run_dir: Path | None, name: str = "bsam") -> logging.Logger:
    """Console + ``run_dir/train.log`` (rank 0); the other ranks (``run_dir`` None) log
    errors only, so that every console line of a distributed run appears once."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):  # an earlier run in this process
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    logger.setLevel(logging.INFO if run_dir is not None else logging.ERROR)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    console.addFilter(lambda record: not getattr(record, "file_only", False))
    logger.addHandler(console)
    if run_dir is not None:
        file = _LogFile(_open_log(run_dir / "train.log"))
        file.setFormatter(fmt)
        logger.addHandler(file)
    return logger


class _LogFile(logging.StreamHandler):
    """A handler on an already opened file, which it closes with itself."""

    def close(self) -> None:
        super().close()
        self.stream.close()


def _open_log(path: Path):
    """``path`` opened for appending, never through a symbolic link planted in its place
    (that would write the log wherever the link points)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        hint = "it is a symbolic link; remove it" if path.is_symlink() else "check the run folder"
        raise UserError(f"cannot open {path}: {err.strerror}; {hint}") from None
    return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")


def duration(seconds: float) -> str:
    """``42s``, ``7m05s``, ``3h12m``: short enough for a progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """A sign of life within an epoch: a line at its first iteration, then every ``print_freq``
    iterations and at least every ``interval`` seconds, with the time per iteration and the
    estimated time left in the epoch and in the run (its training iterations; evaluations
    come on top).  ``console=False`` sends the lines to ``train.log`` only, for when a
    progress bar shows them on the console already."""

    def __init__(self, log: logging.Logger, iters_per_epoch: int, end_epoch: int, print_freq: int,
                 interval: float = 30.0, clock: Callable[[], float] = time.perf_counter):
        self.log, self.iters, self.end_epoch = log, iters_per_epoch, end_epoch
        self.print_freq, self.interval, self.clock = print_freq, interval, clock
        self.epoch, self.first, self.last_line = None, 0, 0.0

    def step(self, epoch: int, it: int, started: float, loss: float, lr: float, console: bool = True) -> None:
        """After iteration ``it`` (1-based) of ``epoch``, which started at ``started`` (``clock``)."""
        now = self.clock()
        if epoch != self.epoch:
            self.epoch, self.first = epoch, it - 1  # it - 1 iterations were done before (a resume)
        elif it % self.print_freq and now - self.last_line < self.interval:
            return
        self.last_line = now
        per_iter = (now - started) / max(it - self.first, 1)
        left_epoch = (self.iters - it) * per_iter
        left_run = left_epoch + max(self.end_epoch - epoch - 1, 0) * self.iters * per_iter
        self.log.info(f"epoch {epoch} it {it}/{self.iters} loss {loss:.4f} lr {lr:.4g} | {per_iter:.2f} s/it, "
                      f"epoch ETA {duration(left_epoch)}, run ETA {duration(left_run)}",
                      extra={"file_only": not console})


class DiagnosticsMeter:
    """Per-epoch means of the optimizer's diagnostics, each over the steps that reported it
    (with ``SAM.INTERVAL`` > 1 only full steps report the perturbed norms; ``full_step``'s
    mean is the fraction of full steps), and the fraction of steps whose cos(g0, g2) < 0
    ("gradient conflict")."""

    def __init__(self, state: dict | None = None):
        """``state``: what :meth:`state` returned (a checkpoint taken in mid-epoch)."""
        state = state or {}
        self.sums: dict[str, float] = dict(state.get("sums", {}))
        self.count = int(state.get("count", 0))
        self.conflicts = int(state.get("conflicts", 0))
        self.counts: dict[str, int] = dict(state.get("counts", {k: self.count for k in self.sums}))

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count, "conflicts": self.conflicts,
                "counts": dict(self.counts)}

    def add(self, stats: dict) -> None:
        if not stats or "cos_g0_g2" not in stats and "grad_norm" not in stats:
            return
        self.count += 1
        for key in DIAGNOSTICS:
            if key in stats:
                self.counts[key] = self.counts.get(key, 0) + 1
                if math.isfinite(stats[key]):
                    self.sums[key] = self.sums.get(key, 0.0) + stats[key]
        self.conflicts += stats.get("cos_g0_g2", 1.0) < 0

    def summary(self) -> dict:
        if not self.count:
            return {}
        out = {k: v / self.counts.get(k, self.count) for k, v in self.sums.items()}
        if "cos_g0_g2" in self.sums:
            out["conflict_frac"] = self.conflicts / self.counts.get("cos_g0_g2", self.count)
        return out


def epoch_line(epoch: int, row: dict, detail_metrics: tuple = ()) -> str:
    """The console's line for one epoch; NaN/inf are shown (as nan/inf), never dropped:
    a diverging run must be visible."""
    shown = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                     if k != "epoch" and isinstance(v, float)
                     and not k.removeprefix("val_").startswith(detail_metrics))
    return f"epoch {epoch}: {shown}"


PICTURES = (".png", ".jpg")


def outputs_line(run_dir: Path) -> str:
    """Where a run's outputs are, its pictures named (those of the run folder and of its
    sub-folders, e.g. pose_pictures/), so that nobody has to look for them."""
    run_dir = Path(run_dir)
    entries = sorted(run_dir.iterdir())
    pictures = [p.name for p in entries if p.suffix in PICTURES]
    for folder in (p for p in entries if p.is_dir() and p.name != "eval"):
        count = sum(1 for q in folder.iterdir() if q.suffix in PICTURES)
        if count:
            pictures.append(f"{folder.name}/ ({count} pictures)")
    shown = f"; pictures: {', '.join(pictures)}" if pictures else ""
    return f"outputs in {run_dir}/: train.log, metrics.csv, checkpoints, results.json{shown}"


def write_metrics_csv(history: list[dict], path: Path) -> None:
    """Rewrite the whole table (atomically) so a resumed run never duplicates rows."""
    columns = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def plot_curves(history: list[dict], path: Path, main_metric: str) -> None:
    import matplotlib.pyplot as plt

    fig = curves_figure(history, main_metric)
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def curves_figure(history: list[dict], main_metric: str):
    """Loss, evaluation metric, LR / rho_min and the gradient diagnostics per epoch; a
    panel appears only when its columns were logged (SGD has no diagnostics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("loss", ["train_loss"]),
        (main_metric, [f"val_{main_metric}"]),
        ("learning rate / rho_min", ["lr", "rho_min"]),
        ("gradient norms", ["grad_norm", "perturbed_grad_norm", "min_grad_norm"]),
        ("cos(g0, g2) / conflict fraction", ["cos_g0_g2", "conflict_frac"]),
    ]
    panels = [(t, [c for c in cols if any(c in row for row in history)]) for t, cols in panels]
    panels = [(t, cols) for t, cols in panels if cols]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, cols) in zip(axes[0], panels):
        for col in cols:
            points = [(row["epoch"], row[col]) for row in history if col in row]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=col)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(cols) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


class TensorBoard:
    """Scalars to TensorBoard when it is installed; silently nothing otherwise."""

    def __init__(self, run_dir: Path | None):
        self.writer = None
        if run_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
