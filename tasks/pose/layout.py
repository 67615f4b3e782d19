"""Where the COCO files of a config live (the SimpleBaseline/HRNet ``data/coco`` layout).

::

    ROOT/annotations/person_keypoints_{TRAIN_SET,TEST_SET}.json
    ROOT/images/{TRAIN_SET,TEST_SET}/*.jpg
    ROOT/person_detection_results/*.json      (TEST.COCO_BBOX_FILE)

Relative paths are resolved by ``Config.resolve_path`` (working directory first, then
beside the config file).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.engine.errors import UserError

DEMO_HINT = ("or run the synthetic demo instead: `make demo` "
             "(python tools/train.py --cfg configs/demo/pose_bsam_demo.yaml)")


@dataclass
class SplitFiles:
    annotations: Path
    images: Path


def split_files(root: Path, split: str, ann_file: str = "") -> SplitFiles:
    ann = root / ann_file if ann_file else root / "annotations" / f"person_keypoints_{split}.json"
    return SplitFiles(annotations=ann, images=root / "images" / split)


def check_split(files: SplitFiles, root: Path, split: str) -> None:
    """A :class:`UserError` that says what to download and where, when a split is missing."""
    missing = [str(p) for p in (files.annotations, files.images) if not p.exists()]
    if not missing:
        return
    raise UserError(
        f"COCO {split} not found under DATASET.ROOT={root} (missing {', '.join(missing)}); download "
        f"{split}.zip and annotations_trainval2017.zip from https://cocodataset.org/#download and "
        f"unpack them as {root}/images/{split}/ and {root}/annotations/person_keypoints_{split}.json "
        f"(person boxes for detection-box testing go to {root}/person_detection_results/), {DEMO_HINT}")
