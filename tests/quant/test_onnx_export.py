"""ONNX export: integer initializers, Q/DQ structure, metadata, parity refusal, clear errors.

Accuracy parity on real images is in tests/qat; these run on generated inputs."""
import json

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto
from torch import nn

import quant.export as qexport
from quant import activation_quantizers, calibrate, layer_bits, prepare_qat
from quant.export import ExportParityError, Tolerance, build_onnx_model, export_onnx, run_onnx
from tasks.classification.models import build_classifier


#: Random-weight networks have near-tie logits, and one activation that rounds the other way
#: (float summation order differs between PyTorch and onnxruntime) cascades through them, so
#: structure tests allow a few flipped images; tests/qat checks the default 99% on real data.
RANDOM_NET = Tolerance(min_top1_agreement=0.95, max_rel_mean_diff=0.05)


def initializers(model_proto) -> dict:
    return {t.name: t for t in model_proto.graph.initializer}


def prepared(name="cifar_resnet20", bits=4, per_channel=False, seed=0):
    torch.manual_seed(seed)
    model = build_classifier(name, 10) if name.startswith("cifar") else getattr(torchvision.models, name)(num_classes=10)
    qmodel = prepare_qat(model.eval(), bits, bits, 8, per_channel=per_channel, log=None)
    calibrate(qmodel, [torch.randn(32, 3, 32, 32)], 1)
    return model, qmodel.eval()


def test_float_model_exports_with_float_weights(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("cifar_resnet20", 10).eval()
    x = torch.randn(16, 3, 32, 32)
    out = tmp_path / "sub" / "float.onnx"
    data, report = export_onnx(model, x, out)
    assert out.read_bytes() == data and report.path == str(out)
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-4
    proto = onnx.load(out)
    assert {t.data_type for t in proto.graph.initializer} <= {TensorProto.FLOAT, TensorProto.INT64}
    assert not [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["weight_format"] == "float" and "quant_layers" not in meta  # no block of null entries
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["float.onnx"]  # no temp file left
    # a dynamic batch dimension
    assert run_onnx(out, x[:3].numpy()).shape == (3, 10)


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantized_layers_have_integer_initializers_and_qdq(per_channel):
    _, qmodel = prepared(bits=4, per_channel=per_channel)
    x = torch.randn(64, 3, 32, 32)
    data, report = export_onnx(qmodel, x, opset=21, tolerance=RANDOM_NET, weight_format="int4")
    proto = onnx.load_from_string(data)
    inits = initializers(proto)
    bits = layer_bits(qmodel)
    assert report.layers == bits
    metadata = json.loads({p.key: p.value for p in proto.metadata_props}["quant_layers"])
    assert metadata == json.loads(json.dumps(bits))
    for name, info in bits.items():
        expected_type = TensorProto.INT4 if info["w_bits"] <= 4 else TensorProto.INT8
        weight = inits[f"{name}.weight_int{info['w_bits']}"]
        assert weight.data_type == expected_type, name
        assert f"{name}.weight" not in inits  # no float copy of a quantized weight
        scale = inits[f"{name}.weight_scale"]
        out_channels = qmodel.get_submodule(name).weight.shape[0]
        assert list(scale.dims) == ([out_channels] if info["per_channel"] else [])
    # int4 is stored packed: two weights per byte
    conv = qmodel.get_submodule("stages.0.0.conv1")
    assert len(inits["stages.0.0.conv1.weight_int4"].raw_data) == (conv.weight.numel() + 1) // 2
    ops = [n.op_type for n in proto.graph.node]
    quantizers = activation_quantizers(qmodel)
    assert ops.count("QuantizeLinear") == len(quantizers)  # one per quantized tensor
    narrow = [q for q in quantizers.values() if q.bits < 8]
    assert narrow and ops.count("Clip") == len(narrow)  # 4-bit grids need an integer Clip; 8-bit ones do not
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"]  # folded
    assert inits["fc.bias_int32"].data_type == TensorProto.INT32


def test_opset_below_21_stores_low_bit_weights_as_int8():
    _, qmodel = prepared(bits=3)
    proto = build_onnx_model(qmodel, torch.randn(2, 3, 32, 32), opset=17)
    weight = initializers(proto)["stages.0.0.conv1.weight_int3"]
    assert weight.data_type == TensorProto.INT8
    values = onnx.numpy_helper.to_array(weight)
    assert values.min() >= -4 and values.max() <= 3 and len(np.unique(values)) <= 8


def test_mobilenet_v2_exports_with_parity():
    _, qmodel = prepared("mobilenet_v2", bits=4)
    _, report = export_onnx(qmodel, torch.randn(32, 3, 32, 32), opset=21, tolerance=RANDOM_NET)
    assert report.rel_mean_diff < 0.01


def test_disagreeing_export_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    _, qmodel = prepared(bits=4)
    real_run = qexport.run_session
    monkeypatch.setattr(qexport, "run_session", lambda *a, **k: -real_run(*a, **k))
    target = tmp_path / "model.onnx"
    with pytest.raises(ExportParityError, match="no file written"):
        export_onnx(qmodel, torch.randn(16, 3, 32, 32), target)
    assert not any(tmp_path.iterdir())


def test_unsupported_models_are_clear_errors():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"does not support layer '1' \(GELU\)"):
        export_onnx(model.eval(), torch.randn(4, 3, 8, 8))
    qmodel = prepare_qat(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)), log=None)
    with pytest.raises(ValueError, match="calibrate the model or load a trained QAT checkpoint"):
        export_onnx(qmodel, torch.randn(4, 3, 8, 8))
    with pytest.raises(ValueError, match="opset=11"):
        export_onnx(model, torch.randn(4, 3, 8, 8), opset=11)


