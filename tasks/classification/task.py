"""The classification task: CIFAR training from scratch and transfer learning on image folders.

Config keys it adds (``ClassificationTask.schema``; the shared ones are in ``tasks.engine.defaults``):

* ``DATASET.FORMAT`` auto | imagefolder | cifar10 | cifar100, ``DATASET.AUGMENT``
  cifar | transfer | none, ``IMAGE_SIZE`` (0 = the model's), ``CUTOUT`` (square side, 0 = off),
  ``CROP_SCALE_MIN`` and ``TEST_CROP_RATIO`` (transfer recipe), ``MEAN``/``STD``
  ([] = the model's or the statistics of the data set / recipe), ``INTERPOLATION``
  (see ``input_config.py``), ``LABEL_NOISE`` and ``LABEL_NOISE_SEED``, ``TRAIN_PER_CLASS``
  (a training subset), ``VAL_FROM_TRAIN`` and ``VAL_SEED`` (a validation split cut from the
  training images; see ``data.py``);
* ``DATASET.AUTO_AUGMENT`` none | randaugment | trivialaugment | autoaugment with
  ``AUTO_AUGMENT_MAGNITUDE``, ``RANDOM_ERASE`` (see ``transforms.py``), ``MIXUP_ALPHA`` and
  ``CUTMIX_ALPHA`` (see ``mixing.py``; the training accuracy is then ``train_acc_mixed``,
  agreement with the mixed targets' larger part);
* ``MODEL.FREEZE_BACKBONE``: train the classifier only (BatchNorm statistics of the
  frozen backbone still adapt to the new data in training mode);
* ``TRAIN.BACKBONE_LR_MULT``, ``LAYER_DECAY``, ``NO_WD_NORM_BIAS`` (see ``param_groups.py``);
* ``LOSS.LABEL_SMOOTHING``.

``MODEL.NAME`` is one of the zoo's names or ``timm/<name>`` (any timm architecture).
``MODEL.PRETRAINED`` is a torchvision weights name, a weights file (torch or safetensors;
see ``tasks.engine.weights``), or ``timm`` for a timm model's pretrained tag from the
local Hugging Face cache; the classifier is re-initialised when its shape differs.
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
from tasks.engine.weights import load_lenient, read_pretrained
from tasks.engine.schema import Key
from tasks.engine.task import Task, register

from .data import FORMATS, build_image_datasets, build_test_dataset
from .input_config import INTERPOLATIONS
from .metrics import ClassificationMeter, confusion_figure
from .mixing import MixingCollate, batch_mixer
from .models import MODEL_NAMES_HELP, available_models, build_classifier, head_prefix, is_model_name, is_timm
from .models.timm_backbones import cached_weights
from .param_groups import build_param_groups
from .transforms import AUTO_AUGMENT, RECIPES

log = logging.getLogger("bsam.classification")  # a child of the run logger: lands in train.log


_FRACTION = dict(ge=0, lt=1)


@register("classification")
class ClassificationTask(Task):
    schema = {
        "DATASET": {
            "FORMAT": Key("auto", choices=FORMATS),
            "AUGMENT": Key("cifar", choices=RECIPES),
            "IMAGE_SIZE": Key(0, check=(lambda v: v == 0 or 8 <= v <= 4096,
                                        "0 (the timm model's input size, else 32) or an integer from 8 to 4096")),
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
            "INTERPOLATION": Key("auto", choices=INTERPOLATIONS),  # auto: the timm model's, else bilinear
            "AUTO_AUGMENT": Key("none", choices=AUTO_AUGMENT),
            "AUTO_AUGMENT_MAGNITUDE": Key(9, ge=0, le=30, hint="RandAugment's magnitude"),
            "RANDOM_ERASE": Key(0.0, ge=0, le=1, hint="probability; 0 = off"),
            "MIXUP_ALPHA": Key(0.0, ge=0, hint="0 = no mixup"),
            "CUTMIX_ALPHA": Key(0.0, ge=0, hint="0 = no cutmix"),
        },
        "MODEL": {
            "NAME": Key("cifar_resnet18", check=(is_model_name, MODEL_NAMES_HELP)),
            "NUM_CLASSES": 10,
            "FREEZE_BACKBONE": Key(False),
        },
        "LOSS": {"LABEL_SMOOTHING": Key(0.0, **_FRACTION)},
        "TRAIN": {
            "BACKBONE_LR_MULT": Key(1.0, gt=0, hint="use MODEL.FREEZE_BACKBONE: true to freeze the backbone"),
            "LAYER_DECAY": Key(1.0, gt=0, le=1, hint="1 = no layer-wise LR decay"),
            "NO_WD_NORM_BIAS": Key(False),
        },
    }
    model_names = (*available_models(), "timm/*")
    main_metric = "top1"
    detail_metrics = ("acc_",)  # per-class accuracies: in metrics.csv, not on the console
    higher_is_better = True

    # -- building -------------------------------------------------------------------------
    def build_model(self, pretrained: bool = True) -> nn.Module:
        m = self.cfg.MODEL
        model = build_classifier(m.NAME, m.NUM_CLASSES)
        head = head_prefix(m.NAME)
        if pretrained and m.PRETRAINED:
            if is_timm(m.NAME) and m.PRETRAINED == "timm":  # its pretrained tag, from the HF cache
                weights = read_pretrained(str(cached_weights(m.NAME)))
            else:
                weights = read_pretrained(str(self.cfg.resolve_path(m.PRETRAINED)))
            skipped = load_lenient(
                model, weights, skip_prefixes=head, source=f"MODEL.PRETRAINED {m.PRETRAINED}"
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
        """One group, or groups by head/backbone LR, layer and weight decay (head first, so
        that group 0 carries the schedule's base LR); see ``param_groups.py``."""
        return build_param_groups(model, self.cfg, head_prefix(self.cfg.MODEL.NAME))

    def train_collate_fn(self):
        """Mixup / CutMix of whole training batches when their alphas are > 0."""
        d = self.cfg.DATASET
        mixer = batch_mixer(d.MIXUP_ALPHA, d.CUTMIX_ALPHA, self.cfg.MODEL.NUM_CLASSES)
        return MixingCollate(mixer) if mixer is not None else self.collate_fn()

    # -- training -------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch):
        """Cross-entropy of class labels, or of class probabilities (mixed batches: their
        accuracy ``acc_mixed`` is agreement with each target's largest class)."""
        images, labels = batch
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.LOSS.LABEL_SMOOTHING)
        mixed = labels.dim() == 2
        with torch.no_grad():
            hard = labels.argmax(1) if mixed else labels
            acc = (logits.argmax(1) == hard).float().mean().item() * 100.0
        return loss, {"acc_mixed" if mixed else "acc": acc}

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

    @classmethod
    def export_settings(cls, cfg):
        """How ``cfg``'s classifier is exported (``export.py``): the defaults for a float one."""
        from .export import ExportSettings

        return ExportSettings()

    def export(self, model: nn.Module, path, images: int | None = None, min_agreement: float | None = None) -> dict:
        """ONNX of the classifier (integer kernels for a QAT model), checked on test images."""
        from tasks.engine.exporting import checked_export

        from .export import export_classifier

        _, val_set = self.build_datasets()
        return checked_export(export_classifier, model, self.cfg, val_set, path, images=images,
                              agreement=min_agreement)


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
