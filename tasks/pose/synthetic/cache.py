"""Make a whole synthetic set once and reuse it: the marker of its parameters, the check a run
does, and the atomic generation."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from tasks.engine.errors import UserError

from .coco_files import GENERATOR_VERSION, write_split

log = logging.getLogger("bsam.pose")  # a child of the run logger, so it lands in train.log

MARKER = "SYNTHETIC.json"

#: marker field -> the config key that sets it (for the messages)
_MARKER_KEYS = {"version": "the generator version", "train_split": "DATASET.TRAIN_SET",
                "val_split": "DATASET.TEST_SET", "train_images": "DATASET.SYNTHETIC_IMAGES",
                "val_images": "DATASET.SYNTHETIC_VAL_IMAGES", "seed": "DATASET.SYNTHETIC_SEED"}


def wanted_marker(train_split: str, val_split: str, train_images: int, val_images: int, seed: int) -> dict:
    """What ``MARKER`` records: everything the generated files are a function of."""
    return {"version": GENERATOR_VERSION, "train_split": train_split, "val_split": val_split,
            "train_images": train_images, "val_images": val_images, "seed": seed}


def marker_of_config(cfg) -> dict:
    d = cfg.DATASET
    return wanted_marker(d.TRAIN_SET, d.TEST_SET, int(d.SYNTHETIC_IMAGES), int(d.SYNTHETIC_VAL_IMAGES),
                         int(d.SYNTHETIC_SEED))


def mismatch(root: Path, wanted: dict) -> str | None:
    """Why ``root`` does not hold exactly the complete set ``wanted`` (``None`` when it does)."""
    marker = root / MARKER
    if not marker.is_file():
        return "holds no synthetic set" if root.exists() else "does not exist"
    try:
        found = json.loads(marker.read_text())
    except ValueError:
        found = {}
    if not isinstance(found, dict):
        found = {}
    differ = [f"{_MARKER_KEYS[k]} {found.get(k)} (wanted {v})" for k, v in wanted.items() if found.get(k) != v]
    if differ:
        return "holds a synthetic set made with " + ", ".join(differ)
    for split, count in ((wanted["train_split"], wanted["train_images"]), (wanted["val_split"], wanted["val_images"])):
        files = [root / "annotations" / f"person_keypoints_{split}.json",
                 root / "person_detection_results" / f"synthetic_{split}_detections.json"]
        missing = [str(f.relative_to(root)) for f in files if not f.is_file()]
        if missing:
            return f"holds an incomplete synthetic set (missing {', '.join(missing)})"
        images = root / "images" / split
        found_images = sum(1 for _ in images.glob("*.jpg")) if images.is_dir() else 0
        if found_images != count:
            return f"holds an incomplete synthetic set ({found_images} of {count} images in images/{split})"
    return None


def ensure_synthetic_coco(root, train_split: str, val_split: str, train_images: int, val_images: int,
                          seed: int = 0) -> Path:
    """Generate the synthetic set at ``root`` unless the same complete one is already there.

    Written to a temporary folder and renamed, so an interrupted run leaves nothing
    half-made; a folder without the generator's marker is never overwritten (one with it
    holds generated data only, so another or damaged set there is replaced).
    """
    root = Path(root)
    wanted = wanted_marker(train_split, val_split, train_images, val_images, seed)
    problem = mismatch(root, wanted)
    if problem is None:
        log.info("synthetic pose data at %s is complete (%d train / %d val images, seed %d): reused",
                 root, train_images, val_images, seed)
        return root
    if not (root / MARKER).is_file() and root.exists() and any(root.iterdir()):
        raise UserError(f"DATASET.SYNTHETIC is true but {root} already holds other data (no {MARKER}); "
                        "point DATASET.ROOT to an empty or new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        log.info("generating synthetic pose data at %s (%d train / %d val images, seed %d; it %s)",
                 root, train_images, val_images, seed, problem)
        counts = {train_split: write_split(tmp, train_split, train_images, seed, first_id=1)}
        counts[val_split] = write_split(tmp, val_split, val_images, seed, first_id=10**6)
        (tmp / MARKER).write_text(json.dumps(wanted, indent=1))
        if root.exists():
            shutil.rmtree(root)  # an older or damaged synthetic set (it carries the marker)
        try:
            tmp.rename(root)
        except OSError:  # another process made it meanwhile: fine if it is the same set
            if mismatch(root, wanted) is not None:
                raise
        log.info("synthetic pose data ready: %s", counts)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def generate_command(cfg) -> str:
    """The command that makes (or checks) the synthetic set of ``cfg``."""
    return f"python -m tasks.pose.synthetic --cfg {cfg.source}"


def check_synthetic(cfg, root: Path) -> None:
    """The training side: a one-line error naming the command when ``root`` does not hold the
    set the config describes.  Runs never generate data themselves (every DDP rank would)."""
    problem = mismatch(root, marker_of_config(cfg))
    if problem is not None:
        raise UserError(f"DATASET.ROOT {root} {problem}; create the synthetic set first: "
                        f"{generate_command(cfg)} (with the run's --opts, if any; DATASET.SYNTHETIC is true)")
