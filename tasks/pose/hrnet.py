"""HRNet (Sun et al., 2019) for top-down pose: parallel branches at 1/4, 1/8, 1/16 and 1/32
of the input, exchanging information after every module, heatmaps read from the 1/4 branch.

The network is described by ``MODEL.EXTRA`` exactly as HRNet's experiment files write it
(``STAGE2..4`` with ``NUM_MODULES``, ``NUM_BRANCHES``, ``BLOCK``, ``NUM_BLOCKS``,
``NUM_CHANNELS``, ``FUSE_METHOD``; ``FINAL_CONV_KERNEL``), and its module names are chosen
so that its ``state_dict`` keys and shapes are those of HRNet's ``PoseHighResolutionNet``:
the published ``pose_hrnet_w32_256x192.pth`` files load strictly, ImageNet backbones of
HRNet-Image-Classification load through ``MODEL.PRETRAINED`` (see :mod:`.hrnet_weights`).
The residual blocks are torchvision's, whose parameter names are the reference's too.

Fusion upsamples to the size of the branch it feeds rather than by a fixed factor, so any
input whose sides are multiples of 4 runs (the reference needs multiples of 32; on those the
two agree exactly).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from tasks.engine.errors import UserError
from tasks.engine.schema import Key

BLOCKS = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}
FUSE_METHODS = ("SUM",)  # the reference implements the sum only
STAGES = ("STAGE2", "STAGE3", "STAGE4")
STEM_WIDTH = 64  # the stem and layer1 (four bottlenecks, 256 channels out) are fixed in HRNet
LAYER1_BLOCKS = 4
OUTPUT_STRIDE = 4
#: the model's top-level layers: the names ``MODEL.EXTRA.PRETRAINED_LAYERS`` chooses from
TOP_LAYERS = ("conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "stage2", "transition2", "stage3",
              "transition3", "stage4", "final_layer")


@dataclass(frozen=True)
class StageSpec:
    """One ``MODEL.EXTRA.STAGEn`` section: ``modules`` exchange units of ``branches``
    parallel branches, branch ``b`` holding ``blocks[b]`` residual blocks of width
    ``channels[b]`` (times the block's expansion)."""

    modules: int
    branches: int
    block: str
    blocks: tuple[int, ...]
    channels: tuple[int, ...]

    @property
    def widths(self) -> list[int]:
        return [c * BLOCKS[self.block].expansion for c in self.channels]


def branch_mismatch(section, name: str) -> str | None:
    """Why ``MODEL.EXTRA.<name>`` does not give one NUM_BLOCKS and NUM_CHANNELS entry per
    branch (``None`` when it does)."""
    key = f"MODEL.EXTRA.{name}"
    for field in ("NUM_BLOCKS", "NUM_CHANNELS"):
        if len(section[field]) != section["NUM_BRANCHES"]:
            return (f"{key}.{field}: {list(section[field])} has {len(section[field])} entries but "
                    f"{key}.NUM_BRANCHES is {section['NUM_BRANCHES']}; give one per branch")
    return None


def stage_spec(section, name: str) -> StageSpec:
    """The spec of ``MODEL.EXTRA.<name>`` (types and allowed values were checked with the
    config); a missing section or one whose lists do not match its branches is a one-line error."""
    if section is None:
        raise UserError(f"MODEL.EXTRA.{name}: MODEL.NAME pose_hrnet needs this section (NUM_MODULES, NUM_BRANCHES, "
                        "BLOCK, NUM_BLOCKS, NUM_CHANNELS, FUSE_METHOD) as HRNet's experiment files give it; see "
                        "configs/pose_hrnet_w32_adam.yaml")
    problem = branch_mismatch(section, name)
    if problem:
        raise UserError(problem)
    return StageSpec(section["NUM_MODULES"], section["NUM_BRANCHES"], section["BLOCK"],
                     tuple(section["NUM_BLOCKS"]), tuple(section["NUM_CHANNELS"]))


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Bias-free convolution and batch norm (``.0``, ``.1`` in the state_dict), then ReLU."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def residual_stack(block: type, cin: int, planes: int, count: int) -> nn.Sequential:
    """``count`` residual blocks; the first projects its shortcut when the width changes."""
    width = planes * block.expansion
    shortcut = conv_bn(cin, width, kernel=1, relu=False) if cin != width else None
    return nn.Sequential(block(cin, planes, downsample=shortcut),
                         *(block(width, planes) for _ in range(count - 1)))


def _downsampler(cin: int, cout: int, steps: int, last_relu: bool) -> nn.Sequential:
    """``steps`` stride-2 3x3 convolutions; all but the last keep ``cin`` channels."""
    return nn.Sequential(*(conv_bn(cin, cout if s == steps - 1 else cin, stride=2,
                                   relu=last_relu or s < steps - 1) for s in range(steps)))


class ExchangeUnit(nn.Module):
    """HRNet's high-resolution module: every branch runs its residual blocks, then each
    output resolution sums all branches brought to it (1x1 conv + nearest upsampling from
    lower resolutions, stride-2 3x3 convs from higher ones) and applies ReLU.

    ``outputs`` is 1 for the last unit of the network (only the 1/4 branch is read)."""

    def __init__(self, widths: list[int], spec: StageSpec, outputs: int):
        super().__init__()
        block = BLOCKS[spec.block]
        self.branches = nn.ModuleList(residual_stack(block, w, c, n)
                                      for w, c, n in zip(widths, spec.channels, spec.blocks))
        self.widths = spec.widths
        if len(self.widths) > 1:  # the reference keeps no fuse layers for a single branch
            self.fuse_layers = nn.ModuleList(
                nn.ModuleList(self._path(j, i) for j in range(len(self.widths))) for i in range(outputs))
        else:
            self.fuse_layers = None

    def _path(self, source: int, target: int) -> nn.Module | None:
        cin, cout = self.widths[source], self.widths[target]
        if source > target:
            return conv_bn(cin, cout, kernel=1, relu=False)
        if source < target:
            return _downsampler(cin, cout, target - source, last_relu=False)
        return None

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        return [F.relu(self._fused(target, xs), inplace=True) for target in range(len(self.fuse_layers))]

    def _term(self, source: int, target: int, x: torch.Tensor, size) -> torch.Tensor:
        """Branch ``source`` brought to the resolution and width of ``target``."""
        path = self.fuse_layers[target][source]
        if source == target:
            return x
        if source > target:
            return F.interpolate(path(x), size=size, mode="nearest")
        return path(x)

    def _fused(self, target: int, xs: list[torch.Tensor]) -> torch.Tensor:
        """The sum of all branches at ``target``, added in branch order as the reference adds
        them, so that it is the same to the bit.  Each term is added as soon as it is computed,
        in place once the sum is a tensor of its own (never into a branch output, which the
        other targets read): the intermediate sums allocate nothing and no term waits in
        memory.  torch.fx records ``+=`` as an out-of-place addition, so traced graphs (export,
        QAT) mutate nothing."""
        size = xs[target].shape[-2:]
        total, owned = None, False
        for source, x in enumerate(xs):
            term = self._term(source, target, x, size)
            if total is None:
                total, owned = term, source != target
            elif owned:
                total += term
            else:
                total, owned = total + term, True
        return total


class Transition(nn.ModuleList):
    """Between stages: a branch that changes width gets a 3x3 conv, a new (lower-resolution)
    branch is made from the lowest existing one by stride-2 convs; unchanged ones pass."""

    def __init__(self, before: list[int], after: list[int]):
        paths = []
        for i, width in enumerate(after):
            if i < len(before):
                paths.append(conv_bn(before[i], width) if before[i] != width else None)
            else:
                paths.append(_downsampler(before[-1], width, i + 1 - len(before), last_relu=True))
        super().__init__(paths)
        self.kept = len(before)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, path in enumerate(self):
            x = xs[i] if i < self.kept else xs[-1]
            out.append(x if path is None else path(x))
        return out


class PoseHRNet(nn.Module):
    """Stem (two stride-2 3x3 convs, four bottlenecks), stages 2-4 of exchange units with
    transitions that add a branch each, and a 1x1 (or 3x3) heatmap layer on the 1/4 branch."""

    output_stride = OUTPUT_STRIDE

    def __init__(self, stages: tuple[StageSpec, StageSpec, StageSpec], num_joints: int = 17,
                 final_kernel: int = 1):
        super().__init__()
        if final_kernel not in (1, 3):
            raise UserError(f"MODEL.EXTRA.FINAL_CONV_KERNEL: {final_kernel} is not supported; use 1 or 3")
        self.conv1 = nn.Conv2d(3, STEM_WIDTH, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        self.conv2 = nn.Conv2d(STEM_WIDTH, STEM_WIDTH, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(STEM_WIDTH)
        self.layer1 = residual_stack(Bottleneck, STEM_WIDTH, STEM_WIDTH, LAYER1_BLOCKS)
        widths = [STEM_WIDTH * Bottleneck.expansion]
        for n, spec in enumerate(stages, start=2):
            last = n == 1 + len(stages)
            self.add_module(f"transition{n - 1}", Transition(widths, spec.widths))
            widths = spec.widths
            units = [ExchangeUnit(widths, spec, 1 if last and m == spec.modules - 1 else spec.branches)
                     for m in range(spec.modules)]
            self.add_module(f"stage{n}", nn.Sequential(*units))
        self.final_layer = nn.Conv2d(widths[0], num_joints, final_kernel, padding=final_kernel // 2)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The reference's initialisation: every convolution N(0, 0.001), zero biases, batch
        norm at identity (HRNet's ``init_weights``; ImageNet weights then replace part of it)."""
        init_heatmap_layers(self.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        xs = [self.layer1(F.relu(self.bn2(self.conv2(x)), inplace=True))]
        for n in (2, 3, 4):
            xs = getattr(self, f"stage{n}")(getattr(self, f"transition{n - 1}")(xs))
        return self.final_layer(xs[0])


def build_pose_hrnet(extra, num_joints: int) -> PoseHRNet:
    """The HRNet that ``MODEL.EXTRA`` (an HRNet experiment file's section) describes."""
    stages = tuple(stage_spec(extra.get(name), name) for name in STAGES)
    return PoseHRNet(stages, num_joints=num_joints, final_kernel=extra["FINAL_CONV_KERNEL"])


def _non_empty(values: list) -> bool:
    return len(values) > 0


def stage_records(modules: int, blocks: list[int], channels: list[int]) -> dict:
    """The keys of a ``MODEL.EXTRA.STAGEn`` section as HRNet's experiment files write them;
    the defaults (what a partly written section is filled with) are HRNet-W32's."""
    widths = dict(gt=0, check=(_non_empty, "a non-empty list of integers > 0"))
    return {"NUM_MODULES": Key(modules, ge=1), "NUM_BRANCHES": Key(len(blocks), ge=1),
            "BLOCK": Key("BASIC", choices=tuple(BLOCKS)), "NUM_BLOCKS": Key(blocks, **widths),
            "NUM_CHANNELS": Key(channels, **widths), "FUSE_METHOD": Key("SUM", choices=FUSE_METHODS)}


STAGE_RECORDS = {"STAGE2": stage_records(1, [4, 4], [32, 64]), "STAGE3": stage_records(4, [4, 4, 4], [32, 64, 128]),
                 "STAGE4": stage_records(3, [4, 4, 4, 4], [32, 64, 128, 256])}


def init_heatmap_layers(modules) -> None:
    """The references' initialisation of heatmap layers (SimpleBaseline's head, all of
    HRNet): convolutions N(0, 0.001) with zero bias, batch norm 1 and 0."""
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
