"""Heatmap encoding/decoding, flip-back and the affine geometry (generated tensors only)."""
import cv2
import numpy as np
import pytest
import torch

from tasks.pose.decode import argmax_keypoints, decode_heatmaps, flip_back, refine_quarter_pixel
from tasks.pose.skeleton import FLIP_PAIRS, flip_permutation
from tasks.pose.targets import encode_heatmaps
from tasks.pose.transforms import (affine_matrix, apply_affine, box_to_center_scale, invert_affine,
                                   warp_image)

IMAGE = (96, 128)  # w, h
HEATMAP = (24, 32)


@pytest.mark.parametrize("seed", range(5))
def test_encode_then_decode_recovers_visible_joints_within_one_heatmap_pixel(seed):
    rng = np.random.default_rng(seed)
    joints = rng.uniform([0, 0], [IMAGE[0] - 1, IMAGE[1] - 1], size=(17, 2))
    visible = (rng.random(17) < 0.8).astype(np.float32)
    heatmaps, weight = encode_heatmaps(joints, visible, IMAGE, HEATMAP, sigma=2.0)
    assert heatmaps.shape == (17, 32, 24) and weight.shape == (17, 1)
    np.testing.assert_array_equal(weight[:, 0], visible)
    coords, maxvals = argmax_keypoints(heatmaps[None])
    coords = refine_quarter_pixel(heatmaps[None], coords)[0]
    stride = IMAGE[0] / HEATMAP[0]
    err = np.abs(coords - joints / stride)[visible > 0]
    assert err.max() <= 1.0
    assert np.all(maxvals[0, visible > 0, 0] > 0.8)  # peak 1, or its neighbour at the border
    assert np.all(heatmaps[visible == 0] == 0)


def test_target_weight_is_zero_off_the_heatmap_and_for_unlabelled_joints():
    joints = np.array([[-40.0, 10.0], [10.0, 500.0], [-6.0, 20.0], [50.0, 60.0]])
    visible = np.array([1, 1, 1, 0])
    heatmaps, weight = encode_heatmaps(joints, visible, IMAGE, HEATMAP, sigma=2.0)
    assert weight[:, 0].tolist() == [0.0, 0.0, 1.0, 0.0]  # far off, far off, just outside, unlabelled
    assert heatmaps[0].sum() == 0 and heatmaps[1].sum() == 0 and heatmaps[3].sum() == 0
    assert 0 < heatmaps[2].max() < 1  # only the tail of a Gaussian just outside the edge


def test_decode_back_projects_to_image_coordinates():
    """A joint in the image -> crop -> heatmap -> decode -> image lands where it started."""
    center, scale = box_to_center_scale((100, 50, 120, 200), IMAGE[0] / IMAGE[1])
    joints_img = np.array([[130.0, 90.0], [200.0, 230.0], [160.0, 150.0]])
    matrix = affine_matrix(center, scale, 0.0, IMAGE)
    heatmaps, _ = encode_heatmaps(apply_affine(joints_img, matrix), np.ones(3), IMAGE, HEATMAP, 2.0)
    preds, scores = decode_heatmaps(heatmaps[None], [center], [scale])
    pixel = scale[0] / HEATMAP[0]  # image pixels per heatmap pixel
    assert np.abs(preds[0] - joints_img).max() <= pixel
    assert preds.shape == (1, 3, 2) and scores.shape == (1, 3, 1)


def test_box_to_center_scale_pads_to_the_aspect_ratio():
    center, scale = box_to_center_scale((10, 20, 30, 100), 0.75)
    np.testing.assert_allclose(center, [25, 70])
    np.testing.assert_allclose(scale, [75 * 1.25, 100 * 1.25])
    _, wide = box_to_center_scale((0, 0, 300, 100), 0.75)
    np.testing.assert_allclose(wide, [300 * 1.25, 400 * 1.25])


def test_flipped_warp_is_the_mirror_of_the_plain_warp_and_the_inverse_inverts():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    center, scale = np.array([90.0, 70.0]), np.array([96.0, 128.0])
    plain = warp_image(image, affine_matrix(center, scale, 25.0, IMAGE), IMAGE)
    mirrored = warp_image(image, affine_matrix(center, scale, 25.0, IMAGE, flip=True), IMAGE)
    # equal up to OpenCV's fixed-point interpolation rounding (+-1 grey level)
    assert np.abs(mirrored.astype(int) - cv2.flip(plain, 1).astype(int)).max() <= 1
    m = affine_matrix(center, scale, 25.0, IMAGE, flip=True)
    pts = rng.uniform(0, 150, (10, 2))
    np.testing.assert_allclose(apply_affine(apply_affine(pts, m), invert_affine(m)), pts, atol=1e-9)


def test_flip_back_of_mirrored_targets_gives_the_plain_targets():
    """With the heatmap shift, mirrored-input heatmaps line up with the plain ones (exactly for
    joints on input pixels; the mirror axis sits 3/4 heatmap pixel off the grid otherwise)."""
    rng = np.random.default_rng(1)
    joints = rng.integers([8, 8], [IMAGE[0] - 9, IMAGE[1] - 9], size=(17, 2)).astype(float)
    plain, _ = encode_heatmaps(joints, np.ones(17), IMAGE, HEATMAP, 2.0)
    mirrored_joints = joints.copy()
    mirrored_joints[:, 0] = IMAGE[0] - 1 - joints[:, 0]
    mirrored, _ = encode_heatmaps(mirrored_joints[flip_permutation()], np.ones(17), IMAGE, HEATMAP, 2.0)
    back = flip_back(torch.from_numpy(mirrored)[None]).numpy()[0]
    np.testing.assert_allclose(back[..., 1:], plain[..., 1:], atol=1e-6)


def test_flip_permutation_swaps_every_pair_and_is_an_involution():
    perm = flip_permutation()
    for left, right in FLIP_PAIRS:
        assert perm[left] == right and perm[right] == left
    assert perm[0] == 0
    np.testing.assert_array_equal(perm[perm], np.arange(17))


def test_half_body_crop_frames_only_the_chosen_half_and_random_geometry_stays_in_range():
    from tasks.pose.transforms import half_body_center_scale, random_scale_rotation

    joints = np.zeros((17, 2))
    joints[:11] = np.random.default_rng(0).uniform([40, 10], [60, 50], (11, 2))  # upper body
    joints[11:] = np.random.default_rng(1).uniform([40, 100], [60, 160], (6, 2))  # lower body
    visible = np.ones(17)
    centers = set()
    for seed in range(20):
        center, scale = half_body_center_scale(joints, visible, 0.75, np.random.default_rng(seed))
        half = joints[:11] if center[1] < 80 else joints[11:]
        lo, hi = half.min(0), half.max(0)
        assert np.all(np.abs(center - half.mean(0)) < 1e-4)  # HRNet: the joints' mean
        assert scale[1] >= 1.5 * (hi - lo)[1] - 1e-4 and abs(scale[0] / scale[1] - 0.75) < 1e-6
        centers.add(center[1] < 80)
    assert centers == {True, False}  # both halves get picked
    visible[11:] = 0
    assert half_body_center_scale(joints, visible, 0.75, np.random.default_rng(0))[0][1] < 80
    rng = np.random.default_rng(0)
    draws = np.array([random_scale_rotation(rng, 0.3, 40) for _ in range(500)])
    assert draws[:, 0].min() >= 0.7 and draws[:, 0].max() <= 1.3
    assert np.abs(draws[:, 1]).max() <= 80 and 0.3 < (draws[:, 1] == 0).mean() < 0.5
