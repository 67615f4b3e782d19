"""A SimpleBaseline experiment file trains as the reference does (Adam(lr): betas (0.9,
0.999), no weight decay; no colour jitter), the keys it treats differently are named, and
the reference's own checkpoints load through --checkpoint and MODEL.PRETRAINED."""
import torch

from tasks.engine.config import load, make_config
from tasks.engine.optimization import build_optimizer, optimizer_summary
from tasks.engine.reference_keys import reference_key_notes
from tasks.pose.task import PoseTask

# microsoft/human-pose-estimation.pytorch experiments/coco/resnet50/256x192_d256x3_adam_lr1e-3.yaml
# (its keys and values), with only TASK and a SAM section added.
REFERENCE_YAML = """
TASK: pose
GPUS: '0'
DATA_DIR: ''
OUTPUT_DIR: 'output'
LOG_DIR: 'log'
WORKERS: 4
PRINT_FREQ: 100
DATASET: {DATASET: 'coco', ROOT: 'data/coco/', TEST_SET: 'val2017', TRAIN_SET: 'train2017',
          FLIP: true, ROT_FACTOR: 40, SCALE_FACTOR: 0.3}
MODEL:
  NAME: 'pose_resnet'
  PRETRAINED: 'models/pytorch/imagenet/resnet50-19c8e357.pth'
  IMAGE_SIZE: [192, 256]
  NUM_JOINTS: 17
  EXTRA: {TARGET_TYPE: 'gaussian', HEATMAP_SIZE: [48, 64], SIGMA: 2, FINAL_CONV_KERNEL: 1,
          DECONV_WITH_BIAS: false, NUM_DECONV_LAYERS: 3, NUM_DECONV_FILTERS: [256, 256, 256],
          NUM_DECONV_KERNELS: [4, 4, 4], NUM_LAYERS: 50}
LOSS: {USE_TARGET_WEIGHT: true}
TRAIN: {BATCH_SIZE: 32, SHUFFLE: true, BEGIN_EPOCH: 0, END_EPOCH: 140, RESUME: false,
        OPTIMIZER: 'adam', LR: 0.001, LR_FACTOR: 0.1, LR_STEP: [90, 120], WD: 0.0001,
        GAMMA1: 0.99, GAMMA2: 0.0, MOMENTUM: 0.9, NESTEROV: false}
TEST: {BATCH_SIZE: 32, COCO_BBOX_FILE: 'data/coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json',
       BBOX_THRE: 1.0, FLIP_TEST: false, IMAGE_THRE: 0.0, IN_VIS_THRE: 0.2, MODEL_FILE: '',
       NMS_THRE: 1.0, OKS_THRE: 0.9, USE_GT_BBOX: true}
DEBUG: {DEBUG: true, SAVE_BATCH_IMAGES_GT: true, SAVE_BATCH_IMAGES_PRED: true,
        SAVE_HEATMAPS_GT: true, SAVE_HEATMAPS_PRED: true}
SAM: {METHOD: bsam, RHO: 0.05, RHO_MIN: 0.05, RHO_MIN_END: 0.0}
"""


def test_a_reference_file_gives_the_references_adam_and_names_what_differs(tmp_path):
    path = tmp_path / "256x192_d256x3_adam_lr1e-3.yaml"
    path.write_text(REFERENCE_YAML)
    cfg = load(path)
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt, _, _ = build_optimizer(cfg, params, None, iters_per_epoch=10)
    assert opt.base_optimizer.defaults["betas"] == (0.9, 0.999)
    assert opt.base_optimizer.defaults["weight_decay"] == 0.0
    summary = optimizer_summary(cfg, opt)
    assert "betas=(0.9, 0.999)" in summary and "weight_decay=0" in summary
    assert "bsam rho=0.05" in summary
    notes = " ".join(reference_key_notes(cfg))
    for key in ("GPUS", "LOG_DIR", "TRAIN.GAMMA1", "TRAIN.GAMMA2", "TRAIN.WD", "DEBUG.DEBUG",
                "DEBUG.SAVE_HEATMAPS_PRED"):
        assert key in notes
    assert "TRAIN.LR " not in notes and "MODEL." not in notes


def test_tool_keys_set_adam_betas_and_adamw_weight_decay():
    cfg = make_config({"TRAIN": {"OPTIMIZER": "adamw", "BETAS": [0.8, 0.99], "WD": 0.01}}, task="pose")
    opt, _, _ = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(3))], None, iters_per_epoch=1)
    assert (opt.defaults["betas"], opt.defaults["weight_decay"]) == ((0.8, 0.99), 0.01)
    assert reference_key_notes(cfg) == []


def test_no_colour_jitter_unless_asked():
    assert make_config({}, task="pose").DATASET.PHOTOMETRIC is False
    assert PoseTask(make_config({}, task="pose")).crop_settings().photometric is False


TINY_MODEL = {"MODEL": {"IMAGE_SIZE": [64, 96], "HEATMAP_SIZE": [8, 12],
                        "EXTRA": {"NUM_LAYERS": 18, "NUM_DECONV_FILTERS": [8, 8], "NUM_DECONV_KERNELS": [4, 4],
                                  "NUM_DECONV_LAYERS": 2}}}


def reference_layout(model) -> dict:
    """The model's weights named as the reference's PoseResNet names them (ResNet layers at
    the top level), saved as its release saves them (a plain state_dict)."""
    return {k.removeprefix("backbone."): v.clone() for k, v in model.state_dict().items()}


def test_a_checkpoint_in_the_reference_key_layout_loads(tmp_path):
    torch.manual_seed(0)
    trained = PoseTask(make_config(TINY_MODEL, task="pose")).build_model()
    for p in trained.parameters():
        p.data.normal_()
    state = reference_layout(trained)
    assert "layer1.0.conv1.weight" in state and "final_layer.weight" in state
    path = tmp_path / "pose_resnet_18_96x64.pth.tar"
    torch.save(state, path)

    fresh = PoseTask(make_config(TINY_MODEL, task="pose")).load_trained(path)  # tools' --checkpoint
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)

    with_pretrained = {**TINY_MODEL, "MODEL": {**TINY_MODEL["MODEL"], "PRETRAINED": str(path)}}
    initialised = PoseTask(make_config(with_pretrained, task="pose")).build_model()
    for (name, a), b in zip(trained.state_dict().items(), initialised.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
