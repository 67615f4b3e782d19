"""A synthetic COCO person-keypoint data set for the embedded demo (no download needed).

Each image holds a few articulated human figures drawn with the COCO skeleton: a torso,
thick limbs in clothing colours, a head whose face turns (so eyes, ears and nose move and
hide), hands and shoes, on cluttered backgrounds, with random poses, sizes, colours,
rotations, people side by side (overlapping with their limbs) and occluding objects.  Keypoints covered by
something drawn later are labelled ``v=1`` (occluded), face points on the far side of the
head and points outside the image are unlabelled, like COCO.  ``area`` is the visible
pixel area of the figure and ``bbox`` its tight box, so COCOeval's OKS scale is honest.

Output is real COCO: ``annotations/person_keypoints_<split>.json``, JPEGs under
``images/<split>/`` and a person-detection results file (jittered boxes with scores,
duplicates and false positives) under ``person_detection_results/`` -- the
``data/coco`` layout, so the demo runs the very code path of real COCO.  Everything is
a function of the seed.

Generation is an explicit step, ``python -m tasks.pose.synthetic --cfg CONFIG`` (``make demo``
runs it once before training); ``MARKER`` records the parameters, so a second call checks the
set and reuses it, and a run only checks it (:func:`check_synthetic`): ranks of a DDP run
never write data at the same time.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tasks.engine.errors import UserError

from .skeleton import NUM_JOINTS, coco_category

log = logging.getLogger("bsam.pose")  # a child of the run logger, so it lands in train.log

GENERATOR_VERSION = 5
MARKER = "SYNTHETIC.json"
_SPLIT_CODES = {"train": 1, "val": 2}

# joint indices (COCO order)
NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SH, R_SH, L_EL, R_EL, L_WR, R_WR, L_HIP, R_HIP, L_KN, R_KN, L_AN, R_AN = range(17)

#: how often an image holds 1, 2, 3 people
_PEOPLE_PROBS = {1: [1.0], 2: [0.6, 0.4], 3: [0.5, 0.3, 0.2]}
SKIN_TONES = ((189, 224, 255), (141, 186, 234), (99, 145, 198), (66, 105, 160), (45, 72, 110), (170, 205, 241))
HAIR_COLORS = ((20, 20, 20), (30, 50, 90), (40, 90, 160), (160, 160, 160), (15, 30, 60))


@dataclass
class Figure:
    """One person: keypoints (J, 2) in image pixels and what to draw where."""

    joints: np.ndarray
    labelled: np.ndarray  # bool (J,): False for face points on the far side of the head
    height: float
    head_center: np.ndarray
    head_radius: float
    up: np.ndarray  # unit vector from pelvis to neck, image coordinates
    arms_behind: tuple  # (left, right): drawn before the torso
    skin: tuple
    shirt: tuple
    pants: tuple
    hair: tuple


# -- pose -----------------------------------------------------------------------------------
def _rot(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _limb(rng, start, down, outward, length1, length2, spread, bend):
    """Two-segment limb from ``start``: first segment swung ``spread`` rad from ``down``
    towards ``outward``, second bent a further ``bend`` rad (either way)."""
    sign = 1.0 if down[0] * outward[1] - down[1] * outward[0] > 0 else -1.0
    d1 = _rot(down, sign * spread)
    mid = start + length1 * d1
    d2 = _rot(d1, bend * (1.0 if rng.random() < 0.5 else -1.0))
    return mid, mid + length2 * d2


def sample_figure(rng: np.random.Generator, height: float, pelvis) -> Figure:
    """Random articulated pose of a person ``height`` pixels tall, pelvis at ``pelvis``.

    Works in a body frame (``up``: pelvis -> neck; ``side``: towards the person's left,
    which is image-right for a figure facing the camera) and returns image coordinates.
    """
    j = np.zeros((NUM_JOINTS, 2))
    tilt = float(np.clip(rng.normal(0, 0.2), -0.6, 0.6))
    up = _rot(np.array([0.0, -1.0]), tilt)  # image y points down
    side = np.array([-up[1], up[0]])  # up rotated by +90 deg: image-right when upright
    width = rng.uniform(0.85, 1.15)
    h = height
    pelvis = np.asarray(pelvis, dtype=np.float64)
    neck = pelvis + 0.30 * h * up
    j[L_HIP], j[R_HIP] = pelvis + 0.085 * h * width * side, pelvis - 0.085 * h * width * side
    j[L_SH], j[R_SH] = neck + 0.125 * h * width * side - 0.015 * h * up, neck - 0.125 * h * width * side - 0.015 * h * up
    relaxed = rng.random() < 0.5  # standing/walking-like poses, the bulk of real photos
    for sh, el, wr, s in ((L_SH, L_EL, L_WR, 1.0), (R_SH, R_EL, R_WR, -1.0)):
        spread = rng.uniform(0.0, 0.5) if relaxed else rng.uniform(-0.4, 2.9)
        bend = rng.uniform(0.0, 0.5) if relaxed else rng.uniform(0.0, 2.4)
        j[el], j[wr] = _limb(rng, j[sh], -up, s * side, 0.165 * h, 0.145 * h, spread, bend)
    for hip, kn, an, s in ((L_HIP, L_KN, L_AN, 1.0), (R_HIP, R_KN, R_AN, -1.0)):
        spread = rng.uniform(-0.05, 0.3) if relaxed else rng.uniform(-0.3, 1.0)
        bend = rng.uniform(0.0, 0.3) if relaxed else rng.uniform(0.0, 1.6)
        j[kn], j[an] = _limb(rng, j[hip], -up, s * side, 0.235 * h, 0.225 * h, spread, bend)
    # head: a sphere turned by yaw; face points on its far side are hidden
    head_up = _rot(up, float(rng.normal(0, 0.2)))
    head_side = np.array([-head_up[1], head_up[0]])
    radius = 0.08 * h
    head = neck + (0.045 * h + radius) * head_up
    yaw = float(rng.uniform(-1.1, 1.1))
    labelled = np.ones(NUM_JOINTS, dtype=bool)
    face = {NOSE: (0.0, -0.15, 1.05), L_EYE: (0.5, 0.22, 0.95), R_EYE: (-0.5, 0.22, 0.95),
            L_EAR: (math.pi / 2, 0.0, 1.0), R_EAR: (-math.pi / 2, 0.0, 1.0)}
    for k, (azimuth, elevation, r) in face.items():
        a = azimuth + yaw
        j[k] = head + radius * r * (math.sin(a) * head_side + elevation * head_up)
        labelled[k] = math.cos(a) > (-0.25 if k in (L_EAR, R_EAR) else 0.1)
    return Figure(
        joints=j, labelled=labelled, height=h, head_center=head, head_radius=radius, up=up,
        arms_behind=(rng.random() < 0.15, rng.random() < 0.15),
        skin=SKIN_TONES[rng.integers(len(SKIN_TONES))], shirt=_color(rng), pants=_color(rng),
        hair=HAIR_COLORS[rng.integers(len(HAIR_COLORS))])


def _color(rng) -> tuple:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


# -- drawing ----------------------------------------------------------------------------------
def _pt(p) -> tuple:
    return int(round(p[0] * 16)), int(round(p[1] * 16))  # 4 fractional bits


def _line(canvas, mask, a, b, color, thickness):
    t = max(1, int(round(thickness)))
    cv2.line(canvas, _pt(a), _pt(b), color, t, cv2.LINE_AA, shift=4)
    cv2.line(mask, _pt(a), _pt(b), 255, t, cv2.LINE_8, shift=4)


def _disc(canvas, mask, c, r, color):
    cv2.circle(canvas, _pt(c), max(1, int(round(r * 16))), color, -1, cv2.LINE_AA, shift=4)
    cv2.circle(mask, _pt(c), max(1, int(round(r * 16))), 255, -1, cv2.LINE_8, shift=4)


def draw_figure(canvas: np.ndarray, fig: Figure) -> np.ndarray:
    """Draw ``fig`` onto ``canvas`` (BGR); return its pixel mask."""
    mask = np.zeros(canvas.shape[:2], np.uint8)
    j, h = fig.joints, fig.height
    socks = tuple(int(c * 0.8) for c in fig.pants)

    def arm(sh, el, wr):
        _line(canvas, mask, j[sh], j[el], fig.shirt, 0.095 * h)
        _line(canvas, mask, j[el], j[wr], fig.skin, 0.075 * h)
        _disc(canvas, mask, j[wr], 0.045 * h, fig.skin)

    for hip, kn, an in ((L_HIP, L_KN, L_AN), (R_HIP, R_KN, R_AN)):
        _line(canvas, mask, j[hip], j[kn], fig.pants, 0.125 * h)
        _line(canvas, mask, j[kn], j[an], socks, 0.1 * h)
        _disc(canvas, mask, j[an], 0.045 * h, (30, 30, 30))
    for behind, limb in zip(fig.arms_behind, ((L_SH, L_EL, L_WR), (R_SH, R_EL, R_WR))):
        if behind:
            arm(*limb)
    torso = np.array([j[L_SH], j[R_SH], j[R_HIP], j[L_HIP]])
    torso = torso + 0.25 * (torso - torso.mean(axis=0))
    poly = np.round(torso * 16).astype(np.int32)
    cv2.fillConvexPoly(canvas, poly, fig.shirt, cv2.LINE_AA, shift=4)
    cv2.fillConvexPoly(mask, poly, 255, cv2.LINE_8, shift=4)
    neck_base = (j[L_SH] + j[R_SH]) / 2
    _line(canvas, mask, neck_base, fig.head_center, fig.skin, 0.08 * h)
    for behind, limb in zip(fig.arms_behind, ((L_SH, L_EL, L_WR), (R_SH, R_EL, R_WR))):
        if not behind:
            arm(*limb)
    _disc(canvas, mask, fig.head_center, fig.head_radius, fig.skin)
    hair_center = fig.head_center + 0.45 * fig.head_radius * fig.up
    cv2.ellipse(canvas, _pt(hair_center), (int(fig.head_radius * 16 * 0.95), int(fig.head_radius * 16 * 0.6)),
                math.degrees(math.atan2(fig.up[1], fig.up[0])) + 90, 0, 360, fig.hair, -1, cv2.LINE_AA, shift=4)
    for k in (L_EYE, R_EYE):
        if fig.labelled[k]:
            cv2.circle(canvas, _pt(j[k]), max(16, int(0.012 * h * 16)), (25, 25, 25), -1, cv2.LINE_AA, shift=4)
    if fig.labelled[NOSE]:
        nose = tuple(int(c * 0.75) for c in fig.skin)
        cv2.circle(canvas, _pt(j[NOSE]), max(16, int(0.011 * h * 16)), nose, -1, cv2.LINE_AA, shift=4)
    return mask


def _background(rng, height: int, width: int) -> np.ndarray:
    """Gradient plus random shapes and noise: texture the network must learn to ignore."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, height if rng.random() < 0.5 else width)
    ramp = (a[None] * (1 - t[:, None]) + b[None] * t[:, None]).astype(np.uint8)
    img = np.broadcast_to(ramp[:, None] if len(t) == height else ramp[None], (height, width, 3)).copy()
    plain = img.copy()
    for _ in range(rng.integers(2, 6)):
        color = _color(rng)
        kind = rng.integers(3)
        p = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if kind == 0:
            q = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.rectangle(img, p, q, color, -1)
        elif kind == 1:
            cv2.circle(img, p, int(rng.integers(5, max(6, min(height, width) // 3))), color, -1, cv2.LINE_AA)
        else:
            q = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(img, p, q, color, int(rng.integers(1, 6)), cv2.LINE_AA)
    img = cv2.addWeighted(img, 0.6, plain, 0.4, 0)  # shapes a little transparent
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _occluder(rng, canvas, width, height, near) -> np.ndarray:
    """A box or disc drawn over part of a person (centre ``near``); returns its mask."""
    mask = np.zeros(canvas.shape[:2], np.uint8)
    color = _color(rng)
    size = rng.uniform(0.12, 0.3) * min(width, height)
    c = np.asarray(near) + rng.normal(0, size, 2)
    if rng.random() < 0.5:
        p, q = (c - size / 2).astype(int), (c + size / 2).astype(int)
        for m, col in ((canvas, color), (mask, 255)):
            cv2.rectangle(m, tuple(int(v) for v in p), tuple(int(v) for v in q), col, -1)
    else:
        for m, col in ((canvas, color), (mask, 255)):
            cv2.circle(m, (int(c[0]), int(c[1])), int(size / 2), col, -1)
    return mask


# -- images and annotations -----------------------------------------------------------------
def render_image(rng: np.random.Generator, width: int, height: int, max_people: int = 3):
    """One picture and its person annotations (without ids)."""
    canvas = _background(rng, height, width)
    count = 1 + int(rng.choice(max_people, p=_PEOPLE_PROBS[max_people]))
    figures, masks = [], []
    slots = rng.permutation(count)  # side by side, overlapping only with their limbs
    for slot in slots:
        person_h = rng.uniform(0.42, 0.9) * height
        x = (slot + rng.uniform(0.3, 0.7)) / count
        pelvis = ((0.1 + 0.8 * x) * width, rng.uniform(0.45, 0.65) * height)
        fig = sample_figure(rng, person_h, pelvis)
        figures.append(fig)
        masks.append(draw_figure(canvas, fig))
    covers = [np.zeros((height, width), bool) for _ in figures]  # what hides each figure
    for i in range(len(figures)):
        for later in masks[i + 1:]:
            covers[i] |= later > 0
    if rng.random() < 0.2:
        target = int(rng.integers(len(figures)))
        occ = _occluder(rng, canvas, width, height, figures[target].joints[[L_HIP, R_HIP, L_SH, R_SH]].mean(0)) > 0
        for c in covers:
            c |= occ
    annotations = []
    for fig, mask, cover in zip(figures, masks, covers):
        visible_mask = (mask > 0) & ~cover
        kpts = np.zeros((NUM_JOINTS, 3))
        for k, (x, y) in enumerate(fig.joints):
            xi, yi = int(round(x)), int(round(y))
            if not fig.labelled[k] or not (0 <= xi < width and 0 <= yi < height):
                continue
            kpts[k] = (x, y, 1 if cover[yi, xi] else 2)
        ys, xs = np.nonzero(visible_mask)
        if len(xs) == 0:
            continue
        x0, y0 = float(xs.min()), float(ys.min())
        annotations.append({
            "bbox": [round(x0, 2), round(y0, 2), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)],
            "area": float(len(xs)), "iscrowd": 0, "category_id": 1,
            "num_keypoints": int((kpts[:, 2] > 0).sum()),
            "keypoints": [round(float(v), 2) if i % 3 < 2 else int(v) for i, v in enumerate(kpts.reshape(-1))],
            "segmentation": [],
        })
    return canvas, annotations


def _fake_detections(rng, annotations_by_image, sizes) -> list[dict]:
    """Person boxes like a detector's: jittered true boxes, some duplicates and false alarms."""
    dets = []
    for image_id, anns in annotations_by_image.items():
        w_img, h_img = sizes[image_id]
        for ann in anns:
            x, y, w, h = ann["bbox"]
            for _ in range(2 if rng.random() < 0.2 else 1):
                jit = rng.normal(0, 0.05, 4) * [w, h, w, h]
                dets.append({"image_id": image_id, "category_id": 1, "score": round(float(rng.uniform(0.6, 1.0)), 4),
                             "bbox": [round(float(v), 2) for v in (x + jit[0], y + jit[1], w + jit[2], h + jit[3])]})
        if rng.random() < 0.3:
            w, h = rng.uniform(0.1, 0.4) * w_img, rng.uniform(0.2, 0.6) * h_img
            dets.append({"image_id": image_id, "category_id": 1, "score": round(float(rng.uniform(0.05, 0.4)), 4),
                         "bbox": [round(float(rng.uniform(0, w_img - w)), 2), round(float(rng.uniform(0, h_img - h)), 2),
                                  round(float(w), 2), round(float(h), 2)]})
    return dets


def write_split(root: Path, split: str, count: int, seed: int, first_id: int) -> dict:
    """Render ``count`` images of ``split`` under ``root``; return counts for the log."""
    code = _SPLIT_CODES.get(split, sum(map(ord, split)))
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, by_image, sizes = [], [], {}, {}
    for i in range(count):
        rng = np.random.default_rng([seed, code, i])
        width, height = int(rng.integers(11, 17)) * 16, int(rng.integers(10, 15)) * 16
        canvas, anns = render_image(rng, width, height)
        image_id = first_id + i
        name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(image_dir / name), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": image_id, "file_name": name, "width": width, "height": height, "license": 0})
        for ann in anns:
            ann.update(id=len(annotations) + first_id * 10 + 1, image_id=image_id)
            annotations.append(ann)
        by_image[image_id], sizes[image_id] = anns, (width, height)
    data = {
        "info": {"description": f"bsam-suite synthetic persons, {split}, seed {seed}", "version": GENERATOR_VERSION},
        "licenses": [{"id": 0, "name": "generated by bsam-suite (public domain)", "url": ""}],
        "categories": [coco_category()], "images": images, "annotations": annotations,
    }
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))
    det_dir = root / "person_detection_results"
    det_dir.mkdir(exist_ok=True)
    dets = _fake_detections(np.random.default_rng([seed, code, 10**9]), by_image, sizes)
    (det_dir / f"synthetic_{split}_detections.json").write_text(json.dumps(dets))
    return {"images": count, "persons": len(annotations)}


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


def main(argv=None) -> int:
    """``python -m tasks.pose.synthetic --cfg CONFIG [--opts ...]``: make the set the config
    describes at its DATASET.ROOT, or check and reuse the one there."""
    from tasks.engine import cli, config

    parser = cli.config_parser("Generate (or check and reuse) the synthetic pose data set of a config.")
    args = parser.parse_args(argv)
    cfg = config.load(args.cfg, args.opts)
    if cfg.TASK != "pose" or not cfg.DATASET.SYNTHETIC:
        raise UserError(f"{cfg.source} is not a synthetic pose config (TASK pose and DATASET.SYNTHETIC true): "
                        "there is nothing to generate")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    d = cfg.DATASET
    ensure_synthetic_coco(cfg.resolve_path(d.ROOT), d.TRAIN_SET, d.TEST_SET, int(d.SYNTHETIC_IMAGES),
                          int(d.SYNTHETIC_VAL_IMAGES), int(d.SYNTHETIC_SEED))
    return 0


if __name__ == "__main__":
    from tasks.engine import cli

    cli.run(main)
