"""A run's own config, for the tools that continue or evaluate it without ``--cfg``.

Every checkpoint of this tool stores the resolved config that trained it, and every run
folder holds it as ``config.yaml``; so ``tools/eval.py --checkpoint RUN/model_best.pth``
and ``tools/train.py --resume RUN`` need neither the config file nor the ``--opts`` the
run was started with (``--opts`` still override, e.g. a data path on another machine).
"""
from __future__ import annotations

from pathlib import Path

from . import config, resume, torchfile
from .errors import UserError
from .run_dir import RUN_FILES

#: Config keys that shape the model a checkpoint's weights belong to.
MODEL_KEYS = ("MODEL.", "QUANT.")  # and TASK


def stored_config(path: str | Path) -> dict | None:
    """The config stored in the checkpoint at ``path``, or None (a plain state_dict)."""
    state = torchfile.read(path, "checkpoint")  # also says what a path that is no file is
    stored = state.get("config") if isinstance(state, dict) else None
    return stored if isinstance(stored, dict) else None


def config_of_checkpoint(path: str | Path, cfg_file: str | None, opts) -> tuple[config.Config, dict | None]:
    """``(config, the checkpoint's stored config)``: ``--cfg`` when given, else the stored
    one with ``opts`` applied; a plain state_dict needs ``--cfg``."""
    stored = stored_config(path)
    if cfg_file:
        return config.load(cfg_file, opts), stored
    if stored is None:
        raise UserError(f"{path} holds no config (a plain state_dict): give --cfg with the config "
                        "it was trained with")
    cfg = config.build(stored, config.parse_opts(opts), source=f"the config stored in {path}")
    config.check_name(cfg.NAME, cfg.source)
    return cfg, stored


def config_of_run(run: str | Path, opts) -> config.Config:
    """The config of the run folder ``run`` (its ``config.yaml``, ``opts`` applied), pointed at
    ``run`` itself, so that a folder moved or given by an absolute path is continued there."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UserError(f"--resume {run}: no config.yaml there; give the run folder "
                        "(OUTPUT_DIR/TASK/NAME) of a run of this tool")
    cfg = config.load(run / "config.yaml", opts)
    if run.resolve().parent.name != cfg.TASK:
        raise UserError(f"--resume {run}: a run folder of task {cfg.TASK} lies in a folder named "
                        f"{cfg.TASK} (OUTPUT_DIR/{cfg.TASK}/NAME); move it back there")
    cfg.OUTPUT_DIR, cfg.NAME = str(run.resolve().parent.parent), run.resolve().name
    return cfg


def config_of_resume(cfg_file: str | None, resume: bool | str, opts) -> config.Config:
    """``tools/train.py``'s config: ``--cfg``, or with ``--resume RUN_DIR`` the run's own one."""
    if isinstance(resume, str):
        if cfg_file:
            raise UserError(f"--resume {resume} continues that run with its own config: leave out "
                            f"--cfg (or give --cfg {cfg_file} with a plain --resume)")
        return config_of_run(resume, opts)
    if not cfg_file:
        raise UserError("give --cfg CONFIG, or --resume RUN_DIR to continue a run with its own config")
    return config.load(cfg_file, opts)


def model_differences(stored: dict | None, cfg: config.Config) -> str:
    """The model keys in which ``cfg`` differs from the checkpoint's ``stored`` config, as
    text for an error (empty when nothing differs or nothing was stored)."""
    if stored is None:
        return ""
    changes = [f"{key} {old!r} where this config has {new!r}"
               for key, old, new in resume.config_changes(stored, cfg.to_dict())
               if key == "TASK" or key.startswith(MODEL_KEYS)]
    return "; ".join(changes)


def load_model(task, path: str | Path, stored: dict | None):
    """``task.load_trained(path)``; when the weights do not fit, the error names the config
    keys in which this config differs from the one that trained them."""
    try:
        return task.load_trained(path)
    except UserError as err:
        differences = model_differences(stored, task.cfg)
        if not differences:
            raise
        raise UserError(f"{path} was trained with {differences}: leave out --cfg to use the config "
                        f"stored in it ({err})") from None


def eval_folder(path: str | Path, out: str | None) -> Path:
    """Where an evaluation of checkpoint ``path`` writes: ``--out``, or ``eval/`` beside the
    checkpoint.  A training run's folder is refused: its results and pictures would be replaced."""
    folder = Path(out) if out else Path(path).parent / "eval"
    held = [name for name in RUN_FILES if (folder / name).exists()] if (folder / "config.yaml").exists() else []
    if held:
        raise UserError(f"--out {folder} is a training run's folder (it holds {', '.join(held)}) that the "
                        f"evaluation would overwrite; give another folder, e.g. {folder / 'eval'}")
    return folder


def snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    """``(mtime, size)`` of every file under ``folder``, to tell afterwards what was written."""
    if not folder.is_dir():
        return {}
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


def written_since(folder: Path, before: dict[Path, tuple[int, int]]) -> list[Path]:
    """Files under ``folder`` that are new or changed since :func:`snapshot` gave ``before``."""
    return sorted(p for p, stat in snapshot(folder).items() if before.get(p) != stat)
