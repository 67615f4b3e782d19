"""The classification task: CIFAR training from scratch and transfer learning on image folders.

Config keys it adds (``ClassificationTask.schema``; the shared ones are in ``tasks.engine.defaults``):

* ``DATASET.FORMAT`` auto | imagefolder | cifar10 | cifar100, ``DATASET.AUGMENT``
  cifar | transfer | none, ``IMAGE_SIZE``, ``CUTOUT`` (square side, 0 = off),
  ``CROP_SCALE_MIN`` and ``TEST_CROP_RATIO`` (transfer recipe), ``MEAN``/``STD``
  ([] = the statistics of the data set / recipe), ``LABEL_NOISE`` and
  ``LABEL_NOISE_SEED``, ``TRAIN_PER_CLASS`` (a training subset), ``VAL_FROM_TRAIN`` and
  ``VAL_SEED`` (a validation split cut from the training images; see ``data.py``);
* ``MODEL.FREEZE_BACKBONE``: train the classifier only (BatchNorm statistics of the
  frozen backbone still adapt to the new data in training mode);
* ``TRAIN.BACKBONE_LR_MULT``: the backbone learns at LR x this factor;
* ``LOSS.LABEL_SMOOTHING``.

``MODEL.PRETRAINED`` is a torchvision weights name or a weights file (see
``tasks.engine.pretrained``); the classifier is re-initialised when its shape differs.
Metrics are percentages (see ``metrics.py``); ``top1`` picks the best checkpoint.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tasks.engine.defaults import SEED_RANGE
from tasks.engine.distributed import gather_to_main
from tasks.engine.errors import UserError
from tasks.engine.io import save_figure
from tasks.engine.pretrained import load_into, resolve_pretrained
from tasks.engine.schema import Key
from tasks.engine.task import Task, register

from .data import FORMATS, build_image_datasets, build_test_dataset
from .metrics import ClassificationMeter, confusion_figure
from .models import available_models, build_classifier, head_prefix
from .transforms import RECIPES

log = logging.getLogger("bsam.classification")  # a child of the run logger: lands in train.log


_FRACTION = dict(ge=0, lt=1)


@register("classification")
class ClassificationTask(Task):
    schema = {
        "DATASET": {
            "FORMAT": Key("auto", choices=FORMATS),
            "AUGMENT": Key("cifar", choices=RECIPES),
            "IMAGE_SIZE": Key(32, ge=8, le=4096),
            "CUTOUT": Key(0, ge=0, hint="0 = no cutout"),
            "CROP_SCALE_MIN": Key(0.08, gt=0, le=1),
            "TEST_CROP_RATIO": Key(0.875, gt=0, le=1),
            "MEAN": Key([], type=list[float], length=(0, 3), hint="[] = the data set's statistics"),
            "STD": Key([], type=list[float], length=(0, 3), gt=0, hint="[] = the data set's statistics"),
            "LABEL_NOISE": Key(0.0, **_FRACTION),
            "LABEL_NOISE_SEED": Key(0, **SEED_RANGE),
            "TRAIN_PER_CLASS": Key(0, ge=0, hint="0 = every training image"),
            "VAL_FROM_TRAIN": Key(0.0, **_FRACTION, hint="0 = evaluate the test split"),
            "VAL_SEED": Key(0, **SEED_RANGE),
        },
        "MODEL": {
            "NAME": Key("cifar_resnet18", choices=available_models()),
            "NUM_CLASSES": 10,
            "FREEZE_BACKBONE": Key(False),
        },
        "LOSS": {"LABEL_SMOOTHING": Key(0.0, **_FRACTION)},
        "TRAIN": {
            "BACKBONE_LR_MULT": Key(1.0, gt=0, hint="use MODEL.FREEZE_BACKBONE: true to freeze the backbone"),
        },
    }
    main_metric = "top1"
    detail_metrics = ("acc_",)  # per-class accuracies: in metrics.csv, not on the console
    higher_is_better = True

    # -- building -------------------------------------------------------------------------
    def build_model(self, pretrained: bool = True) -> nn.Module:
        m = self.cfg.MODEL
        model = build_classifier(m.NAME, m.NUM_CLASSES)
        head = head_prefix(m.NAME)
        if pretrained and m.PRETRAINED:
            weights = resolve_pretrained(str(self.cfg.resolve_path(m.PRETRAINED)))
            skipped = load_into(
                model, weights, skip_prefixes=(head,), source=f"MODEL.PRETRAINED {m.PRETRAINED}"
            )
            log.info("loaded MODEL.PRETRAINED %s", m.PRETRAINED)
            if skipped:
                log.info("classifier re-initialised (not taken from the weights): %s", ", ".join(skipped))
        if m.FREEZE_BACKBONE:
            if not m.PRETRAINED:
                log.warning("MODEL.FREEZE_BACKBONE without MODEL.PRETRAINED freezes a random backbone")
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith(head))
        return model

    def build_datasets(self):
        return build_image_datasets(self.cfg)

    def build_eval_dataset(self):
        return build_test_dataset(self.cfg)

    def param_groups(self, model: nn.Module):
        """One group, or [head at LR, backbone at LR x BACKBONE_LR_MULT].

        The head comes first so that group 0 carries the schedule's base LR (BSAM reads
        its rho_min schedule per group, relative to each group's starting LR).  Each group
        also carries ``lr_mult`` for schedulers that set absolute LRs.
        """
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        mult = float(self.cfg.TRAIN.BACKBONE_LR_MULT)
        if mult == 1.0:
            return [p for _, p in trainable]
        head = head_prefix(self.cfg.MODEL.NAME)
        groups = [{"params": [p for n, p in trainable if n.startswith(head)], "lr_mult": 1.0, "name": "head"}]
        backbone = [p for n, p in trainable if not n.startswith(head)]
        if backbone:
            groups.append(
                {"params": backbone, "lr": self.cfg.TRAIN.LR * mult, "lr_mult": mult, "name": "backbone"}
            )
        return groups

    # -- training -------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch):
        images, labels = batch
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.LOSS.LABEL_SMOOTHING)
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean().item() * 100.0
        return loss, {"acc": acc}

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, out_dir) -> dict[str, float]:
        """top1/top5/mean_class_acc/acc_<class> in percent, loss; confusion_matrix.png in out_dir.

        Distributed, each rank meters its shard of the val set and rank 0 scores the merged
        counts; the other ranks return ``{}``."""
        device = next(model.parameters()).device
        meter = ClassificationMeter(self.cfg.MODEL.NUM_CLASSES, device)
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            meter.update(model(images), labels)
        shards = gather_to_main(meter.state())
        if shards is None:
            return {}
        meter = ClassificationMeter.merged(shards)
        names = class_names(loader.dataset, self.cfg.MODEL.NUM_CLASSES)
        if out_dir is not None:
            save_figure(confusion_figure(meter.confusion(), names), Path(out_dir) / "confusion_matrix.png", dpi=100)
        return meter.summary(names)

    # -- trained models -------------------------------------------------------------------
    def check_trained_weights(self, state: dict, path) -> None:
        if holds_quantizers(state):
            raise UserError(f"checkpoint {path} is a QAT checkpoint: use the qat config it was "
                            f"trained with (TASK: qat)")

    def export(self, model: nn.Module, path, images: int | None = None) -> dict:
        """ONNX of the classifier (integer kernels for a QAT model), checked on test images."""
        from tasks.engine.exporting import checked_export

        from .export import export_classifier

        _, val_set = self.build_datasets()
        return checked_export(export_classifier, model, self.cfg, val_set, path, images=images)


def holds_quantizers(state: dict) -> bool:
    """Whether a state_dict holds LSQ step sizes (``quant``'s ``*_quantizer.*`` keys)."""
    return any("_quantizer." in key for key in state)


def class_names(dataset, num_classes: int) -> list[str]:
    """The dataset's ``classes`` (looking through Subset wrappers), else "0", "1", ..."""
    while dataset is not None:
        names = getattr(dataset, "classes", None)
        if names is not None and len(names) == num_classes:
            return [str(c) for c in names]
        dataset = getattr(dataset, "dataset", None)
    return [str(i) for i in range(num_classes)]
