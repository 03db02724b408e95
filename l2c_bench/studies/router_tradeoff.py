"""L2C's lambda trade-off against the hand-made baselines at equal cached ratio (issue evidence).

    python -m l2c_bench.studies.router_tradeoff --model dit --lams 0,1e-4,1e-3,1e-2 --samples 64
    python -m l2c_bench.studies.router_tradeoff --model uvit --lams 0,0.03,0.1,0.3 --out tradeoff.csv

For each lambda: learn (or reuse) the router with the `router.*` recipe of the config tree
(extra Hydra overrides after `--`), sample `--samples` seeds uncached, with L2C, and with the
`heuristic` baselines (bottom, top, random, greedy) reusing the same fraction of branches in
the same cache steps; print cached ratio and paired fidelity to the uncached samples (latent
MSE, image PSNR) per method, and where each router caches (reused fraction per cache step).
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch


def compose(overrides: list[str]):
    """The config these overrides compose (the studies' entry to the config tree)."""
    from ..config import compose as compose_config

    return compose_config(overrides)


def describe(overrides: list[str]):
    """The run description these overrides compose."""
    from ..runs.prepare import describe as describe_run

    return describe_run(compose(overrides))


def per_step_reuse(plan) -> list[float]:
    """Reused fraction of branches at each cache step, in sampling order."""
    return [1 - sum(c for block in plan.compute[n] for c in block) / (2 * plan.num_blocks) for n in plan.cache_steps]


def study(model_name: str, nfe: int, lams: list[float], samples: int, results_dir: str, extra: list[str],
          strategies=("bottom", "top", "random", "greedy")) -> list[dict]:
    from .. import generate
    from ..caching import make_cache
    from ..caching.methods.l2c.learning.job import learn
    from ..metrics.quality import mse, psnr
    from ..models.loading import load_model
    from ..system.devices import resolve_device

    base = [f"model={model_name}", f"steps={nfe}", f"results_dir={results_dir}", "tracker=none", *extra]
    run = describe(base)
    device = resolve_device(run.device)
    model, vae = load_model(run.model, device)
    sampler = run.sampler.name
    seeds = list(range(samples))
    labels = torch.arange(samples) % model.num_classes
    common = dict(labels=labels, seeds=seeds, steps=nfe, sampler=sampler, guidance_scale=run.model.guidance_scale,
                  guidance_channels=run.model.guidance_channels, vae=vae, decode=True, batch_size=64)
    reference = generate(model, **common)

    def score(cache, **info):
        out = generate(model, cache=cache, **common)
        return {**info, "cached_ratio": out.cached_ratio, "latent_mse": mse(out.latents, reference.latents),
                "psnr_db": psnr(out.images, reference.images, peak_to_peak=2.0),
                "reuse_per_step": [round(r, 3) for r in per_step_reuse(out.plan)]}

    rows = []
    for lam in lams:
        path = learn(describe(base + [f"router.lam={lam}"]), device=device, model=model, vae=vae)
        l2c = score(make_cache("l2c", router=str(path)), method="l2c", lam=lam)
        rows.append(l2c)
        print(_fmt(l2c), flush=True)
        for strategy in strategies:
            row = score(make_cache("heuristic", strategy=strategy, ratio=l2c["cached_ratio"]),
                        method=f"heuristic-{strategy}", lam=lam)
            rows.append(row)
            print(_fmt(row), flush=True)
    return rows


def _fmt(row: dict) -> str:
    return (f"lam={row['lam']:<8g} {row['method']:<18} cached={row['cached_ratio']:.3f} "
            f"latent_mse={row['latent_mse']:.3e} psnr={row['psnr_db']:.2f} dB  reuse/step={row['reuse_per_step']}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dit", choices=["dit", "uvit"])
    parser.add_argument("--nfe", type=int, default=20)
    parser.add_argument("--lams", default="0,1e-4,1e-3,1e-2")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--out", help="write the table as CSV")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. router.lr=0.05")
    args = parser.parse_args(argv)
    rows = study(args.model, args.nfe, [float(x) for x in args.lams.split(",")], args.samples, args.results_dir,
                 args.overrides)
    if args.out:
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
