"""The QAT model is the deployed integer graph: BN folded, quantizers on the carried tensors,
and onnxruntime's optimised graph runs every convolution, residual add and the classifier
on integer kernels.  Generated inputs; accuracy on real images is in tests/qat."""
import copy
import operator
import os
import stat

import onnx
import pytest
import torch
from torch import nn

from quant import QuantAdd, QuantConvBn2d, activation_quantizers, calibrate, prepare_qat
from quant.export import Tolerance, export_onnx
from tasks.classification.models import build_classifier

RANDOM_NET = Tolerance(min_top1_agreement=0.9, max_rel_mean_diff=0.05)  # see test_onnx_export


def conv_bn(bias: bool):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.BatchNorm2d(6)
    with torch.no_grad():  # statistics and affine parameters far from the identity
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.2, 3)
        bn.weight.uniform_(-2, 2), bn.bias.uniform_(-1, 1)
    return conv, bn


@pytest.mark.parametrize("bias", [False, True])
def test_folded_conv_bn_equals_conv_then_bn_in_float_mode(bias):
    conv, bn = conv_bn(bias)
    x = torch.randn(4, 3, 8, 8)
    expected = bn.eval()(conv(x))
    folded = QuantConvBn2d.from_float(conv, None, bn=copy.deepcopy(bn)).eval()
    assert folded.weight_quantizer is None
    assert torch.allclose(folded(x), expected, atol=1e-5)
    # training, quantizer disabled: conv then BN on batch statistics, which update the running ones
    quantized = QuantConvBn2d.from_float(conv, 4, per_channel=True, bn=copy.deepcopy(bn)).train()
    folded_weight = quantized.folded_weight_and_bias()[0].detach()  # its quantizer starts from the folded weight
    step = quantized.weight_quantizer.step_size.detach()
    assert torch.allclose(step, 2 * folded_weight.abs().mean(dim=(1, 2, 3)) / 7 ** 0.5)
    quantized.weight_quantizer.enabled = False
    float_bn = copy.deepcopy(bn).train()
    out = quantized(x)
    assert torch.allclose(out, float_bn(conv(x)), atol=1e-4)
    assert torch.allclose(quantized.bn.running_mean, float_bn.running_mean, atol=1e-6)
    out.square().sum().backward()  # gamma and beta learn
    assert quantized.bn.weight.grad is not None and quantized.bn.bias.grad is not None
    # frozen statistics: training computes the folded arithmetic, statistics stay
    quantized.frozen_stats = True
    before = quantized.bn.running_mean.clone()
    assert torch.allclose(quantized(x), quantized.bn.eval()(conv(x)), atol=1e-5)
    assert torch.equal(quantized.bn.running_mean, before)


