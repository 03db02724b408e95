"""How close is the converged reference to the ODE solution it stands for?

Per toy model, a fine solve (the family's ODE sampler at `--fine` NFE, default 1000) of a few
seeds stands for the probability-flow ODE's solution from each seed's noise. Each candidate
reference (a solver at an NFE) is scored against it by paired PSNR (latent: the fine latents'
peak-to-peak as the peak; image: [-1, 1], peak 2), mean over the seeds' squared errors, as the
rows score methods. For scale, the run the README sweep scores best (uncached at NFE 50: every
cached row of that sweep is at most as close) is scored the same way: a reference is fit for
purpose when its PSNR to the fine solve is at least 10 dB above that row's (its own error is then
under a tenth of what it measures, in squared error).

    python -m l2c_bench.studies.reference_accuracy [--samples 8] [--fine 1000]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from ..pipeline import generate, to_images
from ..runs.sample import batch_kwargs

# (solver, NFE) candidates per family; the first is what metrics.converged_nfe=250 uses
CANDIDATES = {
    "dit": [("ddim", 250), ("ddim", 100), ("ddim", 500)],
    "uvit": [("dpm_solver2", 250), ("dpm_solver2", 100), ("dpm_solver_fast", 100), ("dpm_solver_fast", 50)],
}
FINE = {"dit": "ddim", "uvit": "dpm_solver2"}
BEST_ROW = 50  # uncached NFE of the README sweep's closest row


def psnr(latents: torch.Tensor, images: torch.Tensor, fine_latents: torch.Tensor, fine_images: torch.Tensor):
    """(latent PSNR, image PSNR) in dB of a batch against the fine solve, over all its samples."""
    peak = float(fine_latents.max() - fine_latents.min())
    latent_mse = float((latents.double() - fine_latents.double()).pow(2).mean())
    image_mse = float((images.double() - fine_images.double()).pow(2).mean())
    return 10 * math.log10(peak**2 / latent_mse), 10 * math.log10(2.0**2 / image_mse)


def solve(point, kwargs: dict, sampler: str, nfe: int):
    """Latents and images of the batch with `sampler` at `nfe`, uncached; and its seconds."""
    start = time.perf_counter()
    out = generate(point.model, **{**kwargs, "sampler": sampler, "steps": nfe, "eta": 0.0, "decode": False,
                                   "vae": None})
    seconds = time.perf_counter() - start
    latents = out.latents.cpu()
    return latents, to_images(latents.to(point.device), point.vae).float().cpu(), seconds


def study(model: str, samples: int, fine: int) -> list[dict]:
    from .. import config
    from ..runs.prepare import prepare

    point = prepare(config.compose([f"model={model}", "cache=none", "tracker=none", "device=cpu",
                                    "results_dir=/tmp/l2c-bench-reference-accuracy"]))
    kwargs = batch_kwargs(point, torch.arange(samples))
    family = point.model.family
    fine_latents, fine_images, fine_s = solve(point, kwargs, FINE[family], fine)
    rows = [{"model": model, "solver": FINE[family], "nfe": fine, "latent_psnr_db": math.inf,
             "image_psnr_db": math.inf, "seconds_per_sample": fine_s / samples, "role": "fine solve"}]
    for sampler, nfe in CANDIDATES[family]:
        latents, images, seconds = solve(point, kwargs, sampler, nfe)
        rows.append({"model": model, "solver": sampler, "nfe": nfe, "role": "reference candidate",
                     "seconds_per_sample": seconds / samples,
                     **dict(zip(("latent_psnr_db", "image_psnr_db"), psnr(latents, images, fine_latents, fine_images),
                                strict=True))})
    latents, images, seconds = solve(point, kwargs, point.run.sampler.name, BEST_ROW)
    rows.append({"model": model, "solver": point.run.sampler.name, "nfe": BEST_ROW, "role": "best README row",
                 "seconds_per_sample": seconds / samples,
                 **dict(zip(("latent_psnr_db", "image_psnr_db"), psnr(latents, images, fine_latents, fine_images),
                            strict=True))})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--fine", type=int, default=1000, help="NFE of the fine solve")
    parser.add_argument("--models", nargs="+", default=["dit", "uvit"])
    args = parser.parse_args(argv)
    print(f"PSNR to a {args.fine}-NFE solve, seeds 0..{args.samples - 1} (CPU, fp32); margin: image PSNR "
          f"above the best README row's")
    print("| model | solver | NFE | role | latent PSNR (dB) | image PSNR (dB) | margin (dB) | s / sample |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models:
        rows = study(model, args.samples, args.fine)
        best = rows[-1]["image_psnr_db"]
        for row in rows:
            margin = "" if row["role"] != "reference candidate" else f"{row['image_psnr_db'] - best:+.1f}"
            print(f"| {row['model']} | {row['solver']} | {row['nfe']} | {row['role']} | {row['latent_psnr_db']:.1f} | "
                  f"{row['image_psnr_db']:.1f} | {margin} | {row['seconds_per_sample']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
