"""Atomic file writes: a reader never sees a half-written checkpoint, result or picture.

A write that fails (disk full, folder not writable) leaves the previous file in place and
is a one-line :class:`UserError` naming the file.
"""
from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

import torch

from .errors import UserError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` for a temp file beside ``path``, then rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UserError(_cannot_write(path, err)) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except UserError:
        _remove(tmp)
        raise
    except (OSError, ValueError, RuntimeError) as err:  # whichever library wrote, name the file
        _remove(tmp)
        raise UserError(_cannot_write(path, err)) from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _cannot_write(path: Path, err: BaseException) -> str:
    reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:160]
    return (f"cannot write {path}: {reason}; any earlier {path.name} is left as it was "
            "(free disk space or choose a writable folder)")


def _remove(tmp: str) -> None:
    if os.path.exists(tmp):
        os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_torch(obj, path) -> Path:
    def write(tmp):
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:  # torch reports a failed write (e.g. a full disk) this way
            raise OSError(str(err).strip().splitlines()[0][:160]) from None

    return atomic_write(path, write)


def json_safe(obj):
    """``obj`` with every NaN/inf float replaced by ``None``: JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_text(obj, **kwargs) -> str:
    """Valid JSON (NaN/inf become null; ``allow_nan=False`` guards against any left)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def save_json(obj, path) -> Path:
    text = json_text(obj, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_figure(fig, path, **kwargs) -> Path:
    """Save a matplotlib figure atomically (the format comes from ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))


def check_output_path(path: str | os.PathLike, flag: str, folder: bool) -> Path:
    """``path`` given to ``flag`` can be written as a folder (``folder``) or a file."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} exists and is not a folder; give a folder path")
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give the path of a file to write")
    return path


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def input_file(path: str | os.PathLike, what: str, hint: str = "") -> int:
    """The size of ``path`` once it is known to be a non-empty regular file (a symlink to
    one counts), or :class:`UserError` saying what it is instead: opening a FIFO blocks,
    a device never ends, a folder is no file.  ``hint`` says what to do when it is missing."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}{hint}") from None
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror or err}") from None
    _refuse_other_kinds(info, path, what)
    if info.st_size == 0:
        raise UserError(f"{what} {path} is empty (0 bytes); it was cut off when written: use "
                        "another file")
    return info.st_size


def regular_if_present(path: str | os.PathLike, what: str) -> None:
    """Refuse ``path`` when it exists as something other than a regular file (a FIFO would
    block the reader, a device never ends); a missing path is left to the reader's message."""
    try:
        info = os.stat(path)
    except OSError:
        return
    _refuse_other_kinds(info, path, what)


def _refuse_other_kinds(info: os.stat_result, path, what: str) -> None:
    for test, kind in _KINDS:
        if test(info.st_mode):
            raise UserError(f"{what} {path} is {kind}, not a regular file; give the path of a file")
