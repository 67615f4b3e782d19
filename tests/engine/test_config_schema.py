"""One record per key: hostile values (ranges, list items, epochs that train nothing) are one
line naming the key, records merge the way tasks declare them, and a config without TASK is
read as the task its MODEL.NAME belongs to."""
from pathlib import Path

import pytest

import tools.train
from reliability_helpers import one_error, run_main
from tasks.engine import task as task_registry
from tasks.engine.config import ConfigError, load, make_config
from tasks.engine.reference_keys import reference_key_notes
from tasks.engine.resume import config_changes
from tasks.engine.schema import Key, merge

FIXTURES = Path(__file__).resolve().parents[1] / "pose" / "fixtures"


@pytest.mark.parametrize("task, key, value, expected", [
    ("classification", "TRAIN.LR_END", "-0.2", "TRAIN.LR_END: -0.2 is not allowed; expected a number >= 0"),
    ("classification", "TRAIN.WARMUP_EPOCHS", "-1", "expected a number >= 0"),
    ("classification", "TRAIN.LR_FACTOR", "0", "expected a number > 0"),
    ("classification", "TRAIN.BEGIN_EPOCH", "-1", "TRAIN.BEGIN_EPOCH: -1 is not allowed; expected an integer >= 0"),
    ("classification", "TRAIN.MOMENTUM", "1.5", "expected a number in [0, 1)"),
    ("classification", "TRAIN.CLIP_GRAD_NORM", "-1", "expected a number >= 0 (0 = no clipping)"),
    ("classification", "SAM.RHO_MIN_END", "-0.01", "SAM.RHO_MIN_END: -0.01 is not allowed"),
    ("classification", "SEED", "-3", "SEED: -3 is not allowed; expected an integer from 0 to 4294967295"),
    ("classification", "DATASET.LABEL_NOISE_SEED", "1e30", "expected an integer, got 1e+30"),
    ("classification", "TRAIN.LR_STEP", "[1, a]", "TRAIN.LR_STEP: expected a list of numbers, got [1, 'a']"),
    ("classification", "TRAIN.LR_STEP", "[5, -2]", "TRAIN.LR_STEP: [5, -2] is not allowed; expected a list of numbers >= 0"),
    ("classification", "TRAIN.LR_STEP", "[1, true]", "expected a list of numbers"),
    ("classification", "DATASET.MEAN", "[0.5, a, 0.5]", "DATASET.MEAN: expected a list of numbers"),
    ("classification", "DATASET.STD", "[0.2, a, 0.2]", "DATASET.STD: expected a list of numbers"),
    ("classification", "DATASET.STD", "[0.2, 0, 0.2]", "expected [] or a list of three numbers > 0"),
    ("classification", "DATASET.MEAN", "[0.5, .inf, 0.5]", "DATASET.MEAN: inf is not a finite number"),
    ("classification", "TRAIN.BETAS", "[0.9, x]", "TRAIN.BETAS: expected a list of numbers"),
    ("classification", "GPUS", "[0, a]", "GPUS: expected a list or a string or an integer (or null)"),
    ("qat", "QUANT.SKIP", "[conv1, 2]", "QUANT.SKIP: expected a list of strings"),
    ("pose", "MODEL.IMAGE_SIZE", "[192, 256.5]", "MODEL.IMAGE_SIZE: expected a list of integers"),
    ("pose", "MODEL.EXTRA.HEATMAP_SIZE", "[48, 0]", "expected a list of two integers from 1 to 4096 ([width, height])"),
    ("pose", "MODEL.EXTRA.NUM_DECONV_KERNELS", "[4, 5, 4]", "expected a non-empty list of 2, 3 or 4"),
    ("pose", "MODEL.EXTRA.FINAL_CONV_KERNEL", "2", "choose one of 1, 3"),
    ("pose", "MODEL.EXTRA.SIGMA", "-2", "MODEL.EXTRA.SIGMA: -2.0 is not allowed; expected a number > 0"),
    ("pose", "MODEL.EXTRA.PRETRAINED_LAYERS", "[conv1, 3]", "expected a list of strings (or null)"),
    ("pose", "DATASET.NUM_JOINTS_HALF_BODY", "-1", "expected an integer from 0 to 17"),
    ("pose", "MODEL.IMAGE_SIZE", "[192, 1000000]", "expected a list of two integers from 1 to 4096"),
    ("pose", "MODEL.EXTRA.NUM_DECONV_FILTERS", "[256, 100000]", "a non-empty list of integers from 1 to 4096"),
    ("pose", "DATASET.SYNTHETIC_IMAGES", "1000000000", "expected an integer from 1 to 100000"),
])
def test_meaningless_values_are_one_line_errors(task, key, value, expected):
    with pytest.raises(ConfigError) as err:
        make_config(task=task, opts=[key, value])
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_run_that_would_train_no_epoch_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"TRAIN.END_EPOCH: 5 is not above TRAIN.BEGIN_EPOCH \(5\): no epoch"):
        make_config({"TRAIN": {"BEGIN_EPOCH": 5, "END_EPOCH": 5}})
    assert make_config({"TRAIN": {"BEGIN_EPOCH": 4, "END_EPOCH": 5}}).TRAIN.BEGIN_EPOCH == 4
    path = tmp_path / "nothing.yaml"
    path.write_text("TASK: classification\nTRAIN: {BEGIN_EPOCH: 3, END_EPOCH: 2, LR_STEP: [1, a]}\n")
    one_error(*run_main(tools.train.main, "--cfg", path, capsys=capsys), "nothing.yaml", "TRAIN.LR_STEP")
    path.write_text("TASK: classification\nTRAIN: {BEGIN_EPOCH: 3, END_EPOCH: 2}\n")
    one_error(*run_main(tools.train.main, "--cfg", path, capsys=capsys), "nothing.yaml", "not above TRAIN.BEGIN_EPOCH")
    one_error(*run_main(tools.train.main, "--cfg", path, "--opts", "TRAIN.BEGIN_EPOCH", "0", "TRAIN.LR_END", "-0.2",
                        capsys=capsys), "nothing.yaml", "TRAIN.LR_END: -0.2 is not allowed")
    assert not (tmp_path / "output").exists()


