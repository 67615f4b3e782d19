"""Pictures of flatness measurements (:mod:`tasks.engine.flatness_runs`): the top Hessian
eigenvalues per model, and 1-D / 2-D loss landscapes, several models on shared scales."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .flatness_runs import as_comparison
from .io import save_figure, save_json

#: Contour levels of a 2-D landscape stop at this multiple of the lowest loss on the grids.
LEVEL_CEILING = 10.0


def measured_on(comparison: dict) -> str:
    """What the numbers are of, for picture titles: task, split, batches, seed."""
    n = comparison.get("num_batches", "?")
    return (f"{comparison.get('task', 'model')}, {comparison.get('split', '?')} split, "
            f"{n} batch{'' if n == 1 else 'es'} of {comparison.get('batch_size', '?')}, "
            f"seed {comparison.get('seed', '?')}")


def _entries_with(comparison: dict, key: str) -> list[dict]:
    return [e for e in comparison["entries"] if key in e]


def _colour(comparison: dict, entry: dict) -> str:
    """One colour per model, the same in every picture of a comparison."""
    return f"C{comparison['entries'].index(entry) % 10}"


def draw_landscape_1d(ax, curves: dict[str, dict], title: str = "loss along a filter-normalised direction",
                      colors: dict | None = None) -> None:
    """One line per labelled 1-D landscape (several models can share the axes); ``colors``
    by label keeps a figure's other panels and this one in the same colours."""
    for label, land in curves.items():
        ax.plot(land["alphas"], land["loss"], marker=".", label=label, color=(colors or {}).get(label))
    losses = [v for land in curves.values() for v in land["loss"]]
    if losses and min(losses) > 0 and max(losses) > 30 * min(losses):
        ax.set_yscale("log")  # far from the minimum the loss explodes; keep the bottom visible
    ax.axvline(0.0, color="0.5", linewidth=0.8, linestyle=":")  # the trained weights
    ax.set_xlabel("step along the direction (x filter norm)")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def landscape_1d_figure(comparison: dict) -> Figure:
    fig = Figure(figsize=(5.6, 4.0), dpi=120)
    entries = _entries_with(comparison, "landscape_1d")
    draw_landscape_1d(fig.add_subplot(), {e["label"]: e["landscape_1d"] for e in entries},
                      title=f"loss along one filter-normalised random direction\n{measured_on(comparison)}")
    fig.tight_layout()
    return fig


def contour_levels(grids, ceiling: float = LEVEL_CEILING, step: float = 1.4,
                   count: int = 15) -> tuple[np.ndarray, str]:
    """Contour levels shared by the 2-D landscapes ``grids``, and a note saying how they were
    chosen (printed on the picture).

    Log-spaced (at least ``count``, each at most ``step`` times the last) from the lowest loss
    on the grids to ``ceiling`` times the highest of the grids' own minima, or the highest
    loss if lower: a basin spans a factor of a few in loss while the edges of a plane often
    reach thousands of times it, so linear levels up to the edges paint the whole basin one
    colour; and every model's basin, also the one with the highest minimum, gets levels.
    A loss that is not positive somewhere falls back to linear levels over the whole range.
    """
    grids = [np.asarray(g, dtype=float) for g in grids]
    low = min(float(g.min()) for g in grids)
    high = max(float(g.max()) for g in grids)
    if low > 0:
        top = max(min(high, ceiling * max(float(g.min()) for g in grids)), low * 1.001)
        count = max(count, int(np.ceil(np.log(top / low) / np.log(step))) + 1)
        if top < high:
            note = (f"{count} log-spaced levels from {low:.3g} (lowest loss) to {top:.3g} "
                    f"({ceiling:g}x {'the highest model minimum' if len(grids) > 1 else 'it'}); grey above")
        else:
            note = f"{count} log-spaced levels from {low:.3g} (lowest loss) to {top:.3g} (highest)"
        return np.geomspace(low, top, count), note
    top = high if high > low else low + 1.0
    return np.linspace(low, top, count), f"{count} linear levels from {low:.3g} to {top:.3g}"


