"""SimpleBaseline model shapes, initialisation, torchvision key names, and the loss."""
import pytest
import torch
import torchvision

from tasks.engine.config import make_config
from tasks.engine.errors import UserError
from tasks.engine.weights import load_lenient
from tasks.pose.loss import joints_mse_loss
from tasks.pose.model import PoseResNet, build_pose_resnet

TINY = {"MODEL": {"IMAGE_SIZE": [64, 96], "HEATMAP_SIZE": [16, 24],
                  "EXTRA": {"NUM_LAYERS": 18, "NUM_DECONV_FILTERS": [32, 32, 32]}}}


def test_output_is_one_heatmap_per_joint_at_a_quarter_of_the_input():
    model = build_pose_resnet(make_config(TINY, task="pose")).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 64))
    assert out.shape == (2, 17, 24, 16)


def test_head_initialisation_follows_the_paper():
    model = PoseResNet(18, 17, (64, 64, 64), (4, 4, 4))
    deconv = [m for m in model.deconv_layers if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(deconv) == 3 and all(m.bias is None for m in deconv)
    for m in deconv + [model.final_layer]:
        assert 0.0005 < m.weight.std().item() < 0.002
    assert torch.all(model.final_layer.bias == 0)
    bns = [m for m in model.deconv_layers if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)


def test_backbone_keeps_torchvision_key_names_so_classification_weights_load():
    model = PoseResNet(18, 17, (32, 32, 32), (4, 4, 4))
    reference = torchvision.models.resnet18(weights=None)
    skipped = load_lenient(model.backbone, reference.state_dict(), skip_prefixes=("fc.",))
    assert skipped == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(model.backbone.conv1.weight, reference.conv1.weight)


def test_depth_10_is_resnet18_with_one_block_per_stage():
    small, r18 = PoseResNet(10, 17, (32, 32, 32), (4, 4, 4)), PoseResNet(18, 17, (32, 32, 32), (4, 4, 4))
    assert [len(getattr(small.backbone, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert small.backbone.layer4[0].conv1.weight.shape == r18.backbone.layer4[0].conv1.weight.shape
    with torch.no_grad():
        assert small.eval()(torch.randn(1, 3, 96, 64)).shape == (1, 17, 24, 16)
    with pytest.raises(UserError, match="use one of"):
        PoseResNet(12, 17, (32, 32, 32), (4, 4, 4))


def test_sizes_that_do_not_fit_the_network_are_a_user_error():
    bad = {"MODEL": {"IMAGE_SIZE": [64, 96], "HEATMAP_SIZE": [32, 48], "EXTRA": {"NUM_LAYERS": 18}}}
    with pytest.raises(UserError, match="HEATMAP_SIZE"):
        build_pose_resnet(make_config(bad, task="pose"))
    with pytest.raises(UserError, match="NUM_DECONV_LAYERS"):
        build_pose_resnet(make_config({"MODEL": {"EXTRA": {"NUM_DECONV_LAYERS": 2}}}, task="pose"))
    with pytest.raises(UserError, match="MODEL.NAME: 'pose_hrnett' is not allowed.*did you mean pose_hrnet"):
        make_config({"MODEL": {"NAME": "pose_hrnett"}}, task="pose")


def test_joints_mse_matches_the_reference_per_joint_loop():
    torch.manual_seed(0)
    pred, gt = torch.rand(3, 17, 8, 6), torch.rand(3, 17, 8, 6)
    weight = (torch.rand(3, 17, 1) > 0.3).float()
    expected = 0
    for j in range(17):  # the reference: 0.5 * MSE of each joint's weighted heatmaps, averaged
        w = weight[:, j].reshape(3, 1)
        expected += 0.5 * torch.nn.functional.mse_loss(pred[:, j].reshape(3, -1) * w, gt[:, j].reshape(3, -1) * w)
    torch.testing.assert_close(joints_mse_loss(pred, gt, weight), expected / 17)
    # a joint with weight 0 has no influence
    pred2 = pred.clone()
    pred2[weight[..., 0] == 0] += 5
    torch.testing.assert_close(joints_mse_loss(pred2, gt, weight), expected / 17)
    assert joints_mse_loss(pred2, gt, None) > joints_mse_loss(pred2, gt, weight)