def test_four_bit_resnet18_is_at_most_a_fifth_of_the_float_file():
    model, qmodel = prepared("resnet18", bits=4)
    sample = torch.randn(2, 3, 32, 32)
    float_bytes = build_onnx_model(model.eval(), sample).ByteSize()
    quant_bytes = build_onnx_model(qmodel, sample, opset=21, weight_format="int4").ByteSize()
    assert quant_bytes <= 0.2 * float_bytes, (quant_bytes, float_bytes)


def test_biases_match_onnxruntime_integer_kernels():
    """Convs with biases: onnxruntime fuses DQ->Conv->Q into an integer conv with an int32
    bias; the QAT layers round the bias the same way (training: the fake-quantized float conv;
    evaluation: the integer kernel, requantized into the next tensor's grid), so the exported
    model computes the same logits, bit for bit."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                          nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 64, 5))
    qmodel = prepare_qat(model, 4, 4, 8, log=None)
    x = torch.randn(64, 3, 8, 8)
    calibrate(qmodel, [x[:32]], 1)
    layer = qmodel.get_submodule("1").eval()
    with torch.no_grad():
        xq = layer.input_quantizer(x.new_ones(1, 8, 4, 4))
        scale = layer.input_quantizer.scale() * layer.weight_quantizer.scale()
        expected_bias = torch.round(layer.bias / scale) * scale
        assert torch.allclose(layer.quantized_bias(), expected_bias)
        float_conv = nn.functional.conv2d(xq, layer.quantized_weight(), expected_bias, padding=1)
        assert torch.allclose(layer.train()(xq), float_conv)
        deployed = layer.eval()(xq)
        assert torch.allclose(deployed, layer.output_quantizer(float_conv))  # the next tensor's grid
    with torch.enable_grad():  # gradients wanted (e.g. a Hessian in eval mode): the float path
        assert torch.allclose(layer(xq), float_conv)
    _, report = export_onnx(qmodel.eval(), x)
    assert report.max_abs_diff == 0.0 and report.top1_agreement == 1.0
