"""Quality against the converged sampler: each model's own high-NFE uncached samples.

At toy scale the toy models' own error against the procedural data swamps what caching and step
reduction cost (toy DiT FID vs the data: 2.80 / 2.81 / 3.01 at NFE 10 / 20 / 50), so FID against
the data cannot rank them. Every deterministic sampler of a family approaches the same limit as
its NFE grows: the solution of the probability-flow ODE from the sample's initial noise. The
converged reference approximates it with the family's ODE sampler at `metrics.converged_nfe`
(DiT: DDIM with eta 0; U-ViT: DPM-Solver-2), uncached, on the run's seeds, labels, guidance and
numerics. Against it a run is scored

- paired (same seed): latent MSE and PSNR, image MSE and PSNR;
- as distributions: FID and KID of the run's features against the reference's (the run's own
  feature network: the toy classifier at toy scale; KID with the paired estimator, as each
  sample and its reference share a seed).

`runs.sample.sample_part` keeps per-sample sums (`batch_statistics`) so any shard split gives the same
numbers (their intervals: metrics/intervals.py). The reference latents are sampled once per sample
and kept in the store every results folder shares (`runs.sample.stored_reference`, records/references.py).
"""

from __future__ import annotations

import torch

from ..description import RunDescription
from ..models.loading import RunConfigError
from ..sampling import DEFAULT_SAMPLERS, SAMPLERS, check_sampler
from .quality import paired_scores, paired_sums

# The family's probability-flow ODE solver, run deterministically: the reference for every sampler
# of that family (they share its noise schedule and time convention).
CONVERGED_SAMPLERS = DEFAULT_SAMPLERS

# The headline quality axis of a toy-scale row with the converged reference on. Chosen by
# measurement (`python -m l2c_bench.studies.quality_axis`, docs/metrics.md): it separates uncached
# NFE 10, 20 and 50 of both toy models with disjoint 95% intervals, which FID against the data does
# not; of the axes that do (latent and image PSNR/MSE), its peak is a fixed unit (images in [-1, 1]),
# not the run's latent range. Stochastic samplers have no paired scores: theirs is FID vs converged.
TOY_PRIMARY_QUALITY = "converged_image_psnr_db"
TOY_PRIMARY_QUALITY_STOCHASTIC = "fid_vs_converged"
# A video's: the mean over its frames of each frame's image PSNR against the converged video's frame
# (metrics/video.py; no feature network, so no FID): it separates the trained Wan toy's uncached NFE
# 10, 20 and 50 (docs/diffusers.md, "Trained toy weights").
TOY_PRIMARY_QUALITY_VIDEO = "converged_frame_psnr_db"

PAIRED_KEYS = ("converged_latent_mse", "converged_latent_psnr_db", "converged_image_mse", "converged_image_psnr_db")


def check_converged(run: RunDescription) -> None:
    """metrics.converged_nfe: 0 (off) or an NFE the family's ODE sampler takes, at least `steps`."""
    nfe = run.metrics.converged_nfe
    if nfe == 0:
        return
    if nfe < 0:
        raise RunConfigError(f"metrics.converged_nfe must be >= 0 (0 turns the converged reference off), got {nfe}")
    try:
        check_sampler(CONVERGED_SAMPLERS[run.model.family], run.model.family, nfe)
    except ValueError as exc:
        raise RunConfigError(f"metrics.converged_nfe={nfe}: {exc}") from None
    if nfe < run.steps:
        raise RunConfigError(f"metrics.converged_nfe={nfe} is below steps={run.steps}: the converged reference "
                             "must take at least the run's NFE; raise it, or set 0 to turn it off")


def enabled(run: RunDescription, has_features: bool) -> bool:
    """Scored against the converged reference: configured, and the weights are real (random
    weights have no quality metrics and no shared references) and give images or frames
    (`has_features`: runs.prepare.Point.images)."""
    return bool(run.metrics.converged_nfe) and has_features