@pytest.mark.parametrize("bits, residual_bits", [(2, 8), (4, 4)])
def test_quantizers_sit_on_the_tensors_the_integer_graph_carries(bits, residual_bits):
    torch.manual_seed(0)
    qmodel = prepare_qat(build_classifier("cifar_resnet20", 10).eval(), bits, bits, 8, log=None)
    calibrate(qmodel, [torch.randn(8, 3, 32, 32)], 1)
    graph = qmodel.graph
    modules = dict(qmodel.named_modules())

    def is_quantizer(node):
        return node.op == "call_module" and node.target in activation_quantizers(qmodel)

    def source(node):  # through the identity shortcut, or option A's slicing and zero padding
        while (node.op == "call_function" and node.target in (operator.getitem, nn.functional.pad)) or (
                node.op == "call_module" and isinstance(modules[node.target], nn.Identity)):
            node = node.args[0]
        return node

    assert not [n for n in graph.nodes if n.op == "call_module" and isinstance(modules[n.target], nn.BatchNorm2d)]
    convs = [n for n in graph.nodes if n.op == "call_module" and isinstance(modules[n.target], QuantConvBn2d)]
    adds = [n for n in graph.nodes if n.op == "call_module" and isinstance(modules[n.target], QuantAdd)]
    assert len(convs) == 19 and len(adds) == 9  # every residual add is an integer QuantAdd
    for conv in convs:  # quantized input; output quantized (after the ReLU when there is one)
        assert is_quantizer(conv.args[0])
        out = next(iter(conv.users))
        assert is_quantizer(out) or is_quantizer(next(iter(out.users)))
    for add in adds:  # both operands and the (ReLU'd) sum are integer tensors of the residual stream
        assert all(is_quantizer(source(a)) and modules[source(a).target].bits == residual_bits for a in add.args)
        sum_quantizer = next(iter(next(iter(add.users)).users))
        assert is_quantizer(sum_quantizer) and modules[sum_quantizer.target].bits == residual_bits
    body = convs[1:]  # a body convolution reads its bits: below 4, its own copy of a residual tensor
    assert all(modules[c.args[0].target].bits == bits for c in body)
    requantized = [c.args[0] for c in body if is_quantizer(c.args[0].args[0])]
    assert all(modules[q.args[0].target].bits == 8 for q in requantized)
    assert len(requantized) == (9 if residual_bits > bits else 0)  # each block's first conv, if any
    quantizers = activation_quantizers(qmodel)
    # image, stem, per block: 2 conv outputs and the sum (+ the requantized input); pooled features
    assert len(quantizers) == 1 + 1 + 3 * 9 + len(requantized) + 1
    first = quantizers["act_quantizers.x"]
    assert (first.bits, first.is_signed) == (8, True)  # the image, at the first layer's bits
    relus = [q for name, q in quantizers.items() if "relu" in name]
    assert relus and all(not q.is_signed for q in relus)  # unsigned after every ReLU


def test_the_export_requantizes_the_residual_stream_where_a_low_bit_conv_reads_it():
    torch.manual_seed(0)
    x = torch.randn(32, 3, 32, 32)
    qmodel = prepare_qat(build_classifier("cifar_resnet20", 10).eval(), 2, 2, 8, per_channel=True, log=None)
    calibrate(qmodel, [x], 1)
    model = onnx.load_from_string(export_onnx(qmodel.eval(), x, tolerance=RANDOM_NET, weight_format="int8")[0])
    grid = {n.output[0]: [int(onnx.numpy_helper.to_array(i)) for i in model.graph.initializer
                          if i.name in n.input[1:]] for n in model.graph.node if n.op_type == "Clip"}
    assert sorted(map(tuple, grid.values())) == [(0, 3)] * 18  # 9 conv outputs + 9 requantized block inputs
    producers = {n.output[0]: n for n in model.graph.node}
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    for add in adds:  # 8-bit operands: dequantized straight from a full-range QuantizeLinear
        for operand in add.input:
            node = producers[operand]
            while node.op_type in ("DequantizeLinear", "Slice", "Pad"):
                node = producers[node.input[0]]
            assert node.op_type == "QuantizeLinear"


@pytest.fixture(scope="module")
def resnet20_models():
    torch.manual_seed(0)
    model = build_classifier("cifar_resnet20", 10).eval()
    x = torch.randn(32, 3, 32, 32)
    models = {}
    for bits in (8, 4):
        qmodel = prepare_qat(model, bits, bits, 8, per_channel=True, log=None)
        calibrate(qmodel, [x], 1)
        models[bits] = qmodel.eval()
    return models, x


@pytest.mark.parametrize("bits", [8, 4])
def test_every_conv_add_and_the_classifier_run_on_integer_kernels(resnet20_models, bits):
    models, x = resnet20_models
    _, report = export_onnx(models[bits], x, tolerance=RANDOM_NET, weight_format="int8")
    assert report.max_abs_diff == 0.0  # evaluation computes the integer kernels (test below)
    assert report.integer_kernels["QLinearConv"] == 19
    assert report.integer_kernels["QLinearAdd"] == 9
    assert report.integer_kernels["QGemm"] == 1
    assert report.float_kernels == {}  # no convolution or matrix product left in float


