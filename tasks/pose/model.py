"""The pose networks by ``MODEL.NAME``: SimpleBaseline (here) and HRNet (:mod:`.hrnet`).

SimpleBaseline (Xiao et al., 2018): ResNet backbone + deconvolutions + 1x1 heatmap head.

The backbone is torchvision's ResNet, kept as ``model.backbone`` with torchvision's key
names (``backbone.layer1.0.conv1.weight`` ...), so ImageNet weights and classification
checkpoints load into it directly; its pooling and ``fc`` are dropped because the head
works on the stride-32 feature map.  The reference's own checkpoints (the published
``pose_resnet_50_256x192.pth.tar`` ...) name the ResNet layers at the top level
(``conv1.weight``, ``layer1.0...``); they load too (see :func:`from_reference_layout`).
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from tasks.engine.errors import UserError

from .hrnet import PoseHRNet, build_pose_hrnet, init_heatmap_layers
from .hrnet_weights import check_layers

#: depth -> untrained torchvision ResNet; 10 is ResNet-18 with one basic block per stage (no
#: published weights: for small from-scratch runs such as the demo)
RESNETS = {
    10: lambda: torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1]),
    18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50,
    101: torchvision.models.resnet101, 152: torchvision.models.resnet152,
}
BACKBONE_STRIDE = 32
HEAD_PREFIXES = ("deconv_layers.", "final_layer.")


def from_reference_layout(state: dict, prefix: str = "") -> dict:
    """``state`` with SimpleBaseline's top-level ResNet keys (``layer1.0.conv1.weight``)
    moved under ``backbone.``; a state_dict already in this layout is returned as it is."""
    keys = [k[len(prefix):] for k in state if k.startswith(prefix)]
    if any(k.startswith("backbone.") for k in keys) or not any(k.startswith("layer1.") for k in keys):
        return state

    def renamed(key: str) -> str:
        local = key[len(prefix):]
        if not key.startswith(prefix) or local.startswith(HEAD_PREFIXES):
            return key
        return f"{prefix}backbone.{local}"

    return {renamed(k): v for k, v in state.items()}


def _deconv_padding(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 transposed conv exactly double the size."""
    if kernel == 4:
        return 1, 0
    if kernel == 3:
        return 1, 1
    if kernel == 2:
        return 0, 0
    raise UserError(f"MODEL.EXTRA.NUM_DECONV_KERNELS: kernel {kernel} is not supported; use 2, 3 or 4")


class PoseResNet(nn.Module):
    def __init__(self, num_layers: int = 50, num_joints: int = 17, deconv_filters=(256, 256, 256),
                 deconv_kernels=(4, 4, 4), deconv_with_bias: bool = False, final_kernel: int = 1):
        super().__init__()
        if num_layers not in RESNETS:
            raise UserError(f"MODEL.EXTRA.NUM_LAYERS: {num_layers} is not a ResNet depth; use one of {sorted(RESNETS)}")
        if len(deconv_filters) != len(deconv_kernels):
            raise UserError("MODEL.EXTRA.NUM_DECONV_FILTERS and NUM_DECONV_KERNELS must have one entry per deconv layer")
        if final_kernel not in (1, 3):
            raise UserError(f"MODEL.EXTRA.FINAL_CONV_KERNEL: {final_kernel} is not supported; use 1 or 3")
        backbone = RESNETS[num_layers]()  # weights=None: untrained
        in_channels = backbone.fc.in_features
        backbone.avgpool, backbone.fc = nn.Identity(), nn.Identity()
        self.backbone = backbone
        layers = []
        for filters, kernel in zip(deconv_filters, deconv_kernels):
            padding, output_padding = _deconv_padding(kernel)
            layers += [
                nn.ConvTranspose2d(in_channels, filters, kernel, stride=2, padding=padding,
                                   output_padding=output_padding, bias=deconv_with_bias),
                nn.BatchNorm2d(filters),
                nn.ReLU(inplace=True),
            ]
            in_channels = filters
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(in_channels, num_joints, final_kernel, padding=final_kernel // 2)
        self.output_stride = BACKBONE_STRIDE // 2 ** len(deconv_filters)
        self.init_head()
        self.register_load_state_dict_pre_hook(_accept_reference_layout)

    def init_head(self) -> None:
        """The paper's head initialisation: N(0, 0.001) weights, zero biases, BN at identity."""
        init_heatmap_layers(list(self.deconv_layers.modules()) + [self.final_layer])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.deconv_layers(self.features(x)))


