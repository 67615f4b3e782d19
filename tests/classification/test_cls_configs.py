"""The shipped classification configs load and hold the recipes they claim."""
from pathlib import Path

import pytest

from tasks.engine.config import load

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FAMILIES = ["cls_cifar10", "cls_cifar100", "transfer_flowers", "transfer_timm"]


@pytest.mark.parametrize("family", FAMILIES)
def test_twins_differ_in_the_sam_section_only(family):
    cfgs = {m: load(CONFIGS / f"{family}_{m}.yaml").to_dict() for m in ("bsam", "sam", "sgd")}
    assert {m: c["SAM"]["METHOD"] for m, c in cfgs.items()} == {"bsam": "bsam", "sam": "sam", "sgd": "none"}
    strip = lambda c: {k: v for k, v in c.items() if k not in ("SAM", "NAME")}  # noqa: E731
    assert strip(cfgs["bsam"]) == strip(cfgs["sam"]) == strip(cfgs["sgd"])
    assert cfgs["bsam"]["NAME"] == f"{family}_bsam"


@pytest.mark.parametrize("dataset, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_configs_follow_the_paper_recipe(dataset, classes):
    cfg = load(CONFIGS / f"cls_{dataset}_bsam.yaml")
    t, s = cfg.TRAIN, cfg.SAM
    assert (cfg.MODEL.NAME, cfg.MODEL.NUM_CLASSES, cfg.DATASET.FORMAT) == ("cifar_resnet18", classes, dataset)
    assert (t.OPTIMIZER, t.LR, t.MOMENTUM, t.WD, t.BATCH_SIZE_PER_GPU, t.END_EPOCH) == ("sgd", 0.05, 0.9, 1e-3, 128, 200)
    assert (t.LR_SCHEDULER, t.LR_END) == ("cosine", 0.0)
    assert cfg.LOSS.LABEL_SMOOTHING == 0.1
    assert (s.RHO, s.RHO_MIN, s.RHO_MIN_END) == (0.05, 0.05, 0.0)
    assert cfg.DATASET.AUGMENT == "cifar" and cfg.DATASET.CUTOUT == 16


def test_transfer_config_fine_tunes_pretrained_resnet18():
    cfg = load(CONFIGS / "transfer_flowers_bsam.yaml")
    assert cfg.MODEL.NAME == "resnet18" and cfg.MODEL.PRETRAINED == "ResNet18_Weights.IMAGENET1K_V1"
    assert cfg.DATASET.FORMAT == "imagefolder" and cfg.DATASET.AUGMENT == "transfer"
    assert (cfg.DATASET.TRAIN_SET, cfg.DATASET.TEST_SET) == ("train", "test")


def test_timm_recipe_switches_every_part_of_the_reference_recipe_on():
    cfg = load(CONFIGS / "transfer_timm_bsam.yaml")
    d, t = cfg.DATASET, cfg.TRAIN
    assert cfg.MODEL.NAME.startswith("timm/") and cfg.MODEL.PRETRAINED == "timm"
    assert (d.AUTO_AUGMENT, d.INTERPOLATION, d.MEAN) == ("randaugment", "auto", [])
    assert d.RANDOM_ERASE > 0 and d.MIXUP_ALPHA > 0 and d.CUTMIX_ALPHA > 0 and cfg.LOSS.LABEL_SMOOTHING > 0
    assert 0 < t.LAYER_DECAY < 1 and t.NO_WD_NORM_BIAS and 0 < t.EMA_DECAY < 1
    assert cfg.SAM.METHOD == "bsam"


def test_transfer_config_finds_the_flowers_layout(shared_data):
    from tasks.classification.data import build_image_datasets

    cfg = load(CONFIGS / "transfer_flowers_bsam.yaml", ["DATASET.ROOT", str(shared_data / "flowers5")])
    train, test = build_image_datasets(cfg)
    assert (len(train), len(test), len(train.classes)) == (2500, 500, 5)
    assert train[0][0].shape == (3, 128, 128)


def test_tiny_demo_config_loads():
    cfg = load(CONFIGS / "demo" / "cls_cifar10_subset_tiny.yaml")
    assert cfg.TASK == "classification" and cfg.MODEL.NAME == "cifar_resnet20"
    assert cfg.TRAIN.MAX_ITERS_PER_EPOCH <= 10 and cfg.SAM.METHOD == "bsam"
