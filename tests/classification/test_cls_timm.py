"""timm backbones, their data config and weights, mixup/cutmix, layer decay and no-WD groups."""
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tasks.classification import ClassificationTask
from tasks.classification.input_config import input_config
from tasks.classification.mixing import MixingCollate, batch_mixer
from tasks.classification.models import build_classifier, head_prefix
from tasks.classification.param_groups import norm_and_bias_names
from tasks.classification.transforms import build_transforms
from tasks.engine.config import make_config
from tasks.engine.errors import UserError


def task_for(name="timm/resnet18", **sections) -> ClassificationTask:
    data = {"MODEL": {"NAME": name, "NUM_CLASSES": 5}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return ClassificationTask(make_config(data, task="classification"))


@pytest.mark.parametrize("name, head", [("timm/resnet18", ("fc.",)), ("timm/convnext_atto", ("head.fc.",))])
def test_timm_models_build_offline_with_a_classifier_for_num_classes(name, head):
    model = task_for(name).build_model()
    assert head_prefix(name) == head
    assert dict(model.named_parameters())[f"{head[0]}weight"].shape[0] == 5
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_file_loads_the_backbone_and_replaces_the_classifier(tmp_path, suffix, caplog):
    import timm

    source = timm.create_model("resnet18", num_classes=10)  # "pretrained" elsewhere, 10 classes
    path = tmp_path / f"resnet18{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    with caplog.at_level("INFO", logger="bsam.classification"):
        model = task_for(MODEL={"PRETRAINED": str(path)}).build_model()
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.fc.out_features == 5
    assert "classifier re-initialised" in caplog.text and "fc.weight" in caplog.text


def test_pretrained_tag_comes_from_the_local_hugging_face_cache_only(tmp_path, monkeypatch):
    import timm

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    task = task_for("timm/resnet18.a1_in1k", MODEL={"PRETRAINED": "timm"})
    with pytest.raises(UserError) as err:
        task.build_model()
    message = str(err.value)
    assert "\n" not in message and "model.safetensors" in message and "timm/resnet18.a1_in1k" in message
    assert str(tmp_path / "hf" / "hub") in message
    # the layout huggingface_hub gives a downloaded file
    repo = tmp_path / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    source = timm.create_model("resnet18")
    save_file(source.state_dict(), repo / "snapshots" / "0123abcd" / "model.safetensors")
    model = task.build_model()
    assert torch.equal(model.conv1.weight, source.conv1.weight) and model.fc.out_features == 5


def test_missing_file_unknown_names_and_bad_values_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="weights file not found: .*nowhere.safetensors"):
        task_for(MODEL={"PRETRAINED": str(tmp_path / "nowhere.safetensors")}).build_model()
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(UserError, match="not a valid safetensors file"):
        task_for(MODEL={"PRETRAINED": str(tmp_path / "bad.safetensors")}).build_model()
    with pytest.raises(UserError, match="did you mean 'timm/resnet18'"):
        make_config({"MODEL": {"NAME": "timm/resnet19"}}, task="classification")
    with pytest.raises(UserError, match="did you mean 'timm/convnext_atto'"):
        make_config({"MODEL": {"NAME": "convnext_atto"}}, task="classification")
    bad = {"TRAIN.EMA_DECAY": 1.0, "TRAIN.LAYER_DECAY": 0.0, "DATASET.AUTO_AUGMENT": "randaug",
           "DATASET.RANDOM_ERASE": 1.5, "DATASET.MIXUP_ALPHA": -0.2, "DATASET.CUTMIX_ALPHA": -1,
           "DATASET.AUTO_AUGMENT_MAGNITUDE": 31, "DATASET.INTERPOLATION": "cubic", "DATASET.IMAGE_SIZE": 4}
    for key, value in bad.items():
        with pytest.raises(UserError) as err:
            make_config({"MODEL": {"NAME": "timm/resnet18"}}, task="classification", opts=[key, json.dumps(value)])
        assert key in str(err.value) and "\n" not in str(err.value), key
    with pytest.raises(UserError, match="TRAIN.LAYER_DECAY 0.7: MODEL.NAME cifar_resnet20 has no layer grouping"):
        task = task_for("cifar_resnet20", TRAIN={"LAYER_DECAY": 0.7})
        task.param_groups(task.build_model())


