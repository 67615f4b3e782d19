"""TASK: qat — classification under ``quant/``: float weights -> prepare -> calibrate -> train -> export.

Data, models, loss and metrics are classification's; this task only adds the ``QUANT``
section:

* ``W_BITS`` (2..8), ``A_BITS`` (2..8, 0 = float activations), ``FIRST_LAST_BITS``
  (2..8 for the first and last layer, 0 = keep them float), ``PER_CHANNEL`` weight scales
  (default: BN is folded into the weights, whose channels then differ in range),
  ``SKIP`` (module names kept float);
* every convolution followed by a BatchNorm becomes one folded conv-BN layer: evaluation
  and export compute the folded integer arithmetic; training normalises with batch
  statistics as the float model did, unless ``FREEZE_BN`` (then it trains the folded
  arithmetic on the frozen running statistics);
* ``CALIB_BATCHES``: training batches that set the activation step sizes before training;
* ``PERTURB_STEP_SIZES``: let SAM/BSAM perturb the step sizes too (default: only the latent
  float weights are perturbed; the step sizes sit in their own param group with
  rho = rho_min = 0, and without weight decay, which would shrink them towards 0);
* ``EXPORT``: write ``model.onnx`` into the run folder after the last epoch, checked with
  onnxruntime (its optimised, integer-kernel run) on ``EXPORT_CHECK_IMAGES`` test images, of
  which at least ``EXPORT_MIN_AGREEMENT`` must get PyTorch's class (evaluation computes the
  integer kernels' arithmetic, so a lower agreement is a bug, not rounding); a failed export
  fails the run (results.json says why, exit status 2) and keeps its checkpoints; ``EXPORT_FORMAT``:
  ``int8`` (weights stored as int8: integer kernels, fast) or ``int4`` (<= 4-bit weights
  packed two per byte: smallest file, float kernels; needs ``OPSET`` >= 21).

``MODEL.PRETRAINED`` is the float checkpoint to start from (e.g. a classification run's
``model_best.pth``).  Evaluation reports top-1/top-5 of the quantized model.  A trained
checkpoint is refused with a config whose bit widths differ from the ones it was trained at
(its quantizers store them), naming the keys: evaluate and export with the run's config.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from quant import calibrate, plan_quantization, prepare_qat, step_size_parameters
from quant.export import ExportParityError, ExportWriteError
from quant.weight_format import INT4_MIN_OPSET, WEIGHT_FORMATS
from tasks.classification.task import ClassificationTask, holds_quantizers
from tasks.engine.errors import UserError
from tasks.engine.schema import Key
from tasks.engine.task import register

from tasks.classification.export import ExportSettings, export_classifier
from tasks.qat.bits import bit_differences, describe

log = logging.getLogger("bsam.qat")  # a child of the trainer's logger: lands in train.log


def _bits_or_float(v) -> bool:
    return v == 0 or 2 <= v <= 8


@register("qat")
class QatTask(ClassificationTask):
    schema = {
        "MODEL": {"NAME": "cifar_resnet20"},
        "QUANT": {
            "W_BITS": Key(4, ge=2, le=8),
            "A_BITS": Key(4, check=(_bits_or_float, "an integer from 2 to 8, or 0 for float activations")),
            "FIRST_LAST_BITS": Key(8, check=(_bits_or_float, "an integer from 2 to 8, or 0 to keep the first "
                                                            "and last layer float")),
            "PER_CHANNEL": Key(True),
            "FREEZE_BN": Key(False),
            "SKIP": Key([], type=list[str]),  # module names kept float
            "CALIB_BATCHES": Key(4, ge=1),
            "PERTURB_STEP_SIZES": Key(False),
            "EXPORT": Key(False),
            "EXPORT_FORMAT": Key("int8", choices=WEIGHT_FORMATS),
            "OPSET": Key(21, ge=13, le=23, hint="21+ packs int4 weights"),
            "EXPORT_CHECK_IMAGES": Key(512, ge=1),
            "EXPORT_MIN_AGREEMENT": Key(0.999, ge=0.0, le=1.0, run_only=True,
                                        hint="the top-1 agreement with PyTorch the export needs"),
        },
    }

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.QUANT.EXPORT_FORMAT == "int4" and cfg.QUANT.OPSET < INT4_MIN_OPSET:
            raise UserError(f"QUANT.EXPORT_FORMAT: int4 needs QUANT.OPSET >= {INT4_MIN_OPSET} "
                            f"(got {cfg.QUANT.OPSET}); raise the opset or use int8")

    # -- building -------------------------------------------------------------------------
    def build_model(self, pretrained: bool = True) -> nn.Module:
        """The float classifier (MODEL.PRETRAINED loaded if ``pretrained``), converted by prepare_qat."""
        return self.quantize(super().build_model(pretrained))

    def bits_policy(self) -> dict:
        """The QUANT keys as the arguments of plan_quantization / prepare_qat."""
        q = self.cfg.QUANT
        return dict(w_bits=q.W_BITS, a_bits=q.A_BITS or None, first_last_bits=q.FIRST_LAST_BITS or None,
                    per_channel=q.PER_CHANNEL, skip=q.SKIP)

    def quantize(self, float_model: nn.Module, summary=log.info) -> nn.Module:
        try:
            return prepare_qat(float_model, **self.bits_policy(), log=summary, freeze_bn=self.cfg.QUANT.FREEZE_BN)
        except ValueError as err:
            raise UserError(f"QUANT: {err}") from None

    def setup(self, model: nn.Module, train_loader, device: torch.device) -> None:
        """Calibrate the activation step sizes on the first CALIB_BATCHES training batches."""
        if not self.cfg.MODEL.PRETRAINED:
            log.warning("QAT starts from a randomly initialised model: set MODEL.PRETRAINED to a "
                        "float checkpoint (e.g. a classification run's model_best.pth)")
        used = calibrate(model, train_loader, self.cfg.QUANT.CALIB_BATCHES, device)
        log.info("calibrated activation step sizes on %d training batches", used)

    def param_groups(self, model: nn.Module):
        """Classification's groups without the step sizes, then one group of step sizes:
        rho = rho_min = 0 (not perturbed) unless QUANT.PERTURB_STEP_SIZES, no weight decay.
        It comes last so that group 0 still carries the schedule's base LR and rho_min."""
        steps = [p for p in step_size_parameters(model) if p.requires_grad]
        step_ids = {id(p) for p in steps}
        groups = super().param_groups(model)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": list(groups)}]
        out = []
        for group in groups:
            params = [p for p in group["params"] if id(p) not in step_ids]
            if params:
                out.append({**group, "params": params})
        step_group = {"params": steps, "weight_decay": 0.0, "name": "step_sizes", "lr_mult": 1.0}
        if not self.cfg.QUANT.PERTURB_STEP_SIZES:
            step_group.update(rho=0.0, rho_min=0.0, rho_min_end=None)
        if steps:
            out.append(step_group)
        return out

    def check_trained_weights(self, state: dict, path) -> None:
        if not holds_quantizers(state):
            raise UserError(f"checkpoint {path} has no quantizer step sizes: it is a float model; "
                            f"fine-tune it with this qat config first (tools/train.py, MODEL.PRETRAINED) "
                            f"or use the classification config it was trained with")
        float_model = super().build_model(pretrained=False)
        model = self.quantize(float_model, summary=None)  # a config error is reported here
        differ = bit_differences(model, plan_quantization(float_model, **self.bits_policy()), state)
        if differ:
            raise UserError(f"checkpoint {path} was trained at other bit widths: {describe(differ)}; use the "
                            f"config it was trained with (its run folder's config.yaml) or drop those --opts")

    @classmethod
    def export_settings(cls, cfg) -> ExportSettings:
        """The export's opset, weight format and checks, from the QUANT section."""
        q = cfg.QUANT
        return ExportSettings(opset=q.OPSET, weight_format=q.EXPORT_FORMAT, check_images=q.EXPORT_CHECK_IMAGES,
                              min_agreement=q.EXPORT_MIN_AGREEMENT)

    # -- evaluation -----------------------------------------------------------------------
    def on_fit_end(self, model: nn.Module, val_loader, out_dir: Path) -> dict:
        """With QUANT.EXPORT, write out_dir/model.onnx once, after the last epoch.  A model
        that cannot be exported fails the run: the point of QAT is the deployed file."""
        if not self.cfg.QUANT.EXPORT:
            return {}
        path = Path(out_dir) / "model.onnx"
        device_type = next(model.parameters()).device.type
        try:
            with torch.autocast(device_type, enabled=False):
                report = export_classifier(model, self.cfg, val_loader.dataset, path)
        except (ExportParityError, ExportWriteError, ValueError) as err:
            raise UserError(f"ONNX export failed: {err}. The trained checkpoints are kept in {out_dir}; to "
                            f"export anyway: python tools/export.py --cfg {Path(out_dir) / 'config.yaml'} "
                            f"--checkpoint {Path(out_dir) / 'checkpoint_last.pth'} --out <file.onnx>"
                            + (" --min-agreement <fraction>" if isinstance(err, ExportParityError) else "")) from None
        log.info("exported %s (%.2f MB, %s weights; onnxruntime: %s, top-1 agreement %.4f, max logit "
                 "difference %.3g on %d test images)", path, report.bytes / 1e6, report.weight_format,
                 report.integer_kernels or "no integer kernels", report.top1_agreement, report.max_abs_diff,
                 report.checked_inputs)
        return {"onnx_exported": 1.0, "onnx_top1_agreement": report.top1_agreement,
                "onnx_max_logit_diff": report.max_abs_diff, "onnx_mbytes": report.bytes / 1e6,
                "onnx_integer_kernels": report.integer_kernels}
