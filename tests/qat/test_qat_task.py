"""The qat task without training: config checks, model building, param groups, perturbation."""
import pytest
import torch

import optim
from quant import LsqQuantizer, QuantLayerMixin, step_size_parameters
from tasks.classification.models import build_classifier
from tasks.engine.config import ConfigError, make_config
from tasks.engine.errors import UserError
from tasks.engine.task import get as get_task


def qat_task(tmp_path, **sections):
    return get_task("qat")(make_config(sections, task="qat", config_dir=str(tmp_path)))


def float_checkpoint(tmp_path, name="cifar_resnet20", seed=0):
    torch.manual_seed(seed)
    path = tmp_path / f"{name}.pth"
    torch.save({"model": build_classifier(name, 10).state_dict()}, path)
    return path


@pytest.mark.parametrize("key,value,allowed", [
    ("W_BITS", 9, "from 2 to 8"), ("W_BITS", 1, "from 2 to 8"), ("A_BITS", 16, "0 for float"),
    ("FIRST_LAST_BITS", 1, "0 to keep"), ("OPSET", 11, "13 to 23"),
])
def test_bits_and_opset_outside_the_range_are_config_errors(key, value, allowed):
    with pytest.raises(ConfigError, match=f"QUANT.{key}: {value} is not allowed.*{allowed}"):
        make_config({"QUANT": {key: value}}, task="qat")


def test_build_model_loads_the_float_checkpoint_then_quantizes(tmp_path):
    path = float_checkpoint(tmp_path)
    task = qat_task(tmp_path, MODEL={"PRETRAINED": str(path)},
                    QUANT={"W_BITS": 3, "A_BITS": 0, "FIRST_LAST_BITS": 0, "SKIP": ["stages.2.2.conv2"]})
    model = task.build_model()
    float_state = torch.load(path, weights_only=True)["model"]
    body = model.get_submodule("stages.0.0.conv1")
    assert torch.equal(body.weight, float_state["stages.0.0.conv1.weight"])
    assert isinstance(body, QuantLayerMixin) and body.w_bits == 3 and body.a_bits is None
    assert not isinstance(model.conv1, QuantLayerMixin) and not isinstance(model.fc, QuantLayerMixin)
    assert not isinstance(model.get_submodule("stages.2.2.conv2"), QuantLayerMixin)


def test_checkpoint_of_another_architecture_and_bad_skip_are_user_errors(tmp_path):
    other = float_checkpoint(tmp_path, "cifar_resnet56")
    with pytest.raises(UserError, match="do not fit the model"):
        qat_task(tmp_path, MODEL={"PRETRAINED": str(other)}).build_model()
    with pytest.raises(UserError, match="QUANT: skip names"):
        qat_task(tmp_path, QUANT={"SKIP": ["no.such.layer"]}).build_model()
    with pytest.raises(UserError, match="not found"):
        qat_task(tmp_path, MODEL={"PRETRAINED": str(tmp_path / "missing.pth")}).build_model()


def test_step_sizes_get_their_own_group_without_perturbation(tmp_path):
    task = qat_task(tmp_path, TRAIN={"BACKBONE_LR_MULT": 0.5})
    model = task.build_model()
    groups = task.param_groups(model)
    steps = {id(p) for p in step_size_parameters(model)}
    assert [g.get("name") for g in groups] == ["head", "backbone", "step_sizes"]
    assert {id(p) for p in groups[-1]["params"]} == steps
    assert groups[-1]["rho"] == 0.0 and groups[-1]["rho_min"] == 0.0 and groups[-1]["weight_decay"] == 0.0
    assert not any(id(p) in steps for g in groups[:-1] for p in g["params"])
    n_all = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_all
    perturbing = qat_task(tmp_path, QUANT={"PERTURB_STEP_SIZES": True})
    group = perturbing.param_groups(model)[-1]
    assert group["name"] == "step_sizes" and "rho" not in group and "rho_min" not in group


