"""ClassificationTask: config defaults, loss, metrics, pretrained loading, parameter groups."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tasks.classification import ClassificationTask
from tasks.classification.metrics import ClassificationMeter
from tasks.engine.config import make_config
from tasks.engine.errors import UserError
from tasks.engine.task import get


def task_for(**sections) -> ClassificationTask:
    data = {"MODEL": {"NAME": "cifar_resnet20"}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return ClassificationTask(make_config(data, task="classification"))


def test_registered_with_its_defaults():
    assert get("classification") is ClassificationTask
    cfg = make_config({}, task="classification")
    assert cfg.MODEL.NAME == "cifar_resnet18" and cfg.DATASET.FORMAT == "auto"
    assert cfg.LOSS.LABEL_SMOOTHING == 0.0 and cfg.TRAIN.BACKBONE_LR_MULT == 1.0
    with pytest.raises(UserError, match="did you mean"):
        make_config({"MODEL": {"NAME": "cifar_resnet_18"}}, task="classification")
    with pytest.raises(UserError, match="TRAIN.BACKBONE_LR_MULT"):
        make_config({"TRAIN": {"BACKBONE_LR_MULT": 0.0}}, task="classification")


def test_loss_is_label_smoothed_cross_entropy():
    task = task_for(LOSS={"LABEL_SMOOTHING": 0.2})
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    model = nn.Identity()
    loss, stats = task.loss(model, (logits, labels))
    logp = logits.log_softmax(1)
    manual = -(0.8 * logp[torch.arange(2), labels] + 0.2 * logp.mean(1)).mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    assert stats == {"acc": 50.0}


class FixedLogits(nn.Module):
    """A 'model' whose prediction for sample i is row i of a table (fed its index)."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)

    def forward(self, index):
        return self.table[index]


def test_evaluate_reports_percentages_per_class_and_a_confusion_matrix(tmp_path):
    task = task_for(MODEL={"NUM_CLASSES": 6})
    labels = torch.tensor([0, 0, 1, 1, 2, 5])
    table = -5.0 - 0.1 * torch.arange(6.0).repeat(6, 1)  # distinct scores: no ties in top-k
    # predictions: 0 right, 0 -> 1 wrong, 1 right, 1 -> 0 wrong, 2 right, 5 -> 3 wrong
    for i, p in enumerate([0, 1, 1, 0, 2, 3]):
        table[i, p] = 5.0
    table[1, 0] = 1.0  # true label second: inside the top 5
    table[3, 1] = -9.0  # true label last of six: outside the top 5
    table[5, 5] = 0.0  # true label second
    dataset = TensorDataset(torch.arange(6), labels)
    dataset.classes = ["cat", "dog", "sea lion", "x", "y", "z"]
    out = task.evaluate(FixedLogits(table), DataLoader(dataset, batch_size=4), tmp_path)
    assert out["top1"] == pytest.approx(50.0)
    assert out["acc_cat"] == 50.0 and out["acc_dog"] == 50.0 and out["acc_sea_lion"] == 100.0
    assert out["acc_z"] == 0.0 and "acc_x" not in out  # no test samples of class x
    assert out["mean_class_acc"] == pytest.approx((50 + 50 + 100 + 0) / 4)
    assert out["top5"] == pytest.approx(500 / 6)
    assert out["loss"] == pytest.approx(F.cross_entropy(table, labels).item(), rel=1e-6)
    png = tmp_path / "confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_meter_counts_confusions_across_batches():
    meter = ClassificationMeter(3)
    meter.update(torch.eye(3)[[0, 1]], torch.tensor([0, 2]))
    meter.update(torch.eye(3)[[2]], torch.tensor([2]))
    assert meter.confusion().tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    assert meter.summary()["top1"] == pytest.approx(200 / 3)


def test_pretrained_checkpoint_loads_backbone_and_keeps_a_new_head(tmp_path):
    source = task_for(MODEL={"NUM_CLASSES": 10}).build_model()
    torch.save({"model": source.state_dict(), "epoch": 1}, tmp_path / "model_best.pth")
    model = task_for(MODEL={"NUM_CLASSES": 5, "PRETRAINED": str(tmp_path / "model_best.pth")}).build_model()
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 5


def test_pretrained_relative_path_is_found_beside_the_config(tmp_path, monkeypatch):
    source = task_for().build_model()
    torch.save(source.state_dict(), tmp_path / "w.pth")
    monkeypatch.chdir("/")
    cfg = make_config({"MODEL": {"NAME": "cifar_resnet20", "PRETRAINED": "w.pth"}},
                      task="classification", config_dir=str(tmp_path))
    model = ClassificationTask(cfg).build_model()
    assert torch.equal(model.fc.weight, source.fc.weight)


def test_pretrained_of_another_architecture_is_refused(tmp_path):
    torch.save(task_for(MODEL={"NAME": "cifar_resnet56"}).build_model().state_dict(), tmp_path / "r56.pth")
    with pytest.raises(UserError, match="MODEL.PRETRAINED .*r56.pth do not fit the model.*unexpected"):
        task_for(MODEL={"PRETRAINED": str(tmp_path / "r56.pth")}).build_model()


def test_missing_torchvision_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    task = task_for(MODEL={"NAME": "resnet18", "PRETRAINED": "ResNet18_Weights.IMAGENET1K_V1"})
    with pytest.raises(UserError, match="resnet18-f37072fd.pth"):
        task.build_model()


def test_frozen_backbone_trains_the_head_only():
    task = task_for(MODEL={"FREEZE_BACKBONE": True})
    model = task.build_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert task.param_groups(model) == [model.fc.weight, model.fc.bias]


def test_backbone_lr_multiplier_makes_two_groups_head_first():
    task = task_for(TRAIN={"BACKBONE_LR_MULT": 0.1, "LR": 0.2})
    model = task.build_model()
    groups = task.param_groups(model)
    assert [g["name"] for g in groups] == ["head", "backbone"]
    assert "lr" not in groups[0] and groups[1]["lr"] == pytest.approx(0.02)
    assert len(groups[0]["params"]) == 2
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    opt = torch.optim.SGD(groups, lr=0.2)
    assert [g["lr"] for g in opt.param_groups] == [0.2, pytest.approx(0.02)]


def test_training_step_lowers_the_loss_on_a_fixed_batch():
    """The pieces fit together: a few SGD steps on one batch reduce task.loss."""
    task = task_for(MODEL={"NUM_CLASSES": 4})
    torch.manual_seed(0)
    model = task.build_model()
    images, labels = torch.randn(16, 3, 16, 16), torch.arange(16) % 4
    opt = torch.optim.SGD(task.param_groups(model), lr=0.05, momentum=0.9)
    first = None
    for _ in range(15):
        opt.zero_grad()
        loss, _ = task.loss(model, (images, labels))
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert math.isfinite(loss.item()) and loss.item() < 0.7 * first