def test_the_models_data_config_is_used_unless_the_config_sets_it():
    cfg = make_config({"MODEL": {"NAME": "timm/resnet18.a1_in1k"}}, task="classification")
    spec = input_config(cfg, "imagefolder")
    assert (spec.size, spec.interpolation) == (224, "bicubic")
    assert spec.mean == pytest.approx((0.485, 0.456, 0.406)) and "timm data config" in spec.describe()
    cfg = make_config({"MODEL": {"NAME": "timm/resnet18"}, "DATASET": {
        "IMAGE_SIZE": 64, "MEAN": [0.5] * 3, "STD": [0.25] * 3, "INTERPOLATION": "area"}}, task="classification")
    spec = input_config(cfg, "imagefolder")
    assert (spec.size, spec.mean, spec.interpolation) == (64, (0.5,) * 3, "area")
    assert "timm" not in spec.describe() and "DATASET.IMAGE_SIZE" in spec.describe()
    spec = input_config(make_config({"MODEL": {"NAME": "cifar_resnet20"}}, task="classification"), "cifar10")
    assert (spec.size, spec.interpolation) == (32, "bilinear")


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment", "autoaugment"])
def test_auto_augment_and_random_erasing_give_normalised_images(policy):
    import numpy as np

    train, test = build_transforms("transfer", 24, (0.5,) * 3, (0.25,) * 3, auto_augment=policy,
                                   magnitude=9, random_erase=1.0, cutout=0)
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    torch.manual_seed(0)
    a = train(image)
    torch.manual_seed(0)
    assert torch.equal(a, train(image))  # torch's generator drives all of it
    assert a.shape == (3, 24, 24) and a.dtype == torch.float32
    assert (a == 0).all(0).any()  # the erased rectangle, at the mean
    assert test(image).shape == (3, 24, 24)


def test_mixup_and_cutmix_targets_are_probabilities_and_work_with_label_smoothing():
    torch.manual_seed(0)
    collate = MixingCollate(batch_mixer(0.8, 1.0, 5))
    samples = [(torch.rand(3, 8, 8), i % 5) for i in range(16)]
    task = task_for("cifar_resnet20", LOSS={"LABEL_SMOOTHING": 0.1})
    for _ in range(6):
        images, targets = collate(samples)
        assert images.shape == (16, 3, 8, 8) and targets.shape == (16, 5)
        assert torch.allclose(targets.sum(1), torch.ones(16)) and (targets >= 0).all()
        logits = torch.randn(16, 5)
        loss, stats = task.loss(nn.Identity(), (logits, targets))
        smoothed = 0.9 * targets + 0.1 / 5
        assert loss.item() == pytest.approx(-(smoothed * logits.log_softmax(1)).sum(1).mean().item(), rel=1e-5)
        assert set(stats) == {"acc_mixed"}
    assert batch_mixer(0.0, 0.0, 5) is None


@pytest.mark.parametrize("name", ["timm/resnet18", "timm/convnext_atto", "resnet18"])
def test_layer_decay_gives_the_lrs_timms_function_gives(name):
    import timm
    from timm.optim import param_groups_layer_decay

    task = task_for(name, TRAIN={"LAYER_DECAY": 0.7, "LR": 0.2})
    model = task.build_model()
    groups = task.param_groups(model)
    lr_of = {id(p): g.get("lr", 0.2) for g in groups for p in g["params"]}
    # timm's own function on timm's model of the same architecture (torchvision's ResNet-18
    # has timm's parameter names)
    reference = timm.create_model(name.removeprefix("timm/"), num_classes=5)
    scale = {}
    for g in param_groups_layer_decay(reference, weight_decay=0.0, layer_decay=0.7):
        names = {id(p): n for n, p in reference.named_parameters()}
        scale.update({names[id(p)]: g["lr_scale"] for p in g["params"]})
    got = {n: lr_of[id(p)] / 0.2 for n, p in model.named_parameters()}
    assert got.keys() == scale.keys()
    assert all(got[n] == pytest.approx(scale[n], rel=1e-12) for n in got)
    assert len(set(got.values())) > 5 and groups[0]["name"] == "head" and "lr" not in groups[0]
    assert min(got.values()) == pytest.approx(0.7 ** (len(set(got.values())) - 1))


@pytest.mark.parametrize("name, norm", [("timm/resnet18", nn.BatchNorm2d), ("timm/convnext_atto", nn.LayerNorm)])
def test_no_wd_groups_hold_exactly_the_norm_and_bias_tensors(name, norm):
    task = task_for(name, TRAIN={"NO_WD_NORM_BIAS": True, "WD": 0.05, "LAYER_DECAY": 0.8})
    model = task.build_model()
    groups = task.param_groups(model)
    no_wd = {id(p) for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    expected = {id(p) for m in model.modules() if isinstance(m, norm) for p in m.parameters(recurse=False)}
    expected |= {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    assert no_wd == expected
    assert all("weight_decay" not in g for g in groups if not g["name"].endswith("_no_wd"))
    if name.endswith("convnext_atto"):  # 1-D layer scales are not norm or bias: they keep WD
        assert any(n.endswith("gamma") for n, p in model.named_parameters() if id(p) not in no_wd)
    assert norm_and_bias_names(model) == {n for n, p in model.named_parameters() if id(p) in expected}
    # the optimizer gets every group with its own LR and anchors (BSAM's rho_min per group)
    import optim

    opt = optim.build(groups, "sgd", lr=0.1, weight_decay=0.05, method="bsam", rho=0.05, rho_min=0.05)
    assert [g["lr_start"] for g in opt.param_groups] == [g["lr"] for g in opt.param_groups]
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_torchvision_and_suite_models_keep_their_heads():
    assert head_prefix("resnet18") == ("fc.",) and head_prefix("cifar_resnet20") == ("fc.",)
    assert build_classifier("timm/resnet18", 3).fc.out_features == 3
