"""Router heatmaps (paper Figure 5): where a router recomputes, per cache step and block.

    python -m analysis.routers --out analysis_out                 # shipped official and toy routers
    python -m analysis.routers --out analysis_out results/_routers/*.pt

Each figure: sigmoid(logit) for the cache steps (rows, in sampling order) x blocks (columns),
attention and MLP side by side, with the threshold's contour; the title gives the cached ratio.
Learned routers carry their model, sampler and NFE; official files are recognised by shape.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from l2c_bench.caching import l2c_plan, load_router  # noqa: E402
from l2c_bench.caching.methods.l2c.learning.store import (
    SHIPPED_DIR,
    read_metadata,  # noqa: E402
)
from l2c_bench.caching.methods.l2c.method import (
    PAPER_THRESHOLDS,
    ROUTER_DIR,  # noqa: E402
)
from l2c_bench.caching.methods.l2c.pairing import l2c_cache_steps  # noqa: E402
from l2c_bench.sampling import DEFAULT_SAMPLERS  # noqa: E402

from .figures import save_figure  # noqa: E402


def describe(path: Path) -> dict:
    """family, sampler, nfe, blocks and a label for a router file."""
    logits = load_router(path)
    meta = read_metadata(path)
    if "family" in meta:  # a learned router's own metadata
        family, sampler, label = meta["family"], meta["sampler"], f"{meta['arch']} (learned, lam {meta['recipe']['lam']:g})"
    else:  # the official files: DiT-XL/2 has 28 blocks (56 entries), U-ViT-H/2 29 (58)
        family = "dit" if logits.shape[1] == 56 else "uvit"
        sampler = DEFAULT_SAMPLERS[family]  # the paper's: DDIM for DiT, DPM-Solver-2 for U-ViT
        label = f"{'DiT-XL/2' if family == 'dit' else 'U-ViT-H/2'} (official {path.name})"
    return {"logits": logits, "family": family, "sampler": sampler, "nfe": logits.shape[0],
            "blocks": logits.shape[1] // 2, "label": label}


def heatmap(path: Path, threshold: float | None = None):
    info = describe(path)
    threshold = PAPER_THRESHOLDS[info["family"]] if threshold is None else threshold
    steps = l2c_cache_steps(info["family"], info["sampler"], info["nfe"])
    rows = torch.stack([torch.sigmoid(info["logits"][row]) for _, row in steps]).view(len(steps), info["blocks"], 2)
    plan = l2c_plan(info["logits"], threshold, info["family"], info["sampler"], info["nfe"], info["blocks"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(steps) + 2.2), sharey=True)
    for ax, branch, name in zip(axes, (0, 1), ("Attention", "MLP"), strict=True):
        values = rows[:, :, branch].numpy()
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.contour(values, levels=[threshold], colors="white", linewidths=1.2)
        ax.set_title(f"{name} branch")
        ax.set_xlabel("Block (input side left)")
        ax.set_yticks(range(len(steps)), [f"eval {n}" for n, _ in steps], fontsize=7)
    axes[0].set_ylabel("Cache step (sampling order, noisy first)")
    fig.colorbar(image, ax=axes, label="sigmoid(router logit): recomputed above the threshold")
    fig.suptitle(f"{info['label']}, {info['sampler']} NFE {info['nfe']}: threshold {threshold:g} "
                 f"(white contour), cached ratio {plan.cached_ratio:.3f}")
    return fig


def default_routers() -> list[Path]:
    return sorted(ROUTER_DIR.glob("official_*.pt")) + sorted(SHIPPED_DIR.glob("*.pt"))


def write_all(paths: list[Path], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        written += save_figure(heatmap(Path(path)), out, f"fig5_router_{Path(path).stem}", dpi=120)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="analysis_out")
    parser.add_argument("routers", nargs="*", help="router files (default: the shipped ones)")
    args = parser.parse_args(argv)
    for path in write_all([Path(p) for p in args.routers] or default_routers(), Path(args.out)):
        print(path)


if __name__ == "__main__":
    main()
