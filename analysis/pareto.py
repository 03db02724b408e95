"""Speed-quality plots (paper Figure 4) and threshold curves (Figure 6) from the results store.

    python -m analysis.pareto --results results --out analysis_out

Figure 4: for each (scale, features, model, resolution, base NFE), quality against latency and
against MACs (quality: the rows' primary axis, `metrics.primary_quality`: image PSNR against the
converged sampler at toy scale, FID otherwise); one series per method (step reduction = the uncached sampler at fewer steps,
each heuristic, L2C, FORA, DeepCache, ...), the Pareto front of all points as a step line, the
points tied with it (analysis.uncertainty) ringed, the uncached point at the base NFE as dashed
lines and its quality interval as a grey band. Figure 6: FID and speedup against the L2C threshold,
one curve per lambda. Every point with a 95% interval has it as error bars (none where unknown).
PNG and PDF; a method has the same colour in every plot.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .cli import results_to_files  # noqa: E402
from .figures import save_figure  # noqa: E402
from .labels import paper_frame  # noqa: E402
from .metrics import METRICS, higher_is_better, macs_unit, quality_column  # noqa: E402
from .paper import BASELINES  # noqa: E402
from .uncertainty import FRONT, TIED, front_status, interval, oriented  # noqa: E402

# x axes of Figure 4; MACs in the unit their size calls for (macs_unit)
AXES = {"latency_s": "Latency (s, one batch)", "macs_t": "MACs per image ({unit})"}


def x_axis(x: str, values) -> tuple[str, float]:
    """The label of x axis `x` and the factor from the column's unit to the one plotted."""
    unit, factor = macs_unit(values) if x == "macs_t" else (None, 1.0)
    return AXES[x].format(unit=unit), factor


def pareto_front(cost, quality) -> list[bool]:
    """Points not dominated by another (lower-or-equal cost and FID, one strictly lower)."""
    return [status == FRONT for status in front_status(cost, quality)]


def intervals(points: pd.DataFrame, metric: str, factor: float = 1.0) -> list:
    """Each point's 95% interval of `metric` (a paper_frame column) times `factor`, None where unknown."""
    found = [interval(row, metric) for _, row in points.iterrows()]
    return [None if bounds is None else (bounds[0] * factor, bounds[1] * factor) for bounds in found]


def error_bars(ax, x, y, x_intervals, y_intervals, color, label: str) -> None:
    """Each known 95% interval as a bar from its low to its high end (vertical for y, horizontal
    for x); unknown and zero-width (exact) intervals draw nothing. The bars are labelled
    `_<label> y interval` / `x interval` (kept out of the legend)."""
    for lines, position, spans, axis in ((ax.vlines, x, y_intervals, "y"), (ax.hlines, y, x_intervals, "x")):
        known = [(p, bounds) for p, bounds in zip(position, spans, strict=True)
                 if bounds is not None and bounds[1] > bounds[0]]
        if known:
            lines([p for p, _ in known], [b[0] for _, b in known], [b[1] for _, b in known], color=color,
                  linewidth=1, alpha=0.7, label=f"_{label} {axis} interval")


# Distinct tab20 entries for the series that share plots (a hash would make some collide).
PALETTE = {"L2C": 6, "FORA": 0, "DeepCache": 14, "Faster Diffusion": 15, "TaylorSeer": 2, "Δ-DiT": 17,
           "FBCache": 8, "TeaCache": 4, "ToCa": 18, "Random Drop": 11, "Heuristic (bottom)": 1,
           "Heuristic (top)": 3, "Heuristic (random)": 5, "Heuristic (greedy)": 9}


def colour(name: str):
    """The same colour for a series in every plot: a fixed one for known methods, step reduction
    in dark grey, else a stable hash into tab20."""
    if name.endswith("(step reduction)"):
        return (0.25, 0.25, 0.25, 1.0)
    index = PALETTE.get(name, int(hashlib.md5(name.encode()).hexdigest(), 16) % 20)
    return plt.get_cmap("tab20")(index)


