"""Typed config schema for every Hydra group.

The top-level `Config` is registered as `base_config`; `conf/config.yaml` lists it first, so
every group file merges into a typed node and a misspelt key or a wrong type fails at compose
time with Hydra's own message (e.g. `Key 'chekpoint' not in 'ModelConfig'`).

The `cache` group has one schema per method, made from the method's own dataclass fields
(`method_schema`) and stored as `cache/<name>_schema`; `conf/cache/<name>.yaml` extends it. A
key of another method (`cache=fora cache.order=2`) fails at compose time.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, List, Optional  # noqa: UP035 - OmegaConf reads typing's forms

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from .caching import CACHE_METHODS
from .sampling import DEFAULT_SAMPLERS


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
    timing_repeats: int = 10  # >= 6: the latency/speedup intervals need them (metrics/intervals.py)
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
    # quality is also measured (l2c_bench/runs/converged.py); 0 = off. Off here, 250 at toy scale
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


@dataclass
class Config:
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    # one method's own parameters: the `cache` group file's structured config (method_schema)
    cache: Any = MISSING
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    steps: int = 20  # NFE, as in the paper's tables
    dtype: str = "fp32"  # fp32 | bf16 | fp16: autocast for sampling (and the uncached reference)
    tf32: bool = False  # CUDA: let float32 matmuls use TF32
    compile: bool = False  # torch.compile the attention/MLP branch functions (one graph each, any schedule)
    # CUDA: replay each batch's whole sampling loop as one CUDA graph (ddim with eta 0 or
    # dpm_solver2; uncached or a static cache plan): no per-kernel launch cost on the host
    cuda_graph: bool = False
    seed: int = 0  # 0..4095: sample i uses seed * 2**20 + i (sampling.noise.sample_seed); seeds draw disjoint noise
    results_dir: str = "results"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    force: bool = False  # rerun even if an ok row exists


# Paper Table 8: the router-learning lambda and learning rate of every DiT setting the paper
# trained, by (arch, image side in px, NFE). `conf/router/dit_paper.yaml` reads them through the
# `l2c_table8` resolver; a setting the table lacks gets that model and resolution's NFE-20 values,
# else DiT-XL/2 256's (the official README's).
TABLE8_DIT = {
    ("DiT-XL/2", 256, 50): (1e-6, 1e-3), ("DiT-XL/2", 256, 20): (5e-6, 1e-3), ("DiT-XL/2", 256, 10): (1e-6, 1e-3),
    ("DiT-XL/2", 512, 50): (5e-6, 1e-3),
    ("DiT-L/2", 256, 50): (1e-6, 1e-3), ("DiT-L/2", 256, 20): (5e-6, 1e-2),
}


def table8(field: str, arch: str, nfe: int, latent_size: int) -> float:
    """`lam` or `lr` of Table 8 for a DiT setting (latent side x 8 = image side)."""
    setting = (str(arch), 8 * int(latent_size))
    lam, lr = TABLE8_DIT.get((*setting, int(nfe))) or TABLE8_DIT.get((*setting, 20)) or TABLE8_DIT[("DiT-XL/2", 256, 20)]
    return {"lam": lam, "lr": lr}[field]


def _omegaconf_type(hint) -> Any:
    """A method field's annotation as OmegaConf can type it: primitives, Optional[...] of one,
    lists of them; any other union (TeaCache's file-or-list `coefficients`) becomes Any."""
    if hint in (int, float, str, bool):
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return Optional[_omegaconf_type(rest[0])]  # noqa: UP007
        return Any
    if origin is list or hint is list:
        return List[args[0] if args and args[0] in (int, float, str, bool) else Any]  # noqa: UP006
    return Any


def _typed_fields(method: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, its OmegaConf type) of each of a method dataclass's fields, in order."""
    hints = typing.get_type_hints(method)
    return [(f, _omegaconf_type(hints[f.name])) for f in dataclasses.fields(method)]


def method_schema(name: str, method: type) -> type:
    """The structured config of cache method `name`: `name`, then the method dataclass's own
    fields with their types and defaults. The fields are declared only in the method class;
    `conf/cache/<name>.yaml` sets the values a run starts from (they may differ from the class
    defaults, e.g. L2C's `router=auto`)."""
    specs: list = [("name", str, field(default=name))]
    for f, kind in _typed_fields(method):
        default = field(default_factory=f.default_factory) if f.default is dataclasses.MISSING else field(default=f.default)
        specs.append((f.name, kind, default))
    return dataclasses.make_dataclass(f"{method.__name__}Config", specs)


def uncached_schema(methods: dict[str, type]) -> type:
    """`cache=none`'s structured config: every method's parameter, unset (None) and inert. A sweep
    that compares methods against the uncached model sets their parameters for all of its points
    (`cache: none,heuristic` with `cache.shifted: true,false`); the uncached point accepts them,
    and neither its row nor its run id records them. A key that no method has still fails."""
    specs: dict[str, tuple] = {}
    for method in methods.values():
        for f, kind in _typed_fields(method):
            specs.setdefault(f.name, (f.name, Optional[kind], field(default=None)))  # noqa: UP007
    return dataclasses.make_dataclass("NoCacheConfig", [("name", str, field(default="none")), *specs.values()])


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for name, method in CACHE_METHODS.items():
        schema = uncached_schema(CACHE_METHODS) if name == "none" else method_schema(name, method)
        store.store(group="cache", name=f"{name}_schema", node=schema)
    OmegaConf.register_new_resolver("l2c_table8", table8, replace=True)
    # model=diffusers: the family and default sampler follow model.diffusers_class
    OmegaConf.register_new_resolver("zoo_family", zoo_family, replace=True)
    OmegaConf.register_new_resolver("zoo_sampler", lambda cls: DEFAULT_SAMPLERS[zoo_family(cls)], replace=True)


def zoo_family(cls: str) -> str:
    from .models.zoo import adapter_for

    return adapter_for(cls).family
