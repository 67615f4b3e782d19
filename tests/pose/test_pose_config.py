"""The pose configs: HRNet/SimpleBaseline experiment files load with an added SAM section,
and the suite's three COCO configs differ only in SAM."""
from pathlib import Path

import pytest
import yaml

from tasks.engine.config import ConfigError, load, make_config
from tasks.pose.task import PoseTask

REPO = Path(__file__).resolve().parents[2]

# The key set of SimpleBaseline's res50_256x192_d256x3_adam_lr1e-3.yaml (HRNet repository),
# written here from its published key list, plus the SAM section and TASK.
SIMPLEBASELINE_YAML = """
TASK: pose
AUTO_RESUME: true
CUDNN: {BENCHMARK: true, DETERMINISTIC: false, ENABLED: true}
DATA_DIR: ''
GPUS: [0, 1, 2, 3]        # the original writes (0,1,2,3), which YAML reads as a string
OUTPUT_DIR: output
LOG_DIR: log
WORKERS: 24
PRINT_FREQ: 100
DATASET:
  COLOR_RGB: false
  DATASET: coco
  ROOT: data/coco/
  TEST_SET: val2017
  TRAIN_SET: train2017
  FLIP: true
  ROT_FACTOR: 40
  SCALE_FACTOR: 0.3
MODEL:
  NAME: pose_resnet
  PRETRAINED: models/pytorch/imagenet/resnet50-19c8e357.pth
  IMAGE_SIZE: [192, 256]
  HEATMAP_SIZE: [48, 64]
  SIGMA: 2
  NUM_JOINTS: 17
  TARGET_TYPE: gaussian
  EXTRA:
    FINAL_CONV_KERNEL: 1
    DECONV_WITH_BIAS: false
    NUM_DECONV_LAYERS: 3
    NUM_DECONV_FILTERS: [256, 256, 256]
    NUM_DECONV_KERNELS: [4, 4, 4]
    NUM_LAYERS: 50
LOSS: {USE_TARGET_WEIGHT: true}
TRAIN:
  BATCH_SIZE_PER_GPU: 32
  SHUFFLE: true
  BEGIN_EPOCH: 0
  END_EPOCH: 140
  OPTIMIZER: adam
  LR: 0.001
  LR_FACTOR: 0.1
  LR_STEP: [90, 120]
  WD: 0.0001
  GAMMA1: 0.99
  GAMMA2: 0.0
  MOMENTUM: 0.9
  NESTEROV: false
TEST:
  BATCH_SIZE_PER_GPU: 32
  COCO_BBOX_FILE: data/coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json
  BBOX_THRE: 1.0
  IMAGE_THRE: 0.0
  IN_VIS_THRE: 0.2
  MODEL_FILE: ''
  NMS_THRE: 1.0
  OKS_THRE: 0.9
  FLIP_TEST: true
  POST_PROCESS: true
  SHIFT_HEATMAP: true
  USE_GT_BBOX: true
DEBUG:
  DEBUG: true
  SAVE_BATCH_IMAGES_GT: true
  SAVE_BATCH_IMAGES_PRED: true
  SAVE_HEATMAPS_GT: true
  SAVE_HEATMAPS_PRED: true
SAM: {METHOD: bsam, RHO: 0.05, RHO_MIN: 0.05, RHO_MIN_END: 0.0}
"""

# HRNet's own keys on top (w32_256x192_adam_lr1e-3.yaml): half-body, INIT_WEIGHTS, stage specs.
HRNET_EXTRA = {
    "DATASET": {"DATA_FORMAT": "jpg", "NUM_JOINTS_HALF_BODY": 8, "PROB_HALF_BODY": 0.3},
    "MODEL": {"INIT_WEIGHTS": True, "NAME": "pose_hrnet",
              "EXTRA": {"PRETRAINED_LAYERS": ["conv1", "bn1", "stage4"],
                        "STAGE2": {"NUM_MODULES": 1, "NUM_BRANCHES": 2, "BLOCK": "BASIC",
                                   "NUM_BLOCKS": [4, 4], "NUM_CHANNELS": [32, 64], "FUSE_METHOD": "SUM"},
                        "STAGE3": {"NUM_MODULES": 4, "NUM_BRANCHES": 3, "BLOCK": "BASIC",
                                   "NUM_BLOCKS": [4, 4, 4], "NUM_CHANNELS": [32, 64, 128], "FUSE_METHOD": "SUM"},
                        "STAGE4": {"NUM_MODULES": 3, "NUM_BRANCHES": 4, "BLOCK": "BASIC", "NUM_BLOCKS": [4, 4, 4, 4],
                                   "NUM_CHANNELS": [32, 64, 128, 256], "FUSE_METHOD": "SUM"}}},
}


