"""The run folder ``OUTPUT_DIR/TASK/NAME``: one run at a time, and a finished run is never
overwritten without being asked.

* A folder that holds a run (checkpoints, metrics, results) is entered only to continue it
  (``--resume``) or, with ``--overwrite``, after the whole folder was moved aside to
  ``NAME.replaced-<date-time>`` beside it: nothing is deleted.
* A second run into the same folder is refused by an exclusive ``flock`` on its ``.lock``
  file; the operating system releases it when the process ends in any way (even SIGKILL),
  so a killed run never leaves it stale.
* Temporary files of atomic writes interrupted by a kill are removed when the folder is
  claimed (nothing else can be writing them then).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import checkpoint
from .errors import UserError

#: Files whose presence means the folder holds a run worth keeping.
RUN_FILES = (checkpoint.LAST, checkpoint.BEST, "metrics.csv", "results.json")
LOCK = ".lock"


def run_dir_of(cfg) -> Path:
    """Where the run of ``cfg`` lives: ``OUTPUT_DIR/TASK/NAME``."""
    return Path(cfg.OUTPUT_DIR) / cfg.TASK / cfg.NAME


@dataclass
class Claim:
    resume: bool  # continue checkpoint_last.pth
    moved_to: Path | None = None  # where --overwrite moved the earlier run


@contextlib.contextmanager
def claim(path: str | os.PathLike, resume: bool | str, overwrite: bool = False,
          main: bool = True) -> Iterator[Claim]:
    """Hold ``path`` for one run.  ``resume`` is True (``--resume``), False, or ``"auto"``
    (``AUTO_RESUME``: continue when there is a checkpoint, else start fresh).  Only the main
    process (``main``) locks and moves; the others just learn whether to resume."""
    path = Path(path)
    if resume is True and overwrite:
        raise UserError("--resume continues a run and --overwrite starts it over: give one of them")
    wants_resume = resume is True or (resume == "auto" and not overwrite
                                      and (path / checkpoint.LAST).is_file())
    if not main:
        yield Claim(wants_resume)
        return
    _make_folder(path)
    lock = _lock(path)
    try:
        moved_to = None
        held = [name for name in RUN_FILES if (path / name).exists()]
        if overwrite and any(p.name != LOCK for p in path.iterdir()):
            moved_to = _move_aside(path)
            _make_folder(path)
            earlier, lock = lock, _lock(path)  # the new folder's lock before the old one goes
            os.close(earlier)
        elif held and not wants_resume:
            go_on = ("continue it with --resume, " if checkpoint.LAST in held else
                     f"it has no {checkpoint.LAST} to continue; ")
            raise UserError(
                f"{path} already holds a run ({', '.join(held)}); {go_on}choose another NAME (e.g. "
                "--opts NAME new_name), or start over with --overwrite "
                f"(moves the earlier run to {path.name}.replaced-<date-time>)")
        for stale in path.glob(".*.tmp"):
            stale.unlink()
        yield Claim(wants_resume, moved_to)
    finally:
        os.close(lock)


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the run folder {path}: {err.strerror}; set OUTPUT_DIR "
                        "to a writable folder and NAME to a short plain name") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"the run folder {path} is not writable; set OUTPUT_DIR to a writable folder")


def try_lock(lock_file: Path) -> int | None:
    """The open descriptor of ``lock_file`` with an exclusive ``flock`` held, or None while
    another process holds it (the lock ends with its process, so nothing stale is left)."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _lock(path: Path) -> int:
    lock_file = path / LOCK
    try:
        fd = try_lock(lock_file)
    except OSError as err:
        raise UserError(f"cannot create the lock file {lock_file}: {err.strerror}") from None
    if fd is None:
        raise UserError(f"{path} is in use by another run (it holds {lock_file}); wait for it "
                        "to end or choose another NAME")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.replaced-{stamp}")
    count = 1
    while target.exists():
        count += 1
        target = path.with_name(f"{path.name}.replaced-{stamp}-{count}")
    os.rename(path, target)
    return target