def landscape_2d_figure(comparison: dict) -> Figure:
    """One panel per model, side by side, on one colour scale (:func:`contour_levels`)."""
    entries = _entries_with(comparison, "landscape_2d")
    grids = [np.asarray(e["landscape_2d"]["loss"], dtype=float) for e in entries]
    levels, note = contour_levels(grids)
    cmap = colormaps["viridis"].with_extremes(over="0.85")
    norm = BoundaryNorm(levels, cmap.N, extend="max")
    fig = Figure(figsize=(max(6.4, 0.8 + 3.4 * len(entries)), 4.6), dpi=120, layout="constrained")
    axes = fig.subplots(1, len(entries), squeeze=False, sharex=True, sharey=True)[0]
    for ax, entry, grid in zip(axes, entries, grids):
        land = entry["landscape_2d"]
        a, b = np.meshgrid(land["alphas"], land["betas"], indexing="ij")
        filled = ax.contourf(a, b, grid, levels=levels, cmap=cmap, norm=norm, extend="max")
        ax.contour(a, b, grid, levels=levels, colors="k", linewidths=0.4, alpha=0.5)
        i, j = np.unravel_index(np.argmin(grid), grid.shape)
        ax.plot([a[i, j]], [b[i, j]], "*", color="red", markeredgecolor="white", markersize=13,
                label="lowest loss on the grid")
        ax.plot([0.0], [0.0], "+", color="white", markersize=11, markeredgewidth=1.6,
                label="trained weights")
        ax.set_aspect("equal")
        ax.set_title(f"{entry['label']}\nloss {entry['loss']:.3g} at the weights, "
                     f"lowest {grid[i, j]:.3g}", fontsize=9)
        ax.set_xlabel("direction 1 (x filter norm)")
    axes[0].set_ylabel("direction 2 (x filter norm)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8,
               facecolor="0.6")
    bar = fig.colorbar(filled, ax=list(axes), shrink=0.9, label="loss")
    bar.set_ticks(levels[:: max(1, len(levels) // 8)])
    bar.ax.yaxis.set_major_formatter("{x:.3g}")
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(f"loss on a plane of two filter-normalised random directions\n"
                 f"{measured_on(comparison)}\n{note}", fontsize=9)
    return fig


def format_trace(trace: dict) -> str:
    stderr = trace["stderr"]
    return f"{trace['trace']:.4g}" + (f" ± {stderr:.2g}" if stderr is not None else "")


def eigenvalue_axis(values: np.ndarray) -> tuple[dict, np.ndarray]:
    """Axis scale and 15 shared histogram bins for eigenvalues: when a few large ones dominate
    (the usual spectrum), log-like (``log`` if all are positive, else ``asinh``, which keeps
    the negative tail) so the bulk near zero is not one bar; linear otherwise."""
    low, high = float(values.min()), float(values.max())
    magnitudes = np.abs(values)
    if high == low or magnitudes.max() <= 10 * np.median(magnitudes):
        return {"value": "linear"}, np.linspace(low, high if high > low else low + 1.0, 16)
    if low > 0:
        return {"value": "log"}, np.geomspace(low, high, 16)
    width = float(magnitudes.max()) / 30
    return ({"value": "asinh", "linear_width": width},
            width * np.sinh(np.linspace(np.arcsinh(low / width), np.arcsinh(high / width), 16)))


def spectrum_figure(comparison: dict) -> Figure:
    """The top eigenvalues against their rank, and (for ten or more) their distribution per
    model on shared bins: the paper's picture of how sharp each minimum is."""
    entries = _entries_with(comparison, "eigenvalues")
    tops = [np.asarray(e["eigenvalues"]["top"], dtype=float) for e in entries]
    k = max(len(t) for t in tops)
    scale, bins = eigenvalue_axis(np.concatenate(tops))
    with_density = k >= 10
    fig = Figure(figsize=(10.5 if with_density else 5.6, 4.0), dpi=120)
    ax = fig.add_subplot(1, 2 if with_density else 1, 1)
    for entry, top in zip(entries, tops):
        legend = f"{entry['label']}: largest {top[0]:.4g}"
        if "trace" in entry:
            legend += f", trace {format_trace(entry['trace'])}"
        ax.plot(range(1, len(top) + 1), top, marker="o", markersize=3, color=_colour(comparison, entry),
                label=legend)
    ax.set_yscale(**scale)
    ax.yaxis.set_major_formatter("{x:.3g}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_xlabel("rank")
    ax.set_ylabel(f"Hessian eigenvalue ({scale['value']} scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if with_density:
        hist = fig.add_subplot(1, 2, 2)
        for entry, top in zip(entries, tops):
            colour = _colour(comparison, entry)
            hist.hist(top, bins=bins, histtype="stepfilled", alpha=0.25, color=colour)
            hist.hist(top, bins=bins, histtype="step", linewidth=1.5, color=colour, label=entry["label"])
        hist.set_xscale(**scale)
        hist.xaxis.set_major_formatter("{x:.3g}")
        hist.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        hist.set_xlabel(f"Hessian eigenvalue ({scale['value']} scale)")
        hist.set_ylabel(f"how many of the top {k}")
        hist.grid(alpha=0.3)
        hist.legend(fontsize=8)
    method = entries[0]["eigenvalues"]["method"]
    fig.suptitle(f"top-{k} Hessian eigenvalues ({method}); {measured_on(comparison)}", fontsize=9)
    fig.tight_layout()
    return fig


def draw_comparison(results: dict, out_dir: str | Path) -> list[Path]:
    """The pictures of :func:`compare_checkpoints` (or of one :func:`measure_checkpoint`
    result) in ``out_dir``: ``flatness_spectrum.png``, ``flatness_landscape_1d.png`` and
    ``flatness_landscape_2d.png``, each drawn if some model has that measurement."""
    comparison = as_comparison(results)
    out_dir = Path(out_dir)
    pictures = (("eigenvalues", spectrum_figure, "flatness_spectrum.png"),
                ("landscape_1d", landscape_1d_figure, "flatness_landscape_1d.png"),
                ("landscape_2d", landscape_2d_figure, "flatness_landscape_2d.png"))
    return [save_figure(draw(comparison), out_dir / name)
            for key, draw, name in pictures if _entries_with(comparison, key)]


def write_report(results: dict, out_dir: str | Path) -> list[Path]:
    """``flatness.json`` plus the pictures (:func:`draw_comparison`)."""
    return [save_json(results, Path(out_dir) / "flatness.json"), *draw_comparison(results, out_dir)]