def test_the_startup_line_says_how_the_task_was_read(tiny_cls_cfg, capsys):
    path = tiny_cls_cfg("no_task", TRAIN={"END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": 1})
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("TASK:")))
    assert run_main(tools.train.main, "--cfg", path, capsys=capsys)[0] == 0
    log = (path.parent / "out" / "classification" / "no_task" / "train.log").read_text()
    assert "reference keys applied differently or ignored: TASK (read as TASK classification from " \
           "MODEL.NAME cifar_resnet20: the config sets no TASK)" in log


def test_a_list_of_floats_keeps_what_was_written():
    cfg = make_config({"DATASET": {"MEAN": [0, 0.5, 1]}, "TRAIN": {"LR_STEP": [3, 4.5], "LR": 1}})
    assert cfg.DATASET.MEAN == [0, 0.5, 1] and type(cfg.DATASET.MEAN[0]) is int
    assert cfg.TRAIN.LR_STEP == [3, 4.5] and type(cfg.TRAIN.LR) is float


def test_records_merge_as_tasks_declare_them():
    base = {"TRAIN": {"LR": Key(0.1, ge=0), "BATCH": Key(32, ge=1, old=("B",))}}
    merged = merge(base, {"TRAIN": {"LR": 0.001, "NEW": Key([], type=list[str])}, "QUANT": {"BITS": 4}})
    assert list(merged["TRAIN"]) == ["LR", "BATCH", "NEW"] and list(merged) == ["TRAIN", "QUANT"]
    assert merged["TRAIN"]["LR"].default == 0.001 and merged["TRAIN"]["LR"].ge == 0  # the rule stays
    assert merged["QUANT"]["BITS"] == Key(4) and base["TRAIN"]["LR"].default == 0.1
    assert Key([1, 2.5]).type == list[float] and Key(["a"]).type == list[str]


def test_resume_compares_only_keys_that_change_the_training():
    stored = make_config(task="pose").to_dict()
    current = make_config(task="pose", opts=["TEST.NUM_DRAW", "2", "DEBUG.SAVE_HEATMAPS_GT", "true",
                                             "WORKERS", "0", "CUDNN.BENCHMARK", "false",
                                             "CUDNN.ENABLED", "false", "TRAIN.LR", "0.5"]).to_dict()
    assert config_changes(stored, current) == [("CUDNN.ENABLED", True, False), ("TRAIN.LR", 0.001, 0.5)]


