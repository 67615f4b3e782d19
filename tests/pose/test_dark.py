"""DARK: unbiased (sub-pixel) heatmap targets and the Taylor-step decoding, both opt-in."""
import cv2
import numpy as np
import pytest
import torch
from torch import nn

from tasks.engine.config import ConfigError, make_config
from tasks.pose.decode import (argmax_keypoints, decode_heatmaps, gaussian_blur, heatmap_to_image, refine_dark,
                               refine_quarter_pixel)
from tasks.pose.predict import predict_image
from tasks.pose.task import PoseTask
from tasks.pose.targets import encode_heatmaps
from tasks.pose.transforms import box_to_center_scale

IMAGE = (96, 128)  # w, h
HEATMAP = (24, 32)
STRIDE = 4.0
SMALL = {"MODEL": {"IMAGE_SIZE": list(IMAGE), "HEATMAP_SIZE": list(HEATMAP)}}


def sub_pixel_targets(seed: int, count: int = 17):
    """Joints (heatmap pixels) away from the border, and their unbiased targets."""
    rng = np.random.default_rng(seed)
    positions = rng.uniform([7, 7], [HEATMAP[0] - 8, HEATMAP[1] - 8], size=(count, 2))
    heatmaps, _ = encode_heatmaps(positions * STRIDE, np.ones(count), IMAGE, HEATMAP, 2.0, unbiased=True)
    return positions, heatmaps


@pytest.mark.parametrize("seed", range(3))
def test_dark_decoding_recovers_an_unbiased_target_where_the_quarter_pixel_cannot(seed):
    positions, heatmaps = sub_pixel_targets(seed)
    coords, _ = argmax_keypoints(heatmaps[None])
    no_blur = np.abs(refine_dark(heatmaps[None], coords, blur_kernel=1)[0] - positions)
    blurred = np.abs(refine_dark(heatmaps[None], coords, blur_kernel=11)[0] - positions)
    quarter = np.abs(refine_quarter_pixel(heatmaps[None], coords)[0] - positions)
    assert no_blur.max() < 1e-4  # a sampled Gaussian's log is exactly quadratic
    assert blurred.max() < 0.01  # blurred by a Gaussian it is (nearly) a Gaussian still
    assert quarter.max() > 0.1  # the quarter-pixel grid cannot get closer than this


def test_decode_heatmaps_applies_dark_in_image_space():
    positions, heatmaps = sub_pixel_targets(0)
    center, scale = np.array(IMAGE) / 2, np.array(IMAGE, dtype=float)  # the crop is the whole box, in pixels
    truth = heatmap_to_image(positions, center, scale, HEATMAP)
    dark, scores = decode_heatmaps(heatmaps[None], [center], [scale], "dark", 11)
    quarter, _ = decode_heatmaps(heatmaps[None], [center], [scale], True)
    assert np.abs(dark[0] - truth).max() < 0.01 * STRIDE
    assert np.abs(quarter[0] - truth).max() > 0.1 * STRIDE
    assert np.all(scores > 0.5)


@pytest.mark.parametrize("seed", range(3))
def test_default_encoding_is_still_the_nearest_pixel_gaussian(seed):
    rng = np.random.default_rng(seed)
    joints = rng.uniform([-10, -10], [IMAGE[0] + 10, IMAGE[1] + 10], size=(17, 2))
    visible = (rng.random(17) < 0.8).astype(np.float32)
    heatmaps, weight = encode_heatmaps(joints, visible, IMAGE, HEATMAP, sigma=2.0)
    centre = np.floor(joints / STRIDE + 0.5)
    xs, ys = np.arange(HEATMAP[0]), np.arange(HEATMAP[1])
    for j in range(17):
        dx, dy = xs - centre[j, 0], ys - centre[j, 1]
        gx = np.where(np.abs(dx) <= 6, np.exp(-dx ** 2 / 8), 0.0)
        gy = np.where(np.abs(dy) <= 6, np.exp(-dy ** 2 / 8), 0.0)
        expected = (gy[:, None] * gx[None, :]).astype(np.float32) * weight[j, 0]
        np.testing.assert_array_equal(heatmaps[j], expected)
    unbiased, _ = encode_heatmaps(joints, visible, IMAGE, HEATMAP, 2.0, unbiased=True)
    assert not np.array_equal(unbiased, heatmaps)


def test_dark_leaves_peaks_near_the_border_and_flat_maps_where_they_are():
    heatmaps = np.zeros((1, 3, HEATMAP[1], HEATMAP[0]), dtype=np.float32)
    heatmaps[0, 0, 10, 1] = 1.0  # peak in the second column: no room for x - 2
    heatmaps[0, 0, 10, 2] = 0.5
    heatmaps[0, 1, HEATMAP[1] - 2, 10] = 1.0  # second-to-last row: no room for y + 2
    heatmaps[0, 2] = 0.3  # flat: the Hessian of its log is singular
    coords, _ = argmax_keypoints(heatmaps)
    refined = refine_dark(heatmaps, coords, 11)
    assert np.all(np.isfinite(refined))
    np.testing.assert_array_equal(refined, coords)
    preds, _ = decode_heatmaps(np.zeros((2, 17, HEATMAP[1], HEATMAP[0])), [np.zeros(2)] * 2, [np.ones(2)] * 2, "dark")
    assert np.all(np.isfinite(preds))