def figure4(points: pd.DataFrame, *, title: str, base_nfe: int, quality: str = "fid"):
    """points: paper_frame rows of one model (all NFE <= base for the baselines, = base for methods);
    quality: the METRICS column on the y axis."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    baseline = points[(points["method"].isin(BASELINES)) & (points["nfe"] == base_nfe)]
    higher, name_y = higher_is_better(quality), METRICS[quality][3]
    for ax, x in zip(axes, AXES, strict=True):
        label, factor = x_axis(x, points[x])
        data = points.dropna(subset=[x, quality])
        data = data.assign(shown=data[x] * factor, x_interval=intervals(data, x, factor),
                           q_interval=intervals(data, quality))
        for name, group in data.groupby("series"):
            group = group.sort_values("shown")
            ax.plot(group["shown"], group[quality], "o-", color=colour(name), label=name, markersize=5)
            error_bars(ax, group["shown"], group[quality], group["x_interval"], group["q_interval"], colour(name), name)
        if len(data):
            values, bounds = oriented(data[quality].tolist(), data["q_interval"].tolist(), higher)
            status = front_status(data["shown"].tolist(), values, data["x_interval"].tolist(), bounds)
            front = data[[s == FRONT for s in status]].sort_values("shown")
            ax.step(front["shown"], front[quality], where="post", color="black", linewidth=1, alpha=0.6,
                    label="Pareto front")
            tied = data[[s == TIED for s in status]]
            if len(tied):
                ax.plot(tied["shown"], tied[quality], "o", markersize=10, markerfacecolor="none",
                        markeredgecolor="black", label="tied with the front (95% intervals overlap)")
        for _, b in baseline.dropna(subset=[x, quality]).iterrows():
            ax.axhline(b[quality], linestyle="--", color="grey", linewidth=1)
            ax.axvline(b[x] * factor, linestyle="--", color="grey", linewidth=1, label=f"uncached, NFE {base_nfe}")
            if interval(b, quality) is not None:
                ax.axhspan(*interval(b, quality), color="grey", alpha=0.15, linewidth=0,
                           label="uncached, 95% interval")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{name_y} ({'higher' if higher else 'lower'} is better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def figure6(points: pd.DataFrame, *, title: str):
    """FID and speedup against the threshold, one curve per lambda (L2C rows)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for lam, group in points.dropna(subset=["threshold"]).groupby(points["lambda"].fillna(-1)):
        group = group.sort_values("threshold")
        name = "lambda (official router)" if lam == -1 else f"lambda = {lam:g}"
        for ax, y, label in ((axes[0], "fid", "FID (lower is better)"), (axes[1], "speedup", "Speedup (x)")):
            ax.plot(group["threshold"], group[y], "o-", color=colour(name), label=name)
            error_bars(ax, group["threshold"], group[y], [None] * len(group), intervals(group, y), colour(name), name)
            ax.set_xlabel("Router threshold")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_all(results: pd.DataFrame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    ours = paper_frame(results)
    written = []
    if ours.empty:
        return written
    for (scale, features, model, res), rows in ours.groupby(["scale", "features", "model", "resolution"]):
        slug = f"{scale}_{features}_{model.replace('/', '')}_{res}"
        for base in sorted(rows.loc[rows["method"].isin(BASELINES), "nfe"].unique()):
            points = rows[((rows["method"].isin(BASELINES)) & (rows["nfe"] <= base))
                          | (~rows["method"].isin(BASELINES) & (rows["nfe"] == base))]
            quality = quality_column(points)
            if points["method"].nunique() < 2 or points[quality].isna().all():
                continue
            title = f"{model} {res}px, base NFE {base} ({scale} scale, {features} features)"
            written += save_figure(figure4(points, title=title, base_nfe=int(base), quality=quality), out,
                                   f"fig4_{slug}_nfe{base}")
        l2c = rows[(rows["cache"] == "l2c") & rows["threshold"].notna()]
        for nfe, group in l2c.groupby("nfe"):
            if group["threshold"].nunique() > 1:
                title = f"{model} {res}px, NFE {nfe}: L2C threshold ({scale} scale, {features} features)"
                written += save_figure(figure6(group, title=title), out, f"fig6_{slug}_nfe{nfe}")
    return written


def main(argv=None) -> None:
    results_to_files(__doc__, write_all, argv)


if __name__ == "__main__":
    main()