# microsoft/human-pose-estimation.pytorch's experiments/coco/resnet50/256x192_d256x3_adam_lr1e-3.yaml,
# written here key for key and value for value (no TASK, no SAM: the file as published).
SIMPLEBASELINE = """
GPUS: '0'
DATA_DIR: ''
OUTPUT_DIR: 'output'
LOG_DIR: 'log'
WORKERS: 4
PRINT_FREQ: 100
DATASET: {DATASET: 'coco', ROOT: 'data/coco/', TEST_SET: 'val2017', TRAIN_SET: 'train2017', FLIP: true,
          ROT_FACTOR: 40, SCALE_FACTOR: 0.3}
MODEL:
  NAME: 'pose_resnet'
  PRETRAINED: 'models/pytorch/imagenet/resnet50-19c8e357.pth'
  IMAGE_SIZE: [192, 256]
  NUM_JOINTS: 17
  EXTRA: {TARGET_TYPE: 'gaussian', HEATMAP_SIZE: [48, 64], SIGMA: 2, FINAL_CONV_KERNEL: 1,
          DECONV_WITH_BIAS: false, NUM_DECONV_LAYERS: 3, NUM_DECONV_FILTERS: [256, 256, 256],
          NUM_DECONV_KERNELS: [4, 4, 4], NUM_LAYERS: 50}
LOSS: {USE_TARGET_WEIGHT: true}
TRAIN: {BATCH_SIZE: 32, SHUFFLE: true, BEGIN_EPOCH: 0, END_EPOCH: 140, RESUME: false, OPTIMIZER: 'adam',
        LR: 0.001, LR_FACTOR: 0.1, LR_STEP: [90, 120], WD: 0.0001, GAMMA1: 0.99, GAMMA2: 0.0,
        MOMENTUM: 0.9, NESTEROV: false}
TEST: {BATCH_SIZE: 32, COCO_BBOX_FILE: 'data/coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json',
       BBOX_THRE: 1.0, FLIP_TEST: false, IMAGE_THRE: 0.0, IN_VIS_THRE: 0.2, MODEL_FILE: '', NMS_THRE: 1.0,
       OKS_THRE: 0.9, USE_GT_BBOX: true}
DEBUG: {DEBUG: true, SAVE_BATCH_IMAGES_GT: true, SAVE_BATCH_IMAGES_PRED: true, SAVE_HEATMAPS_GT: true,
        SAVE_HEATMAPS_PRED: true}
"""


def simplebaseline_file(tmp_path) -> Path:
    path = tmp_path / "256x192_d256x3_adam_lr1e-3.yaml"
    path.write_text(SIMPLEBASELINE)
    return path


def test_reference_files_without_task_are_read_as_pose(tmp_path):
    hrnet = load(FIXTURES / "hrnet_w32_256x192_adam_lr1e-3.yaml")
    assert hrnet.TASK == "pose" and hrnet.DATASET.COLOR_RGB is True and hrnet.MODEL.NAME == "pose_hrnet"
    assert hrnet.MODEL.EXTRA.STAGE4["NUM_CHANNELS"] == [32, 64, 128, 256] and hrnet.GPUS == "(0,1,2,3)"
    assert reference_key_notes(hrnet)[0] == \
        "TASK (read as TASK pose from MODEL.NAME pose_hrnet: the config sets no TASK)"
    simple = load(simplebaseline_file(tmp_path))
    assert simple.TASK == "pose" and simple.TRAIN.BATCH_SIZE_PER_GPU == 32 and simple.DATASET.FLIP is True
    assert "read as TASK pose from MODEL.NAME pose_resnet" in reference_key_notes(simple)[0]
    assert load(FIXTURES / "hrnet_w32_256x192_adam_lr1e-3.yaml", ["TASK", "pose"]).task_note == ""


