"""DATASET.VAL_FROM_TRAIN: a seeded, class-stratified validation split cut out of the
training images, disjoint from what the run trains on; the test split is not read."""
from __future__ import annotations

import numpy as np
import pytest

from tasks.classification.data import build_image_datasets, stratified_split
from tasks.engine.config import make_config
from tasks.engine.errors import UserError

from test_cls_data import cls_config, write_fake_cifar, write_image_folder


def test_split_is_disjoint_stratified_and_fixed_by_its_seed():
    targets = [0] * 10 + [1] * 20 + [2] * 30
    kept, held = stratified_split(targets, 0.2, seed=4)
    assert set(kept).isdisjoint(held) and sorted(kept + held) == list(range(60))
    assert [sum(targets[i] == c for i in held) for c in range(3)] == [2, 4, 6]  # 20% of each class
    assert stratified_split(targets, 0.2, seed=4) == (kept, held)
    assert stratified_split(targets, 0.2, seed=5)[1] != held
    # a small class still gives one image and keeps at least one
    assert len(stratified_split([0, 0, 1, 1, 1, 1], 0.1, seed=0)[1]) == 2
    assert 0 in stratified_split([0, 1, 1], 0.5, seed=0)[0]  # a class of one stays in training


def test_image_folder_val_split_comes_from_train_with_test_transform(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b", "c"), per_class=8, splits=("train",))  # no test split
    cfg = cls_config(tmp_path, MODEL={"NUM_CLASSES": 3}, DATASET={"VAL_FROM_TRAIN": 0.25, "AUGMENT": "cifar"})
    train, val = build_image_datasets(cfg)
    assert len(train) == 18 and len(val) == 6
    assert set(train.paths).isdisjoint(val.paths)
    assert sorted(val.targets) == [0, 0, 1, 1, 2, 2]
    assert val.transform is not train.transform
    again_train, again_val = build_image_datasets(cfg)
    assert again_val.paths == val.paths and again_train.paths == train.paths
    _, other = build_image_datasets(cls_config(tmp_path, MODEL={"NUM_CLASSES": 3},
                                               DATASET={"VAL_FROM_TRAIN": 0.25, "VAL_SEED": 1}))
    assert other.paths != val.paths


def test_cifar_val_split_keeps_clean_labels_under_noise(tmp_path):
    write_fake_cifar(tmp_path, n_train_per_file=8)
    plain = dict(MODEL={"NUM_CLASSES": 10}, DATASET={"VAL_FROM_TRAIN": 0.3})
    _, val = build_image_datasets(cls_config(tmp_path, **plain))
    noisy = dict(MODEL={"NUM_CLASSES": 10}, DATASET={"VAL_FROM_TRAIN": 0.3, "LABEL_NOISE": 0.5})
    noisy_train, noisy_val = build_image_datasets(cls_config(tmp_path, **noisy))
    assert noisy_val.targets == val.targets and np.array_equal(noisy_val.images, val.images)
    assert len(noisy_train) + len(noisy_val) == 40


@pytest.mark.parametrize("fraction", [1.0, -0.1])
def test_fraction_is_checked_by_the_config(fraction):
    with pytest.raises(UserError, match="DATASET.VAL_FROM_TRAIN"):
        make_config({"DATASET": {"VAL_FROM_TRAIN": fraction}}, task="classification")