def test_int4_packed_weights_are_smaller_and_run_float_convolutions(resnet20_models):
    models, x = resnet20_models
    int8, report8 = export_onnx(models[4], x, tolerance=RANDOM_NET, weight_format="int8")
    int4, report4 = export_onnx(models[4], x, tolerance=RANDOM_NET, weight_format="int4")
    assert len(int4) < 0.65 * len(int8)
    assert report4.float_kernels.get("Conv", 0) + report4.float_kernels.get("FusedConv", 0) == 18  # the 4-bit body
    assert report4.integer_kernels["QLinearConv"] == 1  # the 8-bit stem keeps its integer kernel
    with pytest.raises(ValueError, match="int4 weights need opset >= 21"):
        export_onnx(models[4], x, opset=17, weight_format="int4")


@pytest.mark.parametrize("opset, ir_version", [(21, 10), (17, 8), (13, 7)])
def test_ir_version_is_the_lowest_the_opset_needs_and_the_file_is_0644(resnet20_models, tmp_path, opset, ir_version):
    models, x = resnet20_models
    path = tmp_path / "model.onnx"
    _, report = export_onnx(models[4], x[:8], path, opset=opset, tolerance=Tolerance(0.0, 0.05))
    proto = onnx.load(path)
    assert proto.ir_version == report.ir_version == ir_version
    assert [o.version for o in proto.opset_import] == [opset]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


@pytest.mark.parametrize("bits, ends", [(2, 8), (3, 2)])  # 4 and 8 bits: the test above
def test_evaluation_computes_the_integer_kernels_bit_for_bit(bits, ends):
    """Evaluation runs what onnxruntime's QLinearConv / QLinearAdd / QLinearGlobalAveragePool /
    QGemm compute (integer accumulators, their requantization rounding), so the exported
    model's logits equal PyTorch's exactly, at every bit width; training keeps LSQ's float
    fake-quantization with straight-through gradients."""
    torch.manual_seed(bits)
    x = torch.randn(24, 3, 32, 32)
    qmodel = prepare_qat(build_classifier("cifar_resnet20", 10).eval(), bits, bits, ends, per_channel=True, log=None)
    calibrate(qmodel, [x], 1)
    _, report = export_onnx(qmodel.eval(), x, tolerance=Tolerance(1.0, 0.0))
    assert report.max_abs_diff == 0.0 and report.top1_agreement == 1.0
    assert report.integer_kernels["QLinearGlobalAveragePool"] == 1 and report.float_kernels == {}
    with torch.no_grad():
        deployed = qmodel(x[:4])
        fake_quantized = qmodel.train()(x[:4])  # BN in training mode: batch statistics
    assert not torch.equal(deployed, fake_quantized)
    qmodel(x[:4]).sum().backward()  # gradients reach weights and step sizes through the float path
    assert qmodel.get_submodule("stages.1.0.conv1").weight.grad is not None
    assert all(q.step_size.grad is not None for q in activation_quantizers(qmodel).values())


def test_float_first_and_last_layers_leave_only_float_rounding():
    """A float stem and classifier run float kernels in onnxruntime; what they round
    differently can flip only a near-tie image."""
    torch.manual_seed(0)
    x = torch.randn(32, 3, 32, 32)
    qmodel = prepare_qat(build_classifier("cifar_resnet20", 10).eval(), 4, 4, None, per_channel=True, log=None)
    calibrate(qmodel, [x], 1)
    _, report = export_onnx(qmodel.eval(), x, tolerance=RANDOM_NET)
    assert report.integer_kernels["QLinearConv"] == 18 and report.integer_kernels["QLinearAdd"] == 9
    assert report.top1_agreement >= 0.95 and report.rel_mean_diff < 0.01


@pytest.mark.parametrize("high, bias", [(128, 2**20), (256, 2**20), (256, 2**26)])  # float32, halves, float64
def test_integer_accumulators_are_exact_on_every_path(high, bias):
    from quant.integer import exact_products

    torch.manual_seed(0)
    x = torch.randint(-high, high, (2, 64, 6, 6)).float()
    w = torch.randint(-128, 128, (8, 64, 3, 3)).float()
    b = torch.randint(-bias, bias, (8,)).float()

    def conv(x, w, b):
        return nn.functional.conv2d(x, w, b, padding=1)

    assert torch.equal(exact_products(conv, x, w, 576, b), conv(x.double(), w.double(), b.double()))