def test_an_unknown_key_in_a_file_without_task_says_how_it_was_read(tmp_path):
    path = simplebaseline_file(tmp_path)
    path.write_text(path.read_text().replace("FLIP: true,", "FLIPP: true,"))
    with pytest.raises(ConfigError, match=r"DATASET.FLIPP: unknown key \(did you mean DATASET.FLIP\?\).*"
                                          r"\(read as TASK pose from MODEL.NAME pose_resnet: the config sets no TASK\)"):
        load(path)
    other = tmp_path / "cls.yaml"
    other.write_text("DATASET: {FLIP: true}\n")
    with pytest.raises(ConfigError, match=r"DATASET.FLIP: unknown key.*\(read as TASK classification: the "
                                          r"config sets no TASK\)"):
        load(other)


def test_the_task_of_a_model_name():
    assert task_registry.infer("cifar_resnet20") == "classification"
    assert task_registry.infer("pose_hrnet") == "pose" and task_registry.infer("no_such_net") is None
    assert make_config({"MODEL": {"NAME": "cifar_resnet20"}}).TASK == "classification"
    assert make_config({"MODEL": {"NAME": "cifar_resnet20"}}, opts=["MODEL.NAME", "pose_resnet"]).TASK == "pose"


STAGE = {"NUM_BRANCHES": Key(1, ge=1), "BLOCK": Key("BASIC", choices=("BASIC", "BOTTLENECK")),
         "NUM_CHANNELS": Key([32], gt=0)}


@pytest.fixture
def staged_task(monkeypatch):
    """A task whose MODEL.EXTRA.STAGE2 is an optional section (null, or a mapping of STAGE's keys)."""
    monkeypatch.setattr(task_registry, "_REGISTRY", dict(task_registry._REGISTRY))

    @task_registry.register("staged")
    class Staged(task_registry.Task):
        schema = {"MODEL": {"EXTRA": {"STAGE2": Key(None, type=dict, keys=STAGE), "FREE": Key(None, type=dict)}}}
        model_names = ("staged_*",)

    return Staged


def test_an_optional_section_is_null_or_checked_with_its_defaults(staged_task):
    assert make_config(task="staged").MODEL.EXTRA.STAGE2 is None
    cfg = make_config({"MODEL": {"NAME": "staged_net", "EXTRA": {"STAGE2": {"NUM_BRANCHES": 2},
                                                                  "FREE": {"ANY": [1, "x"]}}}})
    assert cfg.TASK == "staged" and cfg.MODEL.EXTRA.STAGE2 == {"NUM_BRANCHES": 2, "BLOCK": "BASIC", "NUM_CHANNELS": [32]}
    assert cfg.MODEL.EXTRA.FREE.ANY == [1, "x"]
    again = make_config(task="staged", opts=["MODEL.EXTRA.STAGE2", "{BLOCK: BOTTLENECK}",
                                             "MODEL.EXTRA.STAGE2.NUM_CHANNELS", "[8, 16]"])
    assert again.MODEL.EXTRA.STAGE2.BLOCK == "BOTTLENECK" and again.MODEL.EXTRA.STAGE2.NUM_CHANNELS == [8, 16]
    for data, opts, expected in [
        ({"STAGE2": {"NUM_BRANCHS": 2}}, [], "MODEL.EXTRA.STAGE2.NUM_BRANCHS: unknown key (did you mean "
                                             "MODEL.EXTRA.STAGE2.NUM_BRANCHES?)"),
        ({"STAGE2": {"BLOCK": "BASICC"}}, [], "MODEL.EXTRA.STAGE2.BLOCK: 'BASICC' is not allowed"),
        ({"STAGE2": {"NUM_CHANNELS": [32, -1]}}, [], "expected a list of integers > 0"),
        ({"STAGE2": 3}, [], "MODEL.EXTRA.STAGE2: expected a section (mapping) (or null), got 3"),
        ({}, ["MODEL.EXTRA.STAGE2.BLOCK", "BASIC"], "MODEL.EXTRA.STAGE2 is null; give it as a whole"),
    ]:
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
            make_config({"MODEL": {"EXTRA": data}}, task="staged", opts=opts)
    stored = make_config({"MODEL": {"EXTRA": {"STAGE2": {"NUM_BRANCHES": 2}}}}, task="staged").to_dict()
    changed = make_config({"MODEL": {"EXTRA": {"STAGE2": {"NUM_BRANCHES": 3}}}}, task="staged").to_dict()
    assert config_changes(stored, changed) == [("MODEL.EXTRA.STAGE2.NUM_BRANCHES", 2, 3)]
