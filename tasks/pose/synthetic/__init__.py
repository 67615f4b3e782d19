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

One module per job: :mod:`.figure` samples a pose, :mod:`.paint` draws it, :mod:`.scene`
composes a labelled picture, :mod:`.detections` fakes a detector, :mod:`.coco_files` writes a
split, :mod:`.cache` makes or reuses a whole set, :mod:`.cli` is the command line.
"""
from .cache import MARKER, check_synthetic, ensure_synthetic_coco, generate_command, mismatch
from .cli import main
from .coco_files import GENERATOR_VERSION, write_split
from .scene import render_image

__all__ = ["GENERATOR_VERSION", "MARKER", "check_synthetic", "ensure_synthetic_coco", "generate_command", "main",
           "mismatch", "render_image", "write_split"]
