"""The contract between the shared trainer and a task, and the registry keyed by ``TASK``.

The trainer knows nothing about images, heatmaps or quantizers: it only calls the methods
below.  A task class registers itself with ``@register("name")``; :data:`TASK_MODULES` says
which package holds each built-in name, and :func:`get` imports only that one.  A task of
one's own lives in any importable module that a config lists in ``CUSTOM_IMPORTS``
(:func:`import_modules`), so adding a task touches neither the engine nor the tools.
"""
from __future__ import annotations

import fnmatch
import functools
import importlib
from typing import Any, Callable

import torch
from torch import nn

from .defaults import ENGINE
from .errors import UserError
from .weights import load_strict, read_state_dict
from .schema import Section, merge


class Task:
    """Base class of every task.  Subclasses override the methods that raise."""

    #: Registry name (``TASK`` in the config); set by :func:`register`.
    name: str = ""
    #: The task's config keys, merged over the engine's (``engine.defaults.ENGINE``) and its
    #: base classes': sections of :class:`~tasks.engine.schema.Key` records; a plain value
    #: changes the default of a key declared elsewhere (see :func:`tasks.engine.schema.merge`).
    #: Every key a user may write is declared there or here.
    schema: dict = {}
    #: ``MODEL.NAME`` patterns (``fnmatch``) of this task's models: a config without ``TASK``
    #: whose model matches is read as this task (besides the choices of its ``MODEL.NAME``).
    model_names: tuple[str, ...] = ()
    #: Name of the metric (a key of :meth:`evaluate`'s result) that picks ``model_best.pth``.
    main_metric: str = "top1"
    higher_is_better: bool = True
    #: Metric name prefixes left out of the console's epoch line (they still go to
    #: metrics.csv, TensorBoard and results.json): e.g. 100 per-class accuracies.
    detail_metrics: tuple[str, ...] = ()

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def config_schema(cls) -> Section:
        """Every key a config of this task may hold, with its record."""
        return _schema_of(cls)

    @classmethod
    def claims_model(cls, name: str) -> bool:
        """Whether ``MODEL.NAME: name`` is one of this task's models."""
        declared = cls.config_schema()["MODEL"]["NAME"].choices
        return name in declared or any(fnmatch.fnmatchcase(name, p) for p in cls.model_names)

    # -- building -------------------------------------------------------------------------
    def build_model(self, pretrained: bool = True) -> nn.Module:
        """The model, initialised from ``MODEL.PRETRAINED`` (if set) when ``pretrained``.
        :meth:`load_trained` passes False: a trained checkpoint holds every weight, so the
        file the training started from need not exist where the model is evaluated."""
        raise NotImplementedError

    def build_datasets(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """Return ``(train_set, val_set)``."""
        raise NotImplementedError

    def build_eval_dataset(self) -> torch.utils.data.Dataset:
        """The evaluated split alone (``tools/eval.py``); override to avoid reading the
        training split too."""
        return self.build_datasets()[1]

    def collate_fn(self) -> Callable | None:
        """A custom collate function for both loaders, or ``None`` for PyTorch's default."""
        return None

    def train_collate_fn(self) -> Callable | None:
        """The training loader's collate function (e.g. one that mixes batches); by default
        :meth:`collate_fn`."""
        return self.collate_fn()

    def param_groups(self, model: nn.Module) -> list[dict] | Any:
        """Parameter groups for the optimizer (e.g. a backbone LR multiplier)."""
        return [p for p in model.parameters() if p.requires_grad]

    def setup(self, model: nn.Module, train_loader, device: torch.device) -> None:
        """Hook run once before training, after the model is on ``device`` (e.g. QAT calibration)."""

    # -- training ---------------------------------------------------------------------
    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward one batch (already on the device) and return ``(loss, stats)``.

        ``stats`` holds floats to log (e.g. ``{"acc": 0.7}``); the trainer averages them
        over the epoch weighted by batch size and reduces them across ranks.
        """
        raise NotImplementedError

    def batch_size(self, batch) -> int:
        """Number of samples in ``batch`` (first tensor's leading dimension by default)."""
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        return int(first.shape[0])

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, out_dir) -> dict[str, float]:
        """Evaluate ``model`` (in eval mode, on its device) over ``loader``.

        Returns a flat ``{metric: float}`` including :attr:`main_metric`.  ``out_dir`` is a
        ``pathlib.Path`` where pictures may be written, or ``None`` to write nothing.
        """
        raise NotImplementedError

    # -- trained models (tools/eval.py, export.py, flatness.py) ------------------------------
    def load_trained(self, path) -> nn.Module:
        """The model with every weight from ``path`` (a checkpoint of this task's runs or a
        state_dict), loaded strictly; ``MODEL.PRETRAINED`` is not read."""
        state = read_state_dict(path)
        self.check_trained_weights(state, path)
        model = self.build_model(pretrained=False)
        load_strict(model, state, path)
        return model

    def check_trained_weights(self, state: dict, path) -> None:
        """Refuse the weights of another kind of model with a message that says what they
        are and which config fits them (e.g. a QAT checkpoint given with a float config);
        the strict load that follows catches any other mismatch."""

    def predict_image(self, model: nn.Module, image, boxes: list[list[float]] | None, out_dir) -> dict:
        """Predict on one picture (``tools/eval.py --image``) with ``model`` (eval mode, on its
        device): ``boxes`` are the ``[x, y, w, h]`` regions given with ``--boxes``, or None.
        Writes its pictures/files into ``out_dir`` and returns a JSON-able report."""
        raise self._not_offered("prediction on one picture (--image)")

    def export(self, model: nn.Module, path, images: int | None = None, min_agreement: float | None = None) -> dict:
        """Write ``model`` (eval mode, weights loaded) as a deployable file at ``path`` after
        checking it against PyTorch on ``images`` evaluation inputs (at least ``min_agreement``
        of them agreeing, else the task's own threshold); return the report.
        Raises :class:`UserError` when the file cannot be made or fails its check."""
        raise self._not_offered("export")

    def _not_offered(self, what: str) -> UserError:
        return UserError(f"task {self.name or type(self).__name__} does not offer {what}")

    def on_fit_end(self, model: nn.Module, val_loader, out_dir) -> dict:
        """Hook run once on rank 0 after the last epoch (e.g. export); what it returns is
        added to ``results.json``."""
        return {}


@functools.cache
def _schema_of(cls: type[Task]) -> Section:
    out = ENGINE
    for klass in reversed(cls.__mro__):
        if klass.__dict__.get("schema"):
            out = merge(out, klass.__dict__["schema"])
    return out


_REGISTRY: dict[str, type[Task]] = {}
#: ``TASK`` name -> the package that registers it: the one place a new task is added.  Only
#: the package a run names is imported (pose pulls in pycocotools, OpenCV drawing, ...).
TASK_MODULES = {
    "classification": "tasks.classification",
    "pose": "tasks.pose.task",
    "qat": "tasks.qat",
}


def register(name: str):
    """Class decorator: make a :class:`Task` subclass reachable as ``TASK: name``."""

    def wrap(cls: type[Task]) -> type[Task]:
        home = TASK_MODULES.get(name)
        if home is not None and cls.__module__ != home and not cls.__module__.startswith(home + "."):
            raise UserError(f"{cls.__module__}: TASK name {name!r} is the built-in task of {home}; "
                            f"register {cls.__name__} under another name")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available() -> list[str]:
    """Every task name a config may give (known without importing any task package)."""
    return sorted(set(TASK_MODULES) | set(_REGISTRY))


def import_modules(modules, source: str) -> None:
    """Import the modules a config lists in ``CUSTOM_IMPORTS`` (each registers its tasks);
    one that cannot be imported is an error naming it, never skipped."""
    if not isinstance(modules, list) or not all(isinstance(m, str) and m.strip() for m in modules):
        raise UserError(f"{source}: CUSTOM_IMPORTS: {modules!r} is not a list of module names "
                        "(e.g. [my_project.my_task])")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(f"{source}: CUSTOM_IMPORTS: cannot import {module!r} ({err}); check the "
                            "name and that its folder is on PYTHONPATH") from err


def infer(model_name: str) -> str | None:
    """The task a config without ``TASK`` is read as, from its ``MODEL.NAME``: the default
    task if the model is one of its own, else the first other task that claims it (a task
    package is imported only when the ones before it do not claim the model)."""
    default = ENGINE["TASK"].default
    for name in [default] + [n for n in available() if n != default]:
        if get(name).claims_model(model_name):
            return name
    return None


def get(name: str) -> type[Task]:
    """The task class registered as ``name``, importing its package on first use."""
    if name not in _REGISTRY and name in TASK_MODULES:
        importlib.import_module(TASK_MODULES[name])
    if name not in _REGISTRY:
        raise UserError(f"unknown TASK {name!r}; known tasks: {', '.join(available())}")
    return _REGISTRY[name]
