"""prepare_qat on torchvision and CIFAR models: the policy, the copy, forward/backward, errors."""
import pytest
import torch
import torchvision
from torch import nn

from quant import (LsqQuantizer, QuantConv2d, activation_quantizers, QuantLayerMixin, QuantLinear, calibrate, layer_bits,
                   prepare_qat, step_size_parameters)
from tasks.classification.models import build_classifier


def float_layers(model):
    return [(n, m) for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]


MODELS = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
    "cifar_resnet20": lambda: build_classifier("cifar_resnet20", 10),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_layer_converted_as_the_policy_says(name, capsys):
    torch.manual_seed(0)
    model = MODELS[name]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = float_layers(model)
    first, last = layers[0][0], layers[-1][0]
    qmodel = prepare_qat(model, w_bits=4, a_bits=4, first_last_bits=8)

    # the float model is untouched
    assert [n for n, _ in float_layers(model)] == [n for n, _ in layers]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # every Conv2d/Linear became a quantized layer with the policy's bits
    assert not float_layers(qmodel)
    bits = layer_bits(qmodel)
    assert set(bits) == {n for n, _ in layers}
    for layer_name, info in bits.items():
        expected = 8 if layer_name in (first, last) else 4
        assert (info["w_bits"], info["a_bits"]) == (expected, expected), layer_name
        module = qmodel.get_submodule(layer_name)
        float_module = model.get_submodule(layer_name)
        assert isinstance(module, QuantConv2d if isinstance(float_module, nn.Conv2d) else QuantLinear)
        assert torch.equal(module.weight, float_module.weight) and module.weight is not float_module.weight
    # the summary names every layer and its bits
    printed = capsys.readouterr().out
    assert all(n in printed for n, _ in layers)
    assert f"{len(layers)} Conv2d/Linear layers" in printed and "W8A8" in printed and "W4A4" in printed

    # calibration, forward and backward
    x = torch.randn(2, 3, 32, 32)
    calibrate(qmodel, [x], num_batches=1)
    qmodel.train()
    out = qmodel(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    steps = step_size_parameters(qmodel)
    assert len(steps) == len(layers) + len(activation_quantizers(qmodel))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in steps)
    assert all(m.weight.grad is not None for m in qmodel.modules() if isinstance(m, QuantLayerMixin))


def test_first_last_float_skip_and_per_channel():
    model = MODELS["cifar_resnet20"]()
    names = [n for n, _ in float_layers(model)]
    skip = "stages.1.0.conv2"
    qmodel = prepare_qat(model, w_bits=2, a_bits=3, first_last_bits=0, per_channel=True,
                         skip=[skip], log=None)
    bits = layer_bits(qmodel)
    for n in (names[0], names[-1], skip):
        assert type(qmodel.get_submodule(n)) in (nn.Conv2d, nn.Linear)
        assert bits[n]["w_bits"] is None
    body = qmodel.get_submodule("stages.0.0.conv1")
    assert (body.w_bits, body.a_bits) == (2, 3)
    assert body.weight_quantizer.step_size.shape == (body.out_channels,)
    # a skipped parent keeps everything under it float
    qmodel = prepare_qat(model, skip=["stages.2"], log=None)
    assert all(bits["w_bits"] is None for n, bits in layer_bits(qmodel).items() if n.startswith("stages.2."))


def test_activation_only_float_and_signedness_from_calibration():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3),
                          nn.Flatten(), nn.Linear(4, 2))
    qmodel = prepare_qat(model, w_bits=4, a_bits=None, first_last_bits=8, log=None)
    layer = qmodel.get_submodule
    assert layer("2").input_quantizer is None and layer("2").w_bits == 4
    assert [q.bits for q in activation_quantizers(qmodel).values()] == [8, 8]  # first and last inputs only
    qmodel = prepare_qat(model, w_bits=4, a_bits=4, first_last_bits=8, log=None)
    x = torch.randn(8, 3, 7, 7)
    calibrate(qmodel, [(x, None)], num_batches=1)
    layer = qmodel.get_submodule
    assert layer("0").input_quantizer.is_signed  # normalised images
    assert not layer("2").input_quantizer.is_signed  # after ReLU
    assert layer("3").input_quantizer.is_signed  # conv output, no ReLU


def test_calibration_uses_float_activations_and_leaves_bn_alone():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                          nn.Conv2d(4, 2, 1))
    qmodel = prepare_qat(model, w_bits=4, a_bits=4, first_last_bits=8, log=None)
    bn_before = qmodel.get_submodule("0").bn.running_mean.clone()  # folded into conv 0
    batches = [torch.randn(4, 3, 6, 6) for _ in range(3)]
    qmodel.train()
    assert calibrate(qmodel, iter(batches), num_batches=2) == 2
    assert qmodel.training and torch.equal(qmodel.get_submodule("0").bn.running_mean, bn_before)
    with torch.no_grad():
        model.eval()
        inputs = [model[:3](b) for b in batches[:2]]  # the float activations feeding layer 3
    mean_abs = sum(float(i.abs().mean()) for i in inputs) / 2
    expected = 2 * mean_abs / (15 ** 0.5)  # unsigned 4-bit: Qp = 15
    assert qmodel.get_submodule("3").input_quantizer.step_size.item() == pytest.approx(expected, rel=1e-5)


def test_state_dict_round_trip_gives_the_same_model():
    torch.manual_seed(2)
    model = MODELS["cifar_resnet20"]()
    qmodel = prepare_qat(model, 3, 3, log=None)
    x = torch.randn(4, 3, 32, 32)
    calibrate(qmodel, [x], 1)
    other = prepare_qat(MODELS["cifar_resnet20"](), 3, 3, log=None)
    other.load_state_dict(qmodel.state_dict())
    qmodel.eval(), other.eval()
    assert torch.equal(qmodel(x), other(x))


class WithConv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.temporal = nn.Conv1d(4, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.temporal(self.stem(x).mean(3)).mean(2))


def test_unknown_layer_types_and_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"'temporal' \(Conv1d\) has weights.*skip list"):
        prepare_qat(WithConv1d(), log=None)
    prepare_qat(WithConv1d(), skip=["temporal"], log=None)  # skipping it is the way out

    class MyConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(ValueError, match=r"'0' \(MyConv\)"):
        prepare_qat(nn.Sequential(MyConv(3, 3, 1), nn.Conv2d(3, 3, 1)), log=None)
    model = MODELS["cifar_resnet20"]()
    for kwargs in ({"w_bits": 9}, {"w_bits": 1}, {"a_bits": 16}, {"first_last_bits": 12}):
        with pytest.raises(ValueError, match="from 2 to 8"):
            prepare_qat(model, log=None, **kwargs)
    with pytest.raises(ValueError, match="not modules of the model"):
        prepare_qat(model, skip=["stages.9"], log=None)
    with pytest.raises(ValueError, match="already quantized"):
        prepare_qat(prepare_qat(model, log=None), log=None)
    assert not any(isinstance(m, LsqQuantizer) for m in model.modules())