@pytest.mark.parametrize("method", ["bsam", "sam"])
@pytest.mark.parametrize("perturb", [False, True])
def test_sharpness_aware_passes_perturb_weights_but_not_step_sizes(tmp_path, method, perturb):
    torch.manual_seed(0)
    task = qat_task(tmp_path, QUANT={"PERTURB_STEP_SIZES": perturb})
    model = task.build_model()
    images, labels = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    task.setup(model, [(images, labels)], torch.device("cpu"))
    seen = []  # (a step size, a weight) as each forward pass sees them
    layer = model.get_submodule("stages.1.0.conv1")
    layer.register_forward_pre_hook(lambda m, i: seen.append(
        (m.input_quantizer.step_size.item(), m.weight.flatten()[0].item())))
    opt = optim.build(task.param_groups(model), "sgd", lr=0.1, method=method, rho=0.5, rho_min=0.5,
                      model=model)

    def closure():
        opt.zero_grad()
        loss, _ = task.loss(model, (images, labels))
        loss.backward()
        return loss

    model.train()
    opt.step(closure)
    passes = 3 if method == "bsam" else 2
    assert len(seen) == passes
    steps_seen = {s for s, _ in seen}
    weights_seen = {w for _, w in seen}
    assert len(weights_seen) == passes  # the latent float weights are perturbed each pass
    assert (len(steps_seen) > 1) == perturb  # step sizes only when the config asks
    assert all((q.step_size > 0).all() for q in model.modules() if isinstance(q, LsqQuantizer))


@pytest.fixture(scope="module")
def w4a4_checkpoint(tmp_path_factory):
    """A calibrated W4A4 (8-bit first/last) model's checkpoint, as training saves it."""
    tmp_path = tmp_path_factory.mktemp("w4a4")
    torch.manual_seed(0)
    task = qat_task(tmp_path)
    model = task.build_model()
    task.setup(model, [(torch.randn(8, 3, 32, 32), torch.zeros(8, dtype=torch.long))], torch.device("cpu"))
    path = tmp_path / "model_best.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.mark.parametrize("quant, named", [
    ({"W_BITS": 2}, "QUANT.W_BITS 4 in the checkpoint, 2 in this config"),
    ({"W_BITS": 3}, "QUANT.W_BITS 4 in the checkpoint, 3 in this config"),
    ({"W_BITS": 8, "A_BITS": 8}, "QUANT.W_BITS 4 in the checkpoint, 8 in this config, QUANT.A_BITS 4 in the "
                                 "checkpoint, 8 in this config"),
    ({"A_BITS": 2}, "QUANT.A_BITS 4 in the checkpoint, 2 in this config"),
    ({"FIRST_LAST_BITS": 4}, "QUANT.FIRST_LAST_BITS 8 in the checkpoint, 4 in this config"),
    ({"FIRST_LAST_BITS": 0}, "QUANT.FIRST_LAST_BITS quantized in the checkpoint, float in this config"),
    ({"A_BITS": 0}, r"QUANT.A_BITS \(other activation quantizers\)"),
])
def test_a_checkpoint_at_other_bit_widths_is_refused_naming_the_keys(tmp_path, w4a4_checkpoint, quant, named):
    """The quantizers save their bits: evaluating or exporting a W4A4 checkpoint with other
    QUANT bits would build (and export) a model that was never trained."""
    with pytest.raises(UserError, match=f"trained at other bit widths: {named}; use the config it was trained"):
        qat_task(tmp_path, QUANT=quant).load_trained(w4a4_checkpoint)
    model = qat_task(tmp_path).load_trained(w4a4_checkpoint)  # its own bits load
    assert model.get_submodule("stages.0.0.conv1").w_bits == 4 and model.fc.w_bits == 8


def test_a_checkpoint_saved_before_the_bits_were_stored_still_loads(tmp_path, w4a4_checkpoint):
    state = torch.load(w4a4_checkpoint, weights_only=True)["model"]
    old = tmp_path / "old.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith(".bit_width")}, old)
    model = qat_task(tmp_path).load_trained(old)
    assert torch.equal(model.fc.weight_quantizer.step_size, state["fc.weight_quantizer.step_size"])
    with pytest.raises(RuntimeError, match="trained at 4 bits, this model has 2"):  # the library's own check
        qat_task(tmp_path, QUANT={"W_BITS": 2}).build_model(pretrained=False).load_state_dict(state)
