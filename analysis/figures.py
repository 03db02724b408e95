"""Writing a figure: PNG and PDF side by side, then the figure is closed."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, out: Path, stem: str, dpi: int = 130) -> list[Path]:
    """`<out>/<stem>.png` and `.pdf`; returns both paths."""
    import matplotlib.pyplot as plt

    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return paths