def test_post_process_and_blur_kernel_are_validated():
    assert make_config({"TEST": {"POST_PROCESS": "dark"}}, task="pose").TEST.POST_PROCESS == "dark"
    assert make_config(task="pose", opts=["TEST.POST_PROCESS", "false"]).TEST.POST_PROCESS is False
    with pytest.raises(ConfigError, match="TEST.POST_PROCESS: expected one of true, false, dark, got 'quarter'"):
        make_config({"TEST": {"POST_PROCESS": "quarter"}}, task="pose")
    with pytest.raises(ConfigError, match="TEST.POST_PROCESS: expected one of true, false, dark, got 1"):
        make_config({"TEST": {"POST_PROCESS": 1}}, task="pose")
    for kernel in (10, 0, -3):
        with pytest.raises(ConfigError, match=f"TEST.BLUR_KERNEL: {kernel} is not allowed; expected an odd integer"):
            make_config({"TEST": {"BLUR_KERNEL": kernel}}, task="pose")
    with pytest.raises(ConfigError, match="MODEL.UNBIASED_ENCODING: expected true or false"):
        make_config({"MODEL": {"UNBIASED_ENCODING": "yes"}}, task="pose")


def test_unbiased_encoding_reaches_the_crop_settings():
    assert PoseTask(make_config(task="pose")).crop_settings().unbiased_encoding is False
    cfg = make_config({"MODEL": {"UNBIASED_ENCODING": True}}, task="pose")
    assert PoseTask(cfg).crop_settings().unbiased_encoding is True


class FixedHeatmaps(nn.Module):
    """A 'model' whose output is given heatmaps, whatever the input."""

    def __init__(self, heatmaps):
        super().__init__()
        self.heatmaps = nn.Parameter(torch.from_numpy(heatmaps), requires_grad=False)

    def forward(self, x):
        return self.heatmaps.expand(len(x), -1, -1, -1)


@pytest.mark.parametrize("mode, tolerance", [("dark", 0.01), ("true", 0.25 + 1e-6)])
def test_both_evaluation_paths_decode_as_test_post_process_says(tmp_path, mode, tolerance):
    positions, heatmaps = sub_pixel_targets(1)
    cfg = make_config(SMALL, task="pose", opts=["TEST.POST_PROCESS", mode, "TEST.FLIP_TEST", "false"])
    model = FixedHeatmaps(heatmaps)
    center, scale = np.array([48.0, 64.0], dtype=np.float32), np.array([96.0, 128.0], dtype=np.float32)
    meta = {"center": torch.from_numpy(center[None]), "scale": torch.from_numpy(scale[None]),
            "image_id": torch.tensor([1]), "score": torch.tensor([1.0]), "area": torch.tensor([1.0])}
    poses = PoseTask(cfg).predict_loader(model, [(torch.zeros(1, 3, IMAGE[1], IMAGE[0]), None, None, meta)])[0]
    image = tmp_path / "picture.png"
    cv2.imwrite(str(image), np.zeros((IMAGE[1], IMAGE[0], 3), np.uint8))
    box = (10.0, 20.0, 48.0, 64.0)
    picture = predict_image(model, cfg, image, [box])[0]
    box_center, box_scale = box_to_center_scale(box, IMAGE[0] / IMAGE[1])
    for found, (c, s) in ((poses[0], (center, scale)), (picture, (box_center, box_scale))):
        truth = heatmap_to_image(positions, c, s, HEATMAP)
        err = np.abs(found[:, :2] - truth) / (s[0] / HEATMAP[0])  # in heatmap pixels
        assert err.max() < tolerance
        assert (err.max() > 0.1) == (mode == "true")


def test_the_blur_is_opencvs_gaussian_on_a_zero_padded_map_rescaled_to_its_maximum():
    maps = np.random.default_rng(0).random((2, 3, HEATMAP[1], HEATMAP[0]))
    for kernel in (1, 3, 11):
        r = kernel // 2
        for m, blurred in zip(maps.reshape(-1, HEATMAP[1], HEATMAP[0]),
                              gaussian_blur(maps, kernel).reshape(-1, HEATMAP[1], HEATMAP[0])):
            expected = cv2.GaussianBlur(np.pad(m, r), (kernel, kernel), 0)[r:r + HEATMAP[1], r:r + HEATMAP[0]]
            np.testing.assert_allclose(blurred, expected * m.max() / expected.max(), rtol=1e-12, atol=1e-12)