def reference_kwargs(kwargs: dict, family: str, nfe: int) -> dict:
    """`generate` arguments of the converged reference of a batch sampled with `kwargs`: the same
    seeds, labels, guidance and decoding; the family's ODE sampler at `nfe`, deterministic."""
    return {**kwargs, "sampler": CONVERGED_SAMPLERS[family], "steps": nfe, "eta": 0.0}


def batch_statistics(latents: torch.Tensor, images: torch.Tensor, reference_latents: torch.Tensor,
                     reference_images: torch.Tensor, features) -> dict[str, torch.Tensor]:
    """One batch's per-sample statistics against its converged reference (`quality.paired_sums`,
    the reference latents' range in float64) and the reference's features (n, D; none without a
    feature network: video)."""
    sums = paired_sums(latents, images, reference_latents.cpu().double(), reference_images)
    out = {"converged_latent_se": sums["latent_se"], "converged_latent_range": sums["latent_range"],
           "converged_image_se": sums["image_se"]}
    if features is not None:
        out["converged_features"] = torch.from_numpy(features.embed(reference_images)[0])
    return out


def scores(part: dict) -> dict[str, float]:
    """Converged-reference scores of a whole run: paired MSE/PSNR (`quality.paired_scores`), and
    FID/KID of its features against the reference's."""
    from .quality import feature_statistics, fid_from_statistics, paired_kid

    out = {**paired_scores("converged", part["converged_latent_se"], part["converged_image_se"],
                           part["converged_latent_range"], part["latent_numel"], part["image_numel"]),
           "fid_vs_converged": None, "kid_vs_converged": None}
    if len(part["converged_latent_se"]) >= 2 and part.get("converged_features") is not None:  # two samples, features
        features, reference = part["features"].numpy(), part["converged_features"].numpy()
        out["fid_vs_converged"] = fid_from_statistics(*feature_statistics(features), *feature_statistics(reference))
        out["kid_vs_converged"] = paired_kid(features, reference)  # rows are pairs: not `kid`
    return out


def stochastic(run: RunDescription, sampler: str) -> bool:
    """Samples depend on noise drawn along the way: no seed-by-seed twin on the ODE's path."""
    return SAMPLERS[sampler].stochastic or (sampler == "ddim" and run.sampler.eta != 0)


def primary_quality(run: RunDescription, sampler: str, has_features: bool, video: bool = False) -> str | None:
    """The metric (row key without `metrics.`) a row's headline quality is on: at toy scale with
    the converged reference on, TOY_PRIMARY_QUALITY (stochastic samplers: ..._STOCHASTIC; video:
    ..._VIDEO); otherwise FID against the data. Without image metrics (random weights, or latents
    without a VAE): the fidelity to the uncached twin, which every cached row has."""
    if not has_features:
        return "paired_latent_psnr_db"
    if run.scale.name == "toy" and enabled(run, has_features):
        if video:
            return None if stochastic(run, sampler) else TOY_PRIMARY_QUALITY_VIDEO
        return TOY_PRIMARY_QUALITY_STOCHASTIC if stochastic(run, sampler) else TOY_PRIMARY_QUALITY
    if video:
        return "paired_latent_psnr_db"
    return "fid" if run.metrics.fid else None


def row_metrics(run: RunDescription, sampler: str, part: dict, has_features: bool, video: bool = False) -> dict:
    """The row's converged-reference fields (flat, without `metrics.`), from a whole run's part."""
    out = {"converged_nfe": 0, "primary_quality": primary_quality(run, sampler, has_features, video)}
    if not enabled(run, has_features):
        return out
    out.update(converged_nfe=run.metrics.converged_nfe, converged_sampler=CONVERGED_SAMPLERS[run.model.family],
               **scores(part))
    if stochastic(run, sampler):
        how = f"ddim with eta {run.sampler.eta}" if sampler == "ddim" else sampler
        out.update(dict.fromkeys(PAIRED_KEYS), converged_note=f"{how} is stochastic: paired scores against the "
                   "converged ODE samples are not meaningful; FID/KID are")
    return out
