"""What a sweep leaves for people: the table of trials (``report.md``, ``trials.json``),
the best trial's config as a YAML that ``tools/train.py`` runs as it is (``best.yaml``) and
a picture of the metric against each searched key (``sweep.png``)."""
from __future__ import annotations

import math
from pathlib import Path

import optuna
import yaml
from matplotlib.figure import Figure
from optuna.trial import TrialState

from .. import config as config_lib
from ..io import atomic_write, save_figure, save_json
from .space import Param
from .trial import trial_name


def trial_rows(study: optuna.Study, params: list[Param]) -> list[dict]:
    """One row per trial; a pruned trial's value is the last one it reported."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = t.value if t.state == TrialState.COMPLETE else None
        if t.state == TrialState.PRUNED and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": value,
                     "params": {p.key: t.params.get(p.key) for p in params},
                     "epochs": t.user_attrs.get("epochs"), "reason": t.user_attrs.get("reason", ""),
                     "run": trial_name(study.study_name, t.number)})
    return rows


def best_row(rows: list[dict], minimize: bool) -> dict | None:
    done = [r for r in rows if r["state"] == "complete"]
    if not done:
        return None
    return (min if minimize else max)(done, key=lambda r: r["value"])


def _shown(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict], params: list[Param], metric: str, title: str, best: dict | None) -> str:
    keys = [p.key for p in params]
    states = {s: sum(r["state"] == s for r in rows) for s in dict.fromkeys(r["state"] for r in rows)}
    lines = [f"# {title}", "", ", ".join(f"{n} {s}" for s, n in states.items()) or "no trials yet", "",
             f"| trial | {' | '.join(keys)} | {metric} | epochs | state |",
             "|---|" + "---|" * (len(keys) + 3)]
    for r in rows:
        state = r["state"] + (f": {r['reason']}" if r["reason"] and r["state"] == "fail" else "")
        mark = " (best)" if best and r["trial"] == best["trial"] else ""
        lines.append(f"| {r['trial']}{mark} | {' | '.join(_shown(r['params'][k]) for k in keys)} | "
                     f"{_shown(r['value'])} | {_shown(r['epochs'])} | {state} |")
    return "\n".join(lines) + "\n"


def write_best_yaml(best: dict, out: Path, base_output_dir: str, metric: str) -> Path | None:
    """The best trial's resolved config, named ``<run>_best`` and writing under the sweep
    config's OUTPUT_DIR (so it does not collide with the trial's folder)."""
    trial_cfg = next((out / "trials").glob(f"*/{best['run']}/config.yaml"), None)
    if trial_cfg is None:
        return None
    data = config_lib.parse_yaml(trial_cfg.read_text())
    data["NAME"], data["OUTPUT_DIR"] = f"{best['run']}_best", base_output_dir
    header = (f"# Best trial of the sweep in {out}: trial {best['trial']}, {metric} "
              f"{best['value']:.4g} with {', '.join(f'{k} {v}' for k, v in best['params'].items())}.\n"
              "# python tools/train.py --cfg <this file>   (add --opts DATASET.VAL_FROM_TRAIN 0.0 to\n"
              "# train on the whole training set and evaluate the test split)\n")
    text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    return atomic_write(out / "best.yaml", lambda tmp: Path(tmp).write_text(text))


def figure(rows: list[dict], params: list[Param], metric: str) -> Figure:
    """The metric against each key (finished trials; pruned ones hollow at their last value)
    and, for two numeric keys, the trials in the plane of both, coloured by the metric."""
    numeric = [p for p in params if p.kind != "choice"]
    pair = len(params) == 2 and len(numeric) == 2
    fig = Figure(figsize=(4.2 * (len(params) + pair), 3.6), dpi=110)
    shown = [r for r in rows if r["value"] is not None and math.isfinite(r["value"])]
    for i, p in enumerate(params):
        ax = fig.add_subplot(1, len(params) + pair, i + 1)
        for state in ("complete", "pruned"):
            points = [r for r in shown if r["state"] == state]
            xs = [r["params"][p.key] if p.kind != "choice" else p.choices.index(r["params"][p.key])
                  for r in points]
            if points:
                ax.scatter(xs, [r["value"] for r in points], label=state, edgecolors="C0",
                           facecolors="none" if state == "pruned" else "C0")
        _axis(ax, p, "x")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} against {p.key}", fontsize=9)
        ax.grid(alpha=0.3)
        if ax.collections:
            ax.legend(fontsize=7)
    if pair:
        ax = fig.add_subplot(1, 3, 3)
        done = [r for r in shown if r["state"] == "complete"]
        drawn = ax.scatter([r["params"][params[0].key] for r in done], [r["params"][params[1].key] for r in done],
                           c=[r["value"] for r in done], cmap="viridis")
        fig.colorbar(drawn, ax=ax, label=metric)
        _axis(ax, params[0], "x")
        _axis(ax, params[1], "y")
        ax.set_title("finished trials", fontsize=9)
    fig.tight_layout()
    return fig


def _axis(ax, p: Param, which: str) -> None:
    getattr(ax, f"set_{which}label")(p.key)
    if p.kind == "log":
        getattr(ax, f"set_{which}scale")("log")
    elif p.kind == "choice":
        getattr(ax, f"set_{which}ticks")(range(len(p.choices)), p.choices)


def write_report(study: optuna.Study, params: list[Param], metric: str, minimize: bool, out: Path,
                 base_output_dir: str) -> tuple[str, list[Path]]:
    """Write every report file; returns the table's text and the files written."""
    rows = trial_rows(study, params)
    best = best_row(rows, minimize)
    title = f"Sweep {study.study_name}: {metric} ({'minimised' if minimize else 'maximised'})"
    text = markdown(rows, params, metric, title, best)
    written = [atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(text)),
               save_json({"study": study.study_name, "metric": metric, "minimize": minimize,
                          "space": [p.text for p in params], "best": best, "trials": rows},
                         out / "trials.json")]
    written.append(save_figure(figure(rows, params, metric), out / "sweep.png"))
    if best is not None:
        best_yaml = write_best_yaml(best, out, base_output_dir, metric)
        written += [best_yaml] if best_yaml else []
    return text, written
