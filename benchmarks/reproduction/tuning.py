"""The tuned rows: rho (SAM) and rho with rho_min (BSAM, rho_min_end 0) chosen by a sweep
(``tools/sweep.py``) on a validation split of the training images, the same number of trials
for each; the chosen values then train on the whole training set like the other rows.  The
sweeps' reports are kept in the ledger (``sweeps/<method>/``) with the finished runs, and so is
each sweep's Optuna storage (``study.db``) while it runs: committed as trials finish, it lets a
new checkout continue the study (finished trials kept, a trial that was running taken over)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .plan import METHODS, REPO, quoted, short

#: What each tuned method searches (log-uniform ranges around the paper's 0.05).
SPACES = {"sam_tuned": ["SAM.RHO=log:0.005:0.5"],
          "bsam_tuned": ["SAM.RHO=log:0.005:0.5", "SAM.RHO_MIN=log:0.001:0.5"]}
VAL_FRACTION = "0.1"
REPORT_FILES = ("report.md", "trials.json", "sweep.png", "best.yaml")


def sweep_command(method: str, cfg: Path, recipe: list[str], out: Path, trials: int,
                  ledger: Path | None = None) -> list[str]:
    """The sweep of one tuned method: its recipe with a 10% validation split, seed 0; its
    storage in the ledger when there is one (else the sweep folder's default)."""
    opts = [*recipe, *METHODS[method], "DATASET.VAL_FROM_TRAIN", VAL_FRACTION, "SEED", "0"]
    spaces = [x for space in SPACES[method] for x in ("--space", space)]
    storage = ["--storage", f"sqlite:///{short(study_file(ledger, method))}"] if ledger else []
    return [sys.executable, "tools/sweep.py", "--cfg", short(cfg), *spaces, "--trials", str(trials),
            "--metric", "val_top1", "--study", f"tune_{method.removesuffix('_tuned')}", "--out", short(out / method),
            *storage, "--opts", *opts]


def study_file(ledger: Path, method: str) -> Path:
    """Where the ledger keeps a tuned method's Optuna storage."""
    return ledger / "sweeps" / method / "study.db"


def shown(command: list[str]) -> str:
    return "python " + quoted(command[1:])


def chosen_values(method: str, out: Path, ledger: Path | None, trials: int) -> list[str] | None:
    """``--opts`` of the best trial once the method's sweep holds ``trials`` finished trials
    (from the sweep folder, else the ledger's copy), else None."""
    for folder in (out / method, *([ledger / "sweeps" / method] if ledger else [])):
        path = folder / "trials.json"
        if path.is_file():
            report = json.loads(path.read_text())
            finished = [t for t in report["trials"] if t["state"] in ("complete", "pruned", "fail")]
            if len(finished) >= trials and report["best"]:
                return [x for key, value in report["best"]["params"].items() for x in (key, repr(float(value)))]
    return None


def run_sweeps(cfg: Path, recipe: list[str], out: Path, ledger: Path | None, trials: int, threads: int,
               methods: list[str]) -> None:
    """Run (or continue) each tuned method's sweep, then copy its report to the ledger."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for method in methods:
        if chosen_values(method, out, ledger, trials) is None:
            log = out / "logs" / f"sweep_{method}.log"
            if ledger:
                study_file(ledger, method).parent.mkdir(parents=True, exist_ok=True)
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"sweep {method}: {trials} trials -> {out / method} (log {log})", flush=True)
            with open(log, "a") as f:
                proc = subprocess.run(sweep_command(method, cfg, recipe, out, trials, ledger), cwd=REPO, stdout=f,
                                      stderr=subprocess.STDOUT, env=env)
            if proc.returncode != 0:
                sys.exit(f"the sweep of {method} failed (exit {proc.returncode}); log {log}")
        if ledger and (out / method / "trials.json").is_file():
            (ledger / "sweeps" / method).mkdir(parents=True, exist_ok=True)
            for name in REPORT_FILES:
                if (out / method / name).is_file():
                    shutil.copyfile(out / method / name, ledger / "sweeps" / method / name)


def tuning_lines(out: Path, ledger: Path | None, trials: int, methods: list[str]) -> list[str]:
    """The markdown that says what each sweep chose (for the results' table)."""
    lines = []
    for method in methods:
        values = chosen_values(method, out, ledger, trials)
        if values:
            shown_values = ", ".join(f"{k} {float(v):.4g}" for k, v in zip(values[::2], values[1::2]))
            lines.append(f"- {method}: {shown_values} (best of {trials} trials on a {float(VAL_FRACTION):.0%} "
                         f"validation split; report in `sweeps/{method}/`)")
    return ["", "Tuned rows (chosen without the test set):", "", *lines] if lines else []