def test_a_simplebaseline_experiment_file_with_a_sam_section_loads(tmp_path):
    path = tmp_path / "res50_256x192_d256x3_adam_lr1e-3.yaml"
    path.write_text(SIMPLEBASELINE_YAML)
    cfg = load(path)
    assert cfg.TASK == "pose" and cfg.SAM.METHOD == "bsam"
    assert cfg.MODEL.EXTRA.NUM_LAYERS == 50 and cfg.MODEL.HEATMAP_SIZE == [48, 64]
    assert cfg.DATASET.COLOR_RGB is False and cfg.TEST.USE_GT_BBOX is True
    assert cfg.DEBUG.SAVE_HEATMAPS_PRED is True


def test_an_hrnet_experiment_file_loads_and_builds_hrnet(tmp_path):
    data = yaml.safe_load(SIMPLEBASELINE_YAML)
    for section, values in HRNET_EXTRA.items():
        for key, value in values.items():
            if isinstance(value, dict):
                data[section][key].update(value)
            else:
                data[section][key] = value
    path = tmp_path / "w32_256x192_adam_lr1e-3.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load(path)
    assert cfg.DATASET.PROB_HALF_BODY == 0.3 and cfg.MODEL.EXTRA.STAGE2["NUM_BRANCHES"] == 2
    from tasks.pose.hrnet import PoseHRNet
    assert isinstance(PoseTask(cfg).build_model(pretrained=False), PoseHRNet)


# Microsoft's first SimpleBaseline release (human-pose-estimation.pytorch), written from the key
# list of its experiments/coco/resnet50/256x192_d256x3_adam_lr1e-3.yaml: BATCH_SIZE instead of
# BATCH_SIZE_PER_GPU, MODEL.STYLE, HEATMAP_SIZE/SIGMA/TARGET_TYPE under MODEL.EXTRA.
MSRA_YAML = """
TASK: pose
GPUS: '0'
DATA_DIR: ''
OUTPUT_DIR: output
LOG_DIR: log
WORKERS: 4
PRINT_FREQ: 100
DATASET: {DATASET: coco, ROOT: data/coco/, TEST_SET: val2017, TRAIN_SET: train2017, FLIP: true,
          ROT_FACTOR: 40, SCALE_FACTOR: 0.3}
MODEL:
  NAME: pose_resnet
  PRETRAINED: models/pytorch/imagenet/resnet50-19c8e357.pth
  STYLE: pytorch
  IMAGE_SIZE: [192, 256]
  NUM_JOINTS: 17
  EXTRA: {TARGET_TYPE: gaussian, HEATMAP_SIZE: [48, 64], SIGMA: 2, FINAL_CONV_KERNEL: 1,
          DECONV_WITH_BIAS: false, NUM_DECONV_LAYERS: 3, NUM_DECONV_FILTERS: [256, 256, 256],
          NUM_DECONV_KERNELS: [4, 4, 4], NUM_LAYERS: 50}
LOSS: {USE_TARGET_WEIGHT: true}
TRAIN: {BATCH_SIZE: 32, SHUFFLE: true, BEGIN_EPOCH: 0, END_EPOCH: 140, RESUME: false, OPTIMIZER: adam,
        LR: 0.001, LR_FACTOR: 0.1, LR_STEP: [90, 120], WD: 0.0001, GAMMA1: 0.99, GAMMA2: 0.0,
        MOMENTUM: 0.9, NESTEROV: false}
TEST: {BATCH_SIZE: 24, COCO_BBOX_FILE: data/coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json,
       BBOX_THRE: 1.0, FLIP_TEST: false, IMAGE_THRE: 0.0, IN_VIS_THRE: 0.2, MODEL_FILE: '', NMS_THRE: 1.0,
       OKS_THRE: 0.9, USE_GT_BBOX: true}
DEBUG: {DEBUG: true, SAVE_BATCH_IMAGES_GT: true, SAVE_BATCH_IMAGES_PRED: true, SAVE_HEATMAPS_GT: true,
        SAVE_HEATMAPS_PRED: true}
SAM: {METHOD: bsam}
"""


