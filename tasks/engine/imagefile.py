"""Decode image files so that no file can crash the process or hide its name.

* The bytes are read by Python (``numpy.fromfile``) and decoded from memory
  (``cv2.imdecode``): OpenCV never sees the file name, which it mishandles when it is not
  valid UTF-8 (``cv2.imread`` crashed with a segmentation fault on such names).
* The pixel count in the header is checked before any pixel is decoded, so a small file
  that claims 60000 x 60000 pixels is refused by name instead of exhausting memory.
* 16-bit and floating-point images are converted to 8 bits (floats must lie in [0, 1]);
  anything else is refused with a message that says what the file holds.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings

import cv2
import numpy as np

from .errors import UserError
from .io import regular_if_present

#: The most pixels an image may have (about 11600 x 11600): far beyond any photo a model
#: is trained on, and below Pillow's own decompression-bomb limit.
MAX_PIXELS = 1 << 27


def shown(path) -> str:
    """``path`` as printable text, also when its name is not valid UTF-8."""
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")


def check_image_file(path) -> None:
    """A cheap check of ``path``'s header (no pixels decoded): an image of a sane size, or
    :class:`UserError` naming the file."""
    from PIL import Image, UnidentifiedImageError

    regular_if_present(path, "image")
    try:
        with _quiet(), Image.open(path) as image:
            _check_size(image.size, path)
    except UnidentifiedImageError:
        read_bgr(path)  # formats only OpenCV knows (e.g. 3-channel float TIFF): decode them
    except Image.DecompressionBombError:
        raise UserError(_too_large(path, "more than Pillow's limit of")) from None
    except OSError as err:
        raise UserError(f"cannot read image {shown(path)}: {err.strerror or err}; replace or "
                        "delete it") from None


def read_bgr(path, apply_orientation: bool = True) -> np.ndarray:
    """HxWx3 uint8 BGR pixels of ``path`` (EXIF orientation applied unless told not to)."""
    regular_if_present(path, "image")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise UserError(f"cannot read image {shown(path)}: {reason} (missing or unreadable)") from None
    _check_size(_header_size(data, path), path)
    flags = cv2.IMREAD_COLOR | (0 if apply_orientation else cv2.IMREAD_IGNORE_ORIENTATION)
    image = _decode(data, flags, path)
    if image is None:
        raw = _decode(data, cv2.IMREAD_UNCHANGED, path)
        image = _to_8bit_bgr(raw, path) if raw is not None else _decode_with_pillow(data, path)
    return image


def _header_size(data: np.ndarray, path):
    from PIL import Image

    try:
        with _quiet(), Image.open(io.BytesIO(data)) as image:
            return image.size
    except Image.DecompressionBombError:
        raise UserError(_too_large(path, "more than Pillow's limit of")) from None
    except Exception:  # a format Pillow does not know: OpenCV may, and checks its own limit
        return None


def _check_size(size, path) -> None:
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise UserError(_too_large(path, f"{size[0]} x {size[1]} pixels, more than"))


def _too_large(path, what: str) -> str:
    return (f"image {shown(path)} claims {what} {MAX_PIXELS} pixels; a corrupt or hostile "
            "header, or a picture far too large: replace or delete it")


def _decode(data: np.ndarray, flags: int, path):
    try:
        return cv2.imdecode(data, flags) if data.size else None
    except cv2.error as err:
        reason = str(err).strip().splitlines()[-1][:160]
        raise UserError(f"cannot decode image {shown(path)} ({reason}); replace or delete it") from None


def _to_8bit_bgr(raw: np.ndarray, path) -> np.ndarray:
    if raw.dtype == np.uint16:
        raw = (raw.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif raw.dtype.kind == "f":
        low, high = (float(raw.min()), float(raw.max())) if raw.size else (0.0, 0.0)
        if not (np.isfinite(low) and np.isfinite(high) and 0.0 <= low and high <= 1.0):
            raise UserError(f"image {shown(path)} holds floating-point values in [{low:g}, {high:g}]; "
                            "only [0, 1] is read: convert it to 8-bit")
        raw = (raw * 255.0).round().astype(np.uint8)
    elif raw.dtype != np.uint8:
        raise UserError(f"image {shown(path)} holds {raw.dtype} pixels; convert it to 8-bit")
    if raw.ndim == 2 or raw.shape[2] == 1:
        return cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    if raw.shape[2] == 4:
        return cv2.cvtColor(raw, cv2.COLOR_BGRA2BGR)
    return raw[..., :3]


def _decode_with_pillow(data: np.ndarray, path) -> np.ndarray:
    """Formats OpenCV lacks; a file neither library decodes is corrupt."""
    from PIL import Image

    try:
        with _quiet(), Image.open(io.BytesIO(data)) as image:
            if image.mode in ("F", "I", "I;16"):
                return _to_8bit_bgr(np.asarray(image), path)
            return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"cannot decode image {shown(path)}: the file is corrupt or not an image "
                        f"({type(err).__name__}); replace or delete it") from None


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's size warning: the size is checked here
        yield
