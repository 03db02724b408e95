"""Per-layer approximation error (paper Figure 3) from diagnostic runs (`metrics.layer_error=true`).

    python -m l2c_bench.run metrics.layer_error=true steps=20      # writes metrics.branch_change
    python -m analysis.layer_error --results results --out analysis_out

For each such row: the mean squared change of every branch output between consecutive
evaluations, ||f(h_n) - f(h_n-1)||^2 (4 unguided calibration samples), as a heatmap over
evaluations x blocks (log scale), attention and MLP side by side: the cost of reusing a
branch's previous output, which L2C's router learns to trade against compute.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from .cli import results_to_files  # noqa: E402
from .figures import save_figure  # noqa: E402


def figure3(change: np.ndarray, title: str):
    """change: (nfe, blocks, 2); evaluation 0 has no previous output and is left out."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.25 * len(change) + 2.4), sharey=True)
    values = np.asarray(change, dtype=float)[1:]
    positive = values[values > 0]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    for ax, branch, name in zip(axes, (0, 1), ("Attention", "MLP"), strict=True):
        image = ax.imshow(np.where(values[:, :, branch] > 0, values[:, :, branch], np.nan), aspect="auto",
                          cmap="magma", norm=norm)
        ax.set_title(f"{name} branch")
        ax.set_xlabel("Block (input side left)")
        ax.set_yticks(range(len(values)), [str(n) for n in range(1, len(values) + 1)], fontsize=7)
    axes[0].set_ylabel("Evaluation (sampling order, noisy first)")
    fig.colorbar(image, ax=axes, label="mean squared change vs previous evaluation")
    fig.suptitle(title)
    return fig


def write_all(results, out):
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "metrics.branch_change" not in results:
        return written
    for _, row in results[results["metrics.branch_change"].notna()].iterrows():
        title = (f"{row['config.model.arch']}, {row['metrics.sampler']} NFE {int(row['config.steps'])}: "
                 f"per-branch change between evaluations ({row['config.scale.name']} scale)")
        written += save_figure(figure3(np.array(row["metrics.branch_change"]), title), out,
                               f"fig3_layer_error_{row['run_id']}", dpi=120)
    return written


def main(argv=None) -> None:
    results_to_files(__doc__, write_all, argv)


if __name__ == "__main__":
    main()
