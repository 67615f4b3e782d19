"""The benchmark's tables (markdown) and figure (test accuracy against CPU time, 1-D
landscapes), from the records of finished runs."""
from __future__ import annotations

import statistics

from matplotlib import colormaps
from matplotlib.figure import Figure

from tasks.engine.flatness_pictures import draw_landscape_1d

from .plan import VARIANTS, Job


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    text = f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"
    return text + f" (n={len(values)})" if len(values) > 1 else text


def summarise(records: list[dict], jobs: list[Job], epochs: int) -> list[dict]:
    """One row per (method, budget, noise, precision): the runs of all its seeds."""
    sgd = [r["cpu_seconds"] for r in records if r["row"] == "sgd_noise0"]
    rows = []
    for job in jobs:
        if any(row["row"] == job.row for row in rows):
            continue
        runs = sorted((r for r in records if r["row"] == job.row), key=lambda r: r["seed"])
        wall = [r["cpu_seconds"] for r in runs]
        rows.append({
            "row": job.row, "label": job.label(epochs), "method": job.method, "mult": job.mult,
            "noise": job.noise, "amp": job.amp, "seeds": [r["seed"] for r in runs], "passes": job.passes,
            "acc": [r["acc"] for r in runs], "train_acc": [r["train_acc"] for r in runs],
            "train_acc_clean_labels": [r["train_acc_clean_labels"] for r in runs],
            "top_eig": [r["top_eig"] for r in runs if "top_eig" in r],
            "trace": [r["trace"] for r in runs if "trace" in r],
            "time_vs_sgd": statistics.fmean(wall) / statistics.fmean(sgd) if wall and sgd else None,
        })
    return rows


def _ratio(row: dict) -> str:
    return f"{row['time_vs_sgd']:.2f}x" if row["time_vs_sgd"] is not None else "–"


def _header(meta: dict) -> list[str]:
    subset = f"{meta['per_class']} training images per class of " if meta["per_class"] else ""
    capped = f" (capped at {meta['max_iters']} it/epoch)" if meta["max_iters"] else ""
    return [
        f"# CIFAR reproduction ({meta['preset']}): {meta['model']} on {subset}`{meta['data']}`",
        "",
        f"{meta['epochs']} epochs{capped}, "
        f"batch 128, SGD lr 0.05 cosine to 0, momentum 0.9, wd 1e-3, label smoothing 0.1, crop + flip + "
        f"cutout 16, rho 0.05, rho_min 0.05 -> 0 (tuned rows: rho and rho_min from a sweep on a 10% "
        f"validation split of the training images); autocast {meta['amp']}; device {meta['device']}. "
        f"Test: top-1 (%) after the last epoch, mean ± std over seeds (n = number of seeds). Train: "
        f"top-1 (%) on the training images without augmentation, eval mode. Flatness on "
        f"{meta['flatness_batches']} training batch(es) of 128 (BN in eval mode): top Hessian eigenvalue "
        f"(Lanczos, {meta['lanczos_iters']} steps), Hutchinson trace ({meta['trace_samples']} samples). "
        f"Passes: forward-backward passes per step x epochs / {meta['epochs']} (compute relative to SGD). "
        f"Time: CPU time of the training process (one thread) relative to SGD's ({meta['epochs']} epochs).",
    ]


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [*_header(meta), "",
             "| method | test acc (%) | train acc (%) | top eigenvalue | Hessian trace | passes | time vs SGD |",
             "|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["noise"] == 0):
        lines.append(f"| {r['label']} | {fmt(r['acc'])} | {fmt(r['train_acc'])} | {fmt(r['top_eig'])} | "
                     f"{fmt(r['trace'], 1)} | {r['passes']:.2g} | {_ratio(r)} |")
    noisy = [r for r in rows if r["noise"] > 0]
    if noisy:
        pct = round(noisy[0]["noise"] * 100)
        lines += ["", f"With {pct}% symmetric label noise on the training labels (test labels clean):", "",
                  "| method | test acc (%) | train acc, noisy labels (memorisation) | train acc, their clean labels | time vs SGD |",
                  "|---|---|---|---|---|"]
        for r in noisy:
            lines.append(f"| {r['label']} | {fmt(r['acc'])} | {fmt(r['train_acc'])} | "
                         f"{fmt(r['train_acc_clean_labels'])} | {_ratio(r)} |")
    lines += meta.get("tuning", [])
    if meta.get("remaining"):
        lines += ["", f"Not run yet: {', '.join(meta['remaining'])}."]
    lines += ["", "Commands behind the runs (bash, from the repository root):", "", "```bash",
              *meta["commands"], "```"]
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], records: list[dict]) -> Figure:
    """Test accuracy against training time (mean over seeds) and the 1-D landscapes."""
    fig = Figure(figsize=(11, 4), dpi=110)
    ax = fig.add_subplot(1, 2, 1)
    colors = _method_colors(rows)
    for row in rows:
        _draw_row_curve(ax, row, [r for r in records if r["row"] == row["row"] and r["curve"]], colors[row["label"]])
    ax.set_xlabel("training time (CPU minutes, one thread)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("test accuracy against training time (mean over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    landscapes = {}
    for row in rows:
        first = next((r for r in records if r["row"] == row["row"] and "landscape_1d" in r), None)
        if first and row["mult"] == 1 and row["amp"] == "default":
            landscapes[row["label"]] = first["landscape_1d"]
    if landscapes:
        draw_landscape_1d(fig.add_subplot(1, 2, 2), landscapes,
                          title="training loss along a filter-normalised direction (first seed)", colors=colors)
    fig.tight_layout()
    return fig


def _method_colors(rows: list[dict]) -> dict[str, tuple]:
    """One colour per method label, the same in both panels (a noisy row shares its clean
    row's colour and is dashed); tab20 holds more methods than the default cycle of ten."""
    labels = list(dict.fromkeys(row["label"] for row in rows))
    palette = colormaps["tab20"]
    return {label: palette(i % palette.N) for i, label in enumerate(labels)}


def _draw_row_curve(ax, row: dict, runs: list[dict], color) -> None:
    """One row's mean test curve; each curve's wall clock is stretched to its run's CPU time
    (the curve spans every attempt of a resumed run, its last point the last epoch's end;
    wall_seconds only the last attempt)."""
    if not runs:
        return
    n = min(len(r["curve"]) for r in runs)
    scale = [r["cpu_seconds"] / r["curve"][-1][0] for r in runs]
    xs = [statistics.fmean(r["curve"][i][0] * k for r, k in zip(runs, scale)) / 60 for i in range(n)]
    ys = [statistics.fmean(r["curve"][i][1] for r in runs) for i in range(n)]
    style = "--" if row["noise"] > 0 else ("-." if row["mult"] != 1 else (":" if row.get("method") in VARIANTS else "-"))
    ax.plot(xs, ys, style, color=color, label=f"{row['label']}{' noisy' if row['noise'] else ''} (n={len(runs)})")