def test_the_first_simplebaseline_release_loads_with_its_batch_size_spelling(tmp_path):
    path = tmp_path / "256x192_d256x3_adam_lr1e-3.yaml"
    path.write_text(MSRA_YAML)
    cfg = load(path)
    assert (cfg.TRAIN.BATCH_SIZE_PER_GPU, cfg.TEST.BATCH_SIZE_PER_GPU) == (32, 24)
    assert "BATCH_SIZE" not in cfg.TRAIN  # one name per setting in the saved config
    assert load(path, ["TRAIN.BATCH_SIZE", "8"]).TRAIN.BATCH_SIZE_PER_GPU == 8
    assert load(path, ["TRAIN.BATCH_SIZE_PER_GPU", "4"]).TRAIN.BATCH_SIZE_PER_GPU == 4
    assert PoseTask(cfg).crop_settings().heatmap_size == (48, 64)
    with pytest.raises(ConfigError, match="MODEL.STYLE: 'caffe' is not allowed"):
        load(path, ["MODEL.STYLE", "caffe"])
    both = tmp_path / "both.yaml"
    both.write_text(MSRA_YAML.replace("TRAIN: {BATCH_SIZE: 32,", "TRAIN: {BATCH_SIZE: 32, BATCH_SIZE_PER_GPU: 16,"))
    with pytest.raises(ConfigError, match="TRAIN.BATCH_SIZE and TRAIN.BATCH_SIZE_PER_GPU are the same setting"):
        load(both)


def test_the_older_simplebaseline_spelling_under_model_extra_is_honoured():
    cfg = make_config({"MODEL": {"IMAGE_SIZE": [64, 96], "HEATMAP_SIZE": [48, 64],
                                 "EXTRA": {"HEATMAP_SIZE": [16, 24], "SIGMA": 1.5, "TARGET_TYPE": "gaussian",
                                           "NUM_LAYERS": 18}}}, task="pose")
    settings = PoseTask(cfg).crop_settings()
    assert settings.heatmap_size == (16, 24) and settings.sigma == 1.5
    assert PoseTask(cfg).build_model()(__import__("torch").zeros(1, 3, 96, 64)).shape[-2:] == (24, 16)


def test_typos_and_impossible_values_are_config_errors():
    with pytest.raises(ConfigError, match="SCALE_FACTOR"):
        make_config({"DATASET": {"SCALE_FACTR": 0.3}}, task="pose")
    with pytest.raises(ConfigError, match="OKS_THRE"):
        make_config({"TEST": {"OKS_THRE": 2.0}}, task="pose")
    with pytest.raises(ConfigError, match="IMAGE_SIZE"):
        make_config({"MODEL": {"IMAGE_SIZE": [192]}}, task="pose")


def test_the_three_coco_configs_differ_only_in_the_sam_section():
    docs = {name: yaml.safe_load((REPO / "configs" / f"pose_{name}.yaml").read_text())
            for name in ("bsam", "adam", "sam")}
    assert {d["SAM"]["METHOD"] for d in docs.values()} == {"bsam", "none", "sam"}
    without_sam = [{k: v for k, v in d.items() if k != "SAM"} for d in docs.values()]
    assert without_sam[0] == without_sam[1] == without_sam[2]
    cfg = load(REPO / "configs" / "pose_bsam.yaml")
    m, t = cfg.MODEL, cfg.TRAIN
    assert (m.EXTRA.NUM_LAYERS, m.IMAGE_SIZE, m.HEATMAP_SIZE, m.SIGMA) == (50, [192, 256], [48, 64], 2)
    assert (m.EXTRA.NUM_DECONV_FILTERS, m.EXTRA.NUM_DECONV_KERNELS) == ([256] * 3, [4] * 3)
    assert (t.OPTIMIZER, t.LR, t.LR_STEP, t.END_EPOCH, t.BATCH_SIZE_PER_GPU) == ("adam", 0.001, [90, 120], 140, 32)
    assert (cfg.DATASET.ROT_FACTOR, cfg.DATASET.SCALE_FACTOR, cfg.DATASET.FLIP) == (40, 0.3, True)
    assert (cfg.TEST.FLIP_TEST, cfg.TEST.USE_GT_BBOX, cfg.TEST.OKS_THRE, cfg.TEST.IN_VIS_THRE) == (True, False, 0.9, 0.2)
    for name in ("demo/pose_bsam_demo.yaml", "demo/pose_coco_sample_tiny.yaml"):
        assert load(REPO / "configs" / name).TASK == "pose"
