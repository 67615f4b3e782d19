"""Mixup and CutMix of training batches (``DATASET.MIXUP_ALPHA``, ``DATASET.CUTMIX_ALPHA``),
with torchvision's ``transforms.v2.MixUp`` / ``CutMix``, in the training loader's collate
function as torchvision's reference recipe does it.

Mixing happens once per batch, before the optimizer sees it, so that SAM's and BSAM's
passes of one step all see the same mixed images and targets.  With both alphas > 0 each
batch gets one of the two, chosen at random.  Targets become class probabilities (each
row sums to 1), which ``cross_entropy`` smooths like hard labels (``LOSS.LABEL_SMOOTHING``).
Randomness comes from torch's generator (the loader workers' seeds, or the main process's,
which checkpoints save), so runs repeat and resume exactly like the per-image augmentation.
"""
from __future__ import annotations

from torch.utils.data import default_collate
from torchvision.transforms import v2


def batch_mixer(mixup_alpha: float, cutmix_alpha: float, num_classes: int):
    """The torchvision transform that mixes ``(images, labels)``, or None when both are 0."""
    ops = []
    if mixup_alpha > 0:
        ops.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        ops.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


class MixingCollate:
    """``default_collate`` and then ``mixer``: a batch of images and soft targets."""

    def __init__(self, mixer):
        self.mixer = mixer

    def __call__(self, samples):
        images, labels = default_collate(samples)
        return self.mixer(images, labels)
