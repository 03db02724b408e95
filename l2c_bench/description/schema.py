"""The typed schema of each Hydra group a run composes (`scale`, `model`, `sampler`, `metrics`,
`tracker`, `router`, `calibration`, `shard`): every key's type, default and meaning, declared once.

`l2c_bench/config.py` assembles them into the run's `Config`; `conf/` files set values over these
defaults; `l2c_bench.description` makes a run's frozen description of each from the composed config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional  # noqa: UP035 - OmegaConf reads typing's forms


@dataclass
class ScaleConfig:
    name: str = "toy"  # toy | paper
    features: str = "toy"  # feature network for quality metrics: toy | inception


@dataclass
class ModelConfig:
    family: str = "dit"  # dit | uvit | flow (the sampler conventions; model=diffusers: set by the class)
    arch: str = "DiT-toy"  # a name of l2c_bench.models.MODEL_SPECS, or `diffusers` (model=diffusers)
    checkpoint: str = "toy"  # a path, "toy" (shipped asset) or "random" (latency/MAC studies)
    vae: str = "none"  # none (pixel space) | sd (the SD kl-f8 VAE) | pretrained (model=diffusers: the folder's vae/)
    vae_checkpoint: str | None = None
    guidance_scale: float = 1.5  # in the family's convention (DiT: w, 1 = off; U-ViT: s, 0 = off)
    guidance_channels: Optional[int] = 3  # noqa: UP007 - DiT: guided eps channels; None: the model's own
    default_sampler: str = "ddim"
    latency_includes_decode: bool = False  # paper: DiT latency excludes the VAE, U-ViT includes it
    overrides: dict[str, Any] = field(default_factory=dict)  # constructor overrides of the arch
    # model=diffusers (docs/diffusers.md); absent from the identity of every other model's runs
    diffusers_class: Optional[str] = None  # noqa: UP007 - the wrapped class (l2c_bench.models.zoo.ADAPTERS)
    pretrained: Optional[str] = None  # noqa: UP007 - paper scale: a local from_pretrained folder
    config: dict[str, Any] = field(default_factory=dict)  # diffusers config keys over the toy configuration
    zoo: dict[str, Any] = field(default_factory=dict)  # the adapter's settings (ZooArgs: prompts, flow_shift, ...)
    # text-to-image classes: `toy` or a .txt/.jsonl/.csv file of prompts (models/zoo/prompt_sets.py)
    prompt_set: Optional[str] = None  # noqa: UP007 - None: the seeded bank's numbered prompts


@dataclass
class SamplerConfig:
    name: str | None = None  # None: the model's default_sampler
    eta: float = 0.0  # DDIM only


@dataclass
class MetricsConfig:
    num_samples: int = 100  # generated per run for quality metrics
    batch_size: int = 50
    class_accuracy: bool = True  # on-class rate under the feature network's classifier
    fid: bool = True  # FID against the scale's reference statistics
    reference_samples: int = 2000  # images behind the toy reference statistics
    fid_mode: str = "clean"  # inception features: clean | legacy_tensorflow (ADM-evaluator comparable)
    reference: str | None = None  # ADM reference batch .npz (mu/sigma, arr_0), .npz of features, or a folder of images
    clip_model: str | None = None  # a local CLIP folder (transformers' CLIPModel): CLIP score of text-to-image runs
    # LPIPS per sample against the uncached twin and the converged sampler: the backbone's weights as a
    # local file (torchvision's state dict, e.g. alexnet-owt-7be5be79.pth; never downloaded); None: skipped
    lpips_backbone: str | None = None
    lpips_net: str = "alex"  # alex | vgg | squeeze: LPIPS' linear heads ship with torchmetrics
    timing_batch: int = 8  # images per timed sampling call (paper: 8, with CFG)
    # interleaved repeats of the method and its uncached twin: at least timing_min_repeats (>= 6: the
    # latency/speedup intervals need them, metrics/intervals.py), then until the speedup's 95%
    # interval is within +-timing_halfwidth of it (0: always timing_repeats), at most timing_repeats
    timing_repeats: int = 10
    timing_min_repeats: int = 8  # 6 covers 93%, 8 94%, 10 96% (python -m l2c_bench.benchmarks.timing_coverage)
    timing_halfwidth: float = 0.05
    timing_warmup: int = 1  # warm-up calls of each function, at least
    timing_min_warmup_s: float = 0.0  # ... and more until this long has passed (paper scale: a few s)
    grid_samples: int = 32  # images in samples.png
    layer_error: bool = False  # diagnostic (paper Fig. 3): per-branch change between evaluations, in the row
    # 95% intervals of the row's numbers (metrics/intervals.py, docs/metrics.md "Intervals"):
    interval_resamples: int = 1000  # bootstrap resamples of the timed repeat pairs (speedup); 0 = no intervals
    interval_groups: int = 20  # delete-a-group jackknife groups of the samples (quality metrics)
    interval_seed: int = 0  # seeds the jackknife groups and the bootstrap: same seed, same intervals
    # NFE of the converged reference: the model's own uncached samples on the same seeds and labels
    # with the family's ODE sampler (DiT: DDIM eta 0; U-ViT: DPM-Solver-2, even NFE), against which
    # quality is also measured (l2c_bench/metrics/converged.py); 0 = off. Off here, 250 at toy scale
    # (conf/scale/toy.yaml): it costs one converged_nfe pass over the run's seeds per sweep.
    converged_nfe: int = 0


@dataclass
class TrackerConfig:
    name: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline | online | disabled
    project: str = "l2c-bench"
    entity: str | None = None
    group: str | None = None  # default: the Hydra sweep folder's name
    dir: str | None = None  # default: <results_dir>
    # online: wait at most this long for W&B; then this point and the sweep's later ones log offline
    init_timeout_s: float = 20.0


@dataclass
class RouterConfig:
    """L2C router learning (`python -m l2c_bench.train_router`; `cache.router=auto` looks routers up
    by this recipe). Family defaults (lam, clamp, loss, label_dropout) come from model_scale/."""

    lam: float = 5e-6  # weight of sum(sigmoid(logits)) of the trained cache step
    lr: float = 1e-3  # AdamW on the logits (official code and checkpoints: 1e-3; paper text: 1e-2)
    iterations: int = 400
    batch_size: int = 32  # global, split across data-parallel ranks
    loss: str = "mean"  # mean (DiT: mean squared error) | sum (U-ViT: sum of squares per sample)
    clamp: float | None = 5.0  # clamp logits to [-clamp, clamp] after each step (official DiT); None: off
    label_dropout: float = 0.1  # labels replaced by the null class with this probability
    init_std: float = 1.0  # logits start from seed-determined N(0, init_std^2) (official: randn)
    seed: int = 0
    data: str | None = "toy"  # toy (procedural set) | an ImageNet train/ folder | a .pt/.npz latent file
    num_workers: int = 2  # image-folder loading only
    checkpoint_every: int = 50  # a killed job loses at most this many iterations
    log_every: int = 10


@dataclass
class CalibrationConfig:
    """TeaCache's rescaling polynomial (`python -m l2c_bench.calibrate`; `cache.coefficients=auto`)."""

    samples: int = 8  # uncached samples whose per-evaluation changes are fitted
    seed: int = 0
    degree: int = 4  # polynomial degree (TeaCache: 4)


@dataclass
class ShardConfig:
    """Split a run's samples across jobs (`shard.index=0,1,2 shard.count=3` in a multirun) or
    torchrun ranks (automatic); not part of the run's identity: any split gives the same row."""

    index: int = 0
    count: int = 1