def _accept_reference_layout(module, state_dict, prefix, *_):
    """load_state_dict pre-hook: a reference checkpoint loads strictly like one of ours."""
    renamed = from_reference_layout(state_dict, prefix)
    if renamed is not state_dict:
        state_dict.clear()
        state_dict.update(renamed)


def build_pose_resnet(cfg, heatmap_size=None) -> PoseResNet:
    """The model that ``MODEL`` describes; the input/heatmap sizes must agree with its stride.

    ``heatmap_size`` overrides ``MODEL.HEATMAP_SIZE`` (older files keep it under EXTRA)."""
    m, extra = cfg.MODEL, cfg.MODEL.EXTRA
    filters, kernels = extra.NUM_DECONV_FILTERS, extra.NUM_DECONV_KERNELS
    if not len(filters) == len(kernels) == extra.NUM_DECONV_LAYERS:
        raise UserError(f"MODEL.EXTRA: NUM_DECONV_LAYERS is {extra.NUM_DECONV_LAYERS} but NUM_DECONV_FILTERS "
                        f"has {len(filters)} and NUM_DECONV_KERNELS {len(kernels)} entries; give one per layer")
    model = PoseResNet(
        num_layers=extra.NUM_LAYERS, num_joints=m.NUM_JOINTS, deconv_filters=list(filters),
        deconv_kernels=list(kernels), deconv_with_bias=extra.DECONV_WITH_BIAS,
        final_kernel=extra.FINAL_CONV_KERNEL,
    )
    (w, h), (hw, hh) = m.IMAGE_SIZE, heatmap_size or m.HEATMAP_SIZE
    stride = model.output_stride
    if w % BACKBONE_STRIDE or h % BACKBONE_STRIDE or (w // stride, h // stride) != (hw, hh):
        raise UserError(
            f"MODEL.IMAGE_SIZE {list(m.IMAGE_SIZE)} and MODEL.HEATMAP_SIZE {[hw, hh]} do not fit "
            f"the network: sizes must be multiples of {BACKBONE_STRIDE} and the heatmap 1/{stride} of "
            f"the input with {len(model.deconv_layers) // 3} deconv layers (e.g. [{w}, {h}] -> "
            f"[{w // stride}, {h // stride}])")
    return model


def build_hrnet(cfg, heatmap_size=None) -> PoseHRNet:
    """HRNet from ``MODEL.EXTRA``; its heatmaps are 1/4 of the input."""
    m = cfg.MODEL
    check_layers(m.EXTRA.PRETRAINED_LAYERS)
    model = build_pose_hrnet(m.EXTRA, m.NUM_JOINTS)
    (w, h), (hw, hh) = m.IMAGE_SIZE, heatmap_size or m.HEATMAP_SIZE
    stride = model.output_stride
    if w % stride or h % stride or (w // stride, h // stride) != (hw, hh):
        raise UserError(
            f"MODEL.IMAGE_SIZE {list(m.IMAGE_SIZE)} and MODEL.HEATMAP_SIZE {[hw, hh]} do not fit pose_hrnet: "
            f"sizes must be multiples of {stride} and the heatmap 1/{stride} of the input (e.g. [{w}, {h}] -> "
            f"[{w // stride}, {h // stride}])")
    return model


#: ``MODEL.NAME`` -> builder(cfg, heatmap_size); 'simple_baseline' is SimpleBaseline too
BUILDERS = {"pose_resnet": build_pose_resnet, "simple_baseline": build_pose_resnet, "pose_hrnet": build_hrnet}


def build_pose_model(cfg, heatmap_size=None) -> nn.Module:
    """The network ``MODEL.NAME`` names (the config checked the name)."""
    return BUILDERS[cfg.MODEL.NAME](cfg, heatmap_size)
