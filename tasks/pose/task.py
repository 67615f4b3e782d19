"""The COCO top-down pose task (SimpleBaseline) on the shared engine.

``POSE_SCHEMA`` declares every key of the SimpleBaseline/HRNet COCO experiment files, so
those files load as they are (the task is inferred from their ``MODEL.NAME``, with an added
``SAM`` section); the suite's own additions are marked.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from tasks.engine.defaults import DEBUG_PICTURES, SEED_RANGE
from tasks.engine.distributed import gather_to_main
from tasks.engine.errors import UserError
from tasks.engine.io import save_json
from tasks.engine.schema import Key
from tasks.engine.task import Task, register

from .dataset import CropSettings, PoseDataset
from .decode import decode_heatmaps, predict_heatmaps
from .drawing import draw_evaluation_pictures
from .evaluation import coco_keypoint_metrics, coco_results
from .layout import check_split, split_files
from .loss import joints_mse_loss
from .hrnet import STAGE_RECORDS, STAGES as HRNET_STAGES, PoseHRNet, branch_mismatch
from .model import BUILDERS, HEAD_PREFIXES, RESNETS, build_pose_model, from_reference_layout
from .coco_people import detection_records, ground_truth_records, images_read, load_coco
from .skeleton import NUM_JOINTS

log = logging.getLogger("bsam.pose")  # a child of the run logger, so it lands in train.log


def _non_empty(values: list) -> bool:
    return len(values) > 0


def _deconv_kernels(values: list) -> bool:
    return len(values) > 0 and all(k in (2, 3, 4) for k in values)

_SIZE = dict(type=list[int], length=(2,), gt=0, le=4096, hint="[width, height]")
_UNIT = dict(ge=0, le=1)

POSE_SCHEMA = {
    "TASK": "pose",
    "DATASET": {
        "DATASET": Key("coco", choices=("coco",)),
        "ROOT": "data/coco",
        "TRAIN_SET": "train2017",
        "TEST_SET": "val2017",
        # image files named by the json (HRNet's 'zip' is not read)
        "DATA_FORMAT": Key("jpg", choices=("jpg", "png")),
        "COLOR_RGB": Key(True),
        "FLIP": Key(True),
        "ROT_FACTOR": Key(40.0, ge=0, le=180, hint="degrees"),
        "SCALE_FACTOR": Key(0.3, ge=0, lt=1),
        "NUM_JOINTS_HALF_BODY": Key(8, ge=0, le=NUM_JOINTS),
        "PROB_HALF_BODY": Key(0.0, **_UNIT),
        # suite additions
        "TEST_ANN_FILE": Key(""),  # annotation json of TEST_SET relative to ROOT ('' = the standard name)
        "PHOTOMETRIC": Key(False),  # albumentations colour augmentation of training crops (not in the reference)
        "SYNTHETIC": Key(False),  # ROOT holds the synthetic demo set (python -m tasks.pose.synthetic --cfg ...)
        "SYNTHETIC_IMAGES": Key(800, ge=1, le=100_000),  # training images of the synthetic set
        "SYNTHETIC_VAL_IMAGES": Key(100, ge=1, le=100_000),
        "SYNTHETIC_SEED": Key(0, **SEED_RANGE),
    },
    "MODEL": {
        "NAME": Key("pose_resnet", choices=tuple(BUILDERS)),
        "PRETRAINED": "",
        "STYLE": Key("pytorch", choices=("pytorch",)),  # torchvision ResNets; 'caffe' ones are not built
        "INIT_WEIGHTS": True,
        "NUM_JOINTS": Key(NUM_JOINTS, choices=(NUM_JOINTS,)),
        "TARGET_TYPE": Key("gaussian", choices=("gaussian",)),
        "IMAGE_SIZE": Key([192, 256], **_SIZE),
        "HEATMAP_SIZE": Key([48, 64], **_SIZE),
        "SIGMA": Key(2.0, gt=0),
        "UNBIASED_ENCODING": Key(False),  # suite addition: targets at the sub-pixel joint (DARK)
        "EXTRA": {
            "FINAL_CONV_KERNEL": Key(1, choices=(1, 3)),
            "DECONV_WITH_BIAS": Key(False),
            "NUM_DECONV_LAYERS": Key(3, ge=1),
            "NUM_DECONV_FILTERS": Key([256, 256, 256], gt=0, le=4096,
                                      check=(_non_empty, "a non-empty list of integers from 1 to 4096")),
            "NUM_DECONV_KERNELS": Key([4, 4, 4], check=(_deconv_kernels, "a non-empty list of 2, 3 or 4")),
            "NUM_LAYERS": Key(50, choices=sorted(RESNETS)),
            # older SimpleBaseline files keep these three under EXTRA; they win when set
            "TARGET_TYPE": Key(None, type=str),
            "HEATMAP_SIZE": Key(None, **_SIZE),
            "SIGMA": Key(None, type=float, gt=0),
            # pose_hrnet (tasks/pose/hrnet.py): the top-level layers MODEL.PRETRAINED initialises
            # (null: all, as HRNet's ['*']) and the stages as HRNet's experiment files give them
            "PRETRAINED_LAYERS": Key(None, type=list[str]),
            **{stage: Key(None, type=dict, keys=STAGE_RECORDS[stage],
                          check=(lambda v, s=stage: branch_mismatch(v, s) is None,
                                 "NUM_BLOCKS and NUM_CHANNELS with one entry per branch (NUM_BRANCHES)"))
               for stage in HRNET_STAGES},
        },
    },
    "LOSS": {"USE_TARGET_WEIGHT": Key(True)},
    "TRAIN": {
        "BATCH_SIZE_PER_GPU": 32,
        "END_EPOCH": 140,
        "OPTIMIZER": "adam",
        "LR": 0.001,
        "LR_STEP": [90, 120],
        "WD": 0.0001,
    },
    "TEST": {
        "BATCH_SIZE_PER_GPU": 32,
        "COCO_BBOX_FILE": Key(""),
        "BBOX_THRE": Key(1.0, **_UNIT),  # reference key, unused there too
        "IMAGE_THRE": Key(0.0, **_UNIT),  # minimum detection score of a person box
        "IN_VIS_THRE": Key(0.2, **_UNIT),  # joints above this score make the pose score
        "NMS_THRE": Key(1.0, **_UNIT),  # reference key, unused there too
        "OKS_THRE": Key(0.9, **_UNIT),  # OKS-NMS threshold
        "USE_GT_BBOX": Key(True),
        "FLIP_TEST": Key(True),
        # quarter-pixel refinement; suite addition: dark (DARK's Taylor step)
        "POST_PROCESS": Key(True, choices=(True, False, "dark")),
        # suite addition: Gaussian blur before the DARK step
        "BLUR_KERNEL": Key(11, check=(lambda v: v > 0 and v % 2 == 1, "an odd integer > 0")),
        "SHIFT_HEATMAP": Key(True),
        "NUM_DRAW": Key(8, ge=0, run_only=True),  # suite addition: pose pictures written after evaluation
    },
    "DEBUG": {
        "SAVE_BATCH_IMAGES_GT": DEBUG_PICTURES,
        "SAVE_BATCH_IMAGES_PRED": DEBUG_PICTURES,
        "SAVE_HEATMAPS_GT": DEBUG_PICTURES,
        "SAVE_HEATMAPS_PRED": DEBUG_PICTURES,
    },
}


def model_geometry(cfg):
    """(heatmap size, sigma) honouring the older SimpleBaseline spelling under MODEL.EXTRA."""
    extra = cfg.MODEL.EXTRA
    heatmap = extra.HEATMAP_SIZE if extra.HEATMAP_SIZE is not None else cfg.MODEL.HEATMAP_SIZE
    sigma = extra.SIGMA if extra.SIGMA is not None else cfg.MODEL.SIGMA
    return heatmap, sigma


@register("pose")
class PoseTask(Task):
    schema = POSE_SCHEMA
    model_names = ("pose_resnet", "pose_hrnet")
    main_metric = "AP"
    higher_is_better = True

    # -- building -----------------------------------------------------------------------
    def build_model(self, pretrained=True):
        cfg = self.cfg
        model = build_pose_model(cfg, model_geometry(cfg)[0])
        if pretrained and cfg.MODEL.PRETRAINED and cfg.MODEL.INIT_WEIGHTS:
            from tasks.engine.weights import load_lenient, read_pretrained

            state = read_pretrained(cfg.MODEL.PRETRAINED)
            source = f"MODEL.PRETRAINED {cfg.MODEL.PRETRAINED}"
            if isinstance(model, PoseHRNet):
                from .hrnet_weights import load_layers

                report = load_layers(model, state, cfg.MODEL.EXTRA.PRETRAINED_LAYERS, source)
                log.info("model initialised from %s: %s", cfg.MODEL.PRETRAINED, report.summary())
                return model
            state = from_reference_layout(state)
            if any(k.startswith(HEAD_PREFIXES) for k in state):  # a whole pose model
                load_lenient(model, state, skip_prefixes=(), source=source)
                log.info("model initialised from %s (backbone and head)", cfg.MODEL.PRETRAINED)
            else:  # ImageNet weights of the ResNet
                skipped = load_lenient(model.backbone, state, skip_prefixes=("fc.",), source=source)
                log.info("backbone initialised from %s (skipped %d head keys)", cfg.MODEL.PRETRAINED, len(skipped))
        return model

    def crop_settings(self) -> CropSettings:
        """The sample pipeline's settings (the schema guarantees their types)."""
        cfg, d = self.cfg, self.cfg.DATASET
        heatmap, sigma = model_geometry(cfg)
        return CropSettings(
            image_size=tuple(cfg.MODEL.IMAGE_SIZE), heatmap_size=tuple(heatmap), sigma=sigma,
            color_rgb=d.COLOR_RGB, flip=d.FLIP, scale_factor=d.SCALE_FACTOR, rot_factor=d.ROT_FACTOR,
            half_body_prob=d.PROB_HALF_BODY, half_body_min_joints=d.NUM_JOINTS_HALF_BODY,
            photometric=d.PHOTOMETRIC, unbiased_encoding=cfg.MODEL.UNBIASED_ENCODING)

    def data_root(self) -> Path:
        d = self.cfg.DATASET
        root = self.cfg.resolve_path(d.ROOT)
        if d.SYNTHETIC:
            from .synthetic import check_synthetic

            check_synthetic(self.cfg, root)
        return root

    def build_datasets(self):
        cfg, d = self.cfg, self.cfg.DATASET
        root = self.data_root()
        settings = self.crop_settings()
        aspect = settings.image_size[0] / settings.image_size[1]
        train_files = split_files(root, d.TRAIN_SET)
        check_split(train_files, root, d.TRAIN_SET)
        train_coco = load_coco(train_files.annotations)
        train_records = ground_truth_records(train_coco, train_files.images, aspect, NUM_JOINTS, f"train {d.TRAIN_SET}")
        if not train_records:
            raise UserError(f"{train_files.annotations} has no usable labelled person (see the log for "
                            "what was skipped); check DATASET.ROOT and DATASET.TRAIN_SET")
        train = PoseDataset(train_records, settings, train=True, coco=train_coco)
        return train, self.build_val_dataset(root)

    def build_eval_dataset(self) -> PoseDataset:
        return self.build_val_dataset()

    def build_val_dataset(self, root: Path | None = None) -> PoseDataset:
        """The evaluation set, in ground-truth-box or detection-box mode (TEST.USE_GT_BBOX)."""
        cfg, d = self.cfg, self.cfg.DATASET
        root = root or self.data_root()
        settings = self.crop_settings()
        aspect = settings.image_size[0] / settings.image_size[1]
        files = split_files(root, d.TEST_SET, d.TEST_ANN_FILE)
        check_split(files, root, d.TEST_SET)
        coco = load_coco(files.annotations)
        if cfg.TEST.USE_GT_BBOX:
            records = ground_truth_records(coco, files.images, aspect, NUM_JOINTS, f"val {d.TEST_SET}")
        else:
            if not cfg.TEST.COCO_BBOX_FILE:
                raise UserError("TEST.USE_GT_BBOX is false but TEST.COCO_BBOX_FILE is empty; give the person "
                                "detection results json (e.g. data/coco/person_detection_results/"
                                "COCO_val2017_detections_AP_H_56_person.json)")
            det = cfg.resolve_path(cfg.TEST.COCO_BBOX_FILE)
            records = detection_records(det, coco, files.images, aspect, NUM_JOINTS, cfg.TEST.IMAGE_THRE)
        read = images_read(coco, files.images, f"val {d.TEST_SET}")
        return PoseDataset(records, settings, train=False, coco=coco, image_ids=read)

    # -- training -----------------------------------------------------------------------
    def loss(self, model, batch):
        inputs, target, target_weight = batch[0], batch[1], batch[2]
        output = model(inputs).float()
        weight = target_weight if self.cfg.LOSS.USE_TARGET_WEIGHT else None
        return joints_mse_loss(output, target.float(), weight), {}

    # -- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def predict_loader(self, model, loader):
        """Image-space poses ``(N, J, 3)``, image ids, box scores and box areas of every
        person in ``loader`` (flip test, refinement and heatmap shift as TEST says)."""
        t = self.cfg.TEST
        device = next(model.parameters()).device
        poses, image_ids, scores, areas = [], [], [], []
        for batch in loader:
            inputs, meta = batch[0].to(device, non_blocking=True), batch[3]
            heatmaps = predict_heatmaps(model, inputs, t.FLIP_TEST, t.SHIFT_HEATMAP).float().cpu().numpy()
            coords, maxvals = decode_heatmaps(heatmaps, _np(meta["center"]), _np(meta["scale"]), t.POST_PROCESS,
                                              t.BLUR_KERNEL)
            poses.append(np.concatenate([coords, maxvals], axis=2))
            image_ids += _np(meta["image_id"]).tolist()
            scores += _np(meta["score"]).tolist()
            areas += _np(meta["area"]).tolist()
        if not poses:
            return np.zeros((0, NUM_JOINTS, 3)), [], [], []
        return np.concatenate(poses), image_ids, scores, areas

    @torch.no_grad()
    def evaluate(self, model, loader, out_dir):
        """COCO keypoint AP/AR.  Distributed, each rank predicts its shard of the val set and
        rank 0 scores the gathered predictions (in val-set order); the others return ``{}``."""
        t = self.cfg.TEST
        dataset = _unwrap(loader.dataset)
        shards = gather_to_main(self.predict_loader(model, loader))
        if shards is None:
            return {}
        poses = np.concatenate([shard[0] for shard in shards])
        image_ids, scores, areas = ([v for shard in shards for v in shard[i]] for i in (1, 2, 3))
        results = coco_results(image_ids, poses, scores, areas, t.IN_VIS_THRE, t.OKS_THRE)
        metrics = coco_keypoint_metrics(dataset.coco, results, dataset.image_ids)
        if out_dir is not None:
            out_dir = Path(out_dir)
            save_json(results, out_dir / f"keypoints_{self.cfg.DATASET.TEST_SET}_results.json")
            if t.NUM_DRAW > 0:
                paths = {r.image_id: r.image_path for r in dataset.records}
                draw_evaluation_pictures(dataset.coco, results, paths, out_dir / "pose_pictures",
                                         t.NUM_DRAW, t.IN_VIS_THRE)
        return metrics

    # -- trained models -----------------------------------------------------------------
    def predict_image(self, model, image, boxes, out_dir) -> dict:
        """Poses of the person ``boxes`` on a picture, drawn and saved (``predict.py``)."""
        from .predict import pose_report

        return pose_report(model, self.cfg, image, boxes, out_dir)

    def export(self, model, path, images=None, min_agreement=None) -> dict:
        """Float ONNX of the heatmap model, checked on validation crops (tasks/pose/export.py)."""
        from tasks.engine.exporting import checked_export

        from .export import export_pose

        return checked_export(export_pose, model, self.cfg, self.build_val_dataset(), path, images=images or 16,
                              agreement=min_agreement)


def _np(x) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _unwrap(dataset):
    while not isinstance(dataset, PoseDataset) and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset
