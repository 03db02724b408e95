"""Typed config schema for every Hydra group.

The top-level `Config` is registered as `base_config`; `conf/config.yaml` lists it first, so
every group file merges into a typed node and a misspelt key or a wrong type fails at compose
time with Hydra's own message (e.g. `Key 'chekpoint' not in 'ModelConfig'`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class ScaleConfig:
    name: str = "toy"  # toy | paper
    features: str = "toy"  # feature network for quality metrics: toy | inception


@dataclass
class ModelConfig:
    family: str = "dit"  # dit | uvit
    arch: str = "DiT-toy"  # a name of l2c_bench.models.MODEL_SPECS
    checkpoint: str = "toy"  # a path, "toy" (shipped asset) or "random" (latency/MAC studies)
    vae: str = "none"  # none (pixel space) | sd (the SD kl-f8 VAE)
    vae_checkpoint: str | None = None
    guidance_scale: float = 1.5  # in the family's convention (DiT: w, 1 = off; U-ViT: s, 0 = off)
    guidance_channels: int = 3  # DiT only: guided eps channels
    default_sampler: str = "ddim"
    latency_includes_decode: bool = False  # paper: DiT latency excludes the VAE, U-ViT includes it
    overrides: dict[str, Any] = field(default_factory=dict)  # constructor overrides of the arch


@dataclass
class SamplerConfig:
    name: str | None = None  # None: the model's default_sampler
    eta: float = 0.0  # DDIM only


@dataclass
class CacheConfig:
    """The union of every method's parameters; each method reads only its own."""

    name: str = "none"  # none | l2c | fora | heuristic | layer_drop | deepcache | faster_diffusion
    router: str = "official"  # l2c: router file, or `official`
    threshold: float = 0.1  # l2c: recompute iff sigmoid(logit) > threshold (paper: DiT 0.1, U-ViT 0.9)
    interval: int = 2  # fora/deepcache/faster_diffusion: full evaluation every `interval`
    depth: int = 1  # deepcache: shallow blocks kept fresh at each end
    key_steps: list[int] | None = None  # faster_diffusion: explicit full evaluations
    strategy: str = "bottom"  # heuristic: bottom | top | random
    ratio: float = 0.5  # heuristic/layer_drop: fraction of branches reused/dropped per cache step
    seed: int = 0  # heuristic/layer_drop random choices


@dataclass
class MetricsConfig:
    num_samples: int = 100  # generated per run for quality metrics
    batch_size: int = 50
    class_accuracy: bool = True  # on-class rate under the feature network's classifier
    fid: bool = True  # FID against the scale's reference statistics
    reference_samples: int = 2000  # images behind the toy reference statistics
    timing_batch: int = 8  # images per timed sampling call (paper: 8, with CFG)
    timing_repeats: int = 3
    timing_warmup: int = 1
    grid_samples: int = 32  # images in samples.png


@dataclass
class TrackerConfig:
    name: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline | online | disabled
    project: str = "l2c-bench"
    entity: str | None = None
    group: str | None = None  # default: the Hydra sweep folder's name
    dir: str | None = None  # default: <results_dir>


@dataclass
class Config:
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    steps: int = 20  # NFE, as in the paper's tables
    seed: int = 0  # sample i uses seed + i
    results_dir: str = "results"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    force: bool = False  # rerun even if an ok row exists


def register_configs() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)
