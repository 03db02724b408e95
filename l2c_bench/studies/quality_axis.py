"""Which quality axis tells step counts apart at toy scale: FID against the data, or the distance
to the converged sampler (l2c_bench/metrics/converged.py, docs/metrics.md).

    python -m l2c_bench.studies.quality_axis                                  # both toy models, NFE 10,20,50
    python -m l2c_bench.studies.quality_axis --models dit --samples 64 --nfes 10,50 --out axis.json
    python -m l2c_bench.studies.quality_axis -- device=cpu                    # extra Hydra overrides after --

For each model and NFE, the uncached point runs in this process as `python -m l2c_bench.run
cache=none` runs it (prepare, sample_part, finalize), with the converged reference at
`--converged-nfe`; its row metrics are kept in `<results-dir>/_studies/quality_axis/`, so a rerun
only re-prints. Prints FID against the data and each converged-reference score with the row's 95%
interval (metrics/intervals.py: seeded delete-a-group jackknife over the samples), and whether the
NFEs are separated (pairwise disjoint intervals) on each axis.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .router_tradeoff import compose

# (row key, label, higher is better)
AXES = (
    ("fid", "FID vs data", False),
    ("converged_latent_psnr_db", "latent PSNR vs conv (dB)", True),
    ("converged_latent_mse", "latent MSE vs conv", False),
    ("converged_image_psnr_db", "image PSNR vs conv (dB)", True),
    ("converged_frame_psnr_db", "frame PSNR vs conv (dB)", True),  # video: per frame, mean per video
    ("fid_vs_converged", "FID vs conv", False),
    ("kid_vs_converged", "KID vs conv", False),
)


def run_uncached(model: str, nfe: int, args) -> tuple[dict, float]:
    """(row metrics, seconds) of the uncached point; read back if kept."""
    from omegaconf import OmegaConf

    from ..records import run_id_for
    from ..runs.prepare import prepare
    from ..runs.sample import sample_part
    from ..runs.score import finalize
    from ..system.files import atomic_path

    cfg = compose([f"model={model}", f"steps={nfe}", "cache=none", "tracker=none", f"results_dir={args.results_dir}",
                   f"metrics.num_samples={args.samples}", f"metrics.batch_size={args.batch_size}",
                   f"metrics.converged_nfe={args.converged_nfe}", f"metrics.interval_seed={args.seed}",
                   "metrics.timing_batch=2", "metrics.timing_repeats=1", "metrics.timing_warmup=0", *args.overrides])
    run_id = run_id_for(OmegaConf.to_container(cfg, resolve=True))
    kept = Path(args.results_dir) / "_studies" / "quality_axis" / run_id / "metrics.json"
    if kept.is_file():
        stored = json.loads(kept.read_text())
        return stored["metrics"], stored["seconds"]
    start = time.perf_counter()
    point = prepare(cfg)
    metrics = finalize(point, sample_part(point, range(args.samples)), kept.parent)
    seconds = time.perf_counter() - start
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}
    with atomic_path(kept) as tmp:
        tmp.write_text(json.dumps({"metrics": metrics, "seconds": seconds}, indent=1, default=str))
    return metrics, seconds


def separated(intervals: list[tuple[float, float] | None]) -> bool:
    """Pairwise disjoint intervals (an unknown interval separates nothing)."""
    if any(bounds is None or None in bounds for bounds in intervals):
        return False
    ordered = sorted(intervals)
    return all(a[1] < b[0] for a, b in zip(ordered, ordered[1:], strict=False))


def study(args) -> dict:
    """{model: {nfe: {"seconds", "primary_quality", axis: (value, low, high)}}}"""
    results = {}
    for model in args.models:
        results[model] = {}
        for nfe in args.nfes:
            metrics, seconds = run_uncached(model, nfe, args)
            results[model][nfe] = {"seconds": seconds, "primary_quality": metrics.get("primary_quality"),
                                   **{key: (metrics.get(key), metrics.get(f"{key}_ci_low"),
                                            metrics.get(f"{key}_ci_high")) for key, _, _ in AXES}}
            print(f"{model} nfe {nfe}: {seconds:.0f} s", flush=True)
    return results


def report(results: dict, args) -> str:
    """The table: each axis's value [95% interval] per NFE, and whether the NFEs are separated."""
    def number(v) -> str:
        return "-" if v is None else f"{v:.4g}"

    lines = [f"uncached, {args.samples} samples, converged reference NFE {args.converged_nfe}, "
             f"95% intervals: delete-a-group jackknife (metrics/intervals.py, seed {args.seed})"]
    for model, points in results.items():
        primary = {p["primary_quality"] for p in points.values()}
        lines.append(f"\n{model} (primary_quality: {', '.join(sorted(map(str, primary)))})")
        cells = {key: [f"{number(v)} [{number(lo)}, {number(hi)}]" for v, lo, hi in (p[key] for p in points.values())]
                 for key, _, _ in AXES}
        width = 2 + max(len(c) for row in cells.values() for c in row)
        lines.append(f"{'  axis (* primary)':<27}" + "".join(f"{'NFE ' + str(nfe):>{width}}" for nfe in points) + "  separated")
        for key, label, higher in AXES:
            verdict = separated([p[key][1:] for p in points.values()])
            label = f"{'*' if key in primary else ' '} {label} {'↑' if higher else '↓'}"
            lines.append(f"{label:<27}" + "".join(f"{c:>{width}}" for c in cells[key]) + f"  {'yes' if verdict else 'NO'}")
        lines.append("seconds per point: " + ", ".join(f"NFE {nfe} {p['seconds']:.0f}" for nfe, p in points.items())
                     + " (the first point of a model also samples the converged reference, unless stored)")
    verdicts = [separated([p[key][1:] for p in points.values()]) for points in results.values()
                for key in {p["primary_quality"] for p in points.values()}]
    lines.append(f"\nprimary quality axis separates NFE {', '.join(map(str, args.nfes))} on every model: "
                 f"{'yes' if verdicts and all(verdicts) else 'NO'}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="dit,uvit", type=lambda s: s.split(","))
    parser.add_argument("--nfes", default="10,20,50", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--converged-nfe", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0, help="metrics.interval_seed (the jackknife's groups)")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--out", help="write the numbers as JSON")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every point, e.g. device=cpu")
    args = parser.parse_args(argv)
    results = study(args)
    print(report(results, args))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
