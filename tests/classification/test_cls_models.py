"""The classifier zoo: architectures match their papers (widths, depths, parameter counts)."""
import pytest
import torch
from torch import nn

from tasks.classification.models import available_models, build_classifier, head_prefix
from tasks.engine.errors import UserError


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, millions",
    [
        ("cifar_resnet20", 0.27),  # He et al. 2016, table 6
        ("cifar_resnet56", 0.85),
        ("cifar_resnet18", 11.17),
        ("wrn28_10", 36.5),  # Zagoruyko & Komodakis 2016
    ],
)
def test_parameter_counts_match_the_papers(name, millions):
    assert n_params(build_classifier(name, 10)) / 1e6 == pytest.approx(millions, rel=0.01)


def test_he_resnets_use_parameter_free_shortcuts():
    model = build_classifier("cifar_resnet20", 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # 19 conv + 1 fc = 20 weighted layers, no 1x1 projections
    assert all(c.kernel_size == (3, 3) for c in convs)
    widths = sorted({c.out_channels for c in convs})
    assert widths == [16, 32, 64]


def test_pyramidnet110_widens_additively_to_16_plus_alpha():
    model = build_classifier("pyramidnet110", 100)
    assert len(model.blocks) == 54  # (110 - 2) / 2 basic blocks
    widths = [b.conv2.out_channels for b in model.blocks]
    assert widths == sorted(widths) and widths[-1] == 16 + 270
    assert widths[0] == 21  # 16 + 270 / 54
    assert model.fc.in_features == 286 and model.fc.out_features == 100
    assert 28e6 < n_params(model) < 29e6


# The two big networks run on 8x8 inputs: same code path (three downsamplings), 1/16 the time.
@pytest.mark.parametrize(
    "name, size", [("cifar_resnet18", 32), ("cifar_resnet20", 32), ("wrn28_10", 8), ("pyramidnet110", 8)]
)
def test_cifar_models_map_images_to_logits(name, size):
    model = build_classifier(name, 7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0"])
def test_torchvision_backbones_get_a_head_for_num_classes(name):
    model = build_classifier(name, 7)
    head = head_prefix(name)
    head_weights = [p for n, p in model.named_parameters() if n.startswith(head) and p.dim() == 2]
    assert head_weights and head_weights[-1].shape[0] == 7
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_every_model_has_a_head_under_its_prefix():
    for name in ["cifar_resnet20", "resnet18", "mobilenet_v3_small", "regnet_y_400mf", "efficientnet_b0"]:
        model = build_classifier(name, 3)
        assert any(k.startswith(head_prefix(name)) for k in model.state_dict()), name


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean 'cifar_resnet20'"):
        build_classifier("cifar_resnet_20", 10)
    with pytest.raises(UserError, match="MODEL.NAME"):
        build_classifier("nonsense", 10)
    assert "wrn28_10" in available_models() and "resnet50" in available_models()
