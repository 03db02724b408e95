"""A run as typed, frozen descriptions: what `l2c_bench.runs.prepare` makes of the composed Hydra
config, and all that `caching/`, `models/`, `metrics/` and `engine/` are given of it.

The descriptions mirror the config's tree (`run.model.arch`, `run.metrics.batch_size`,
`run.steps`), with what the config leaves open resolved: `run.sampler.name` is the sampler the
run uses (the model's default when unset), `run.cache` the method built from its own parameters
(None: uncached). Each group's fields, types and defaults are declared once, in `schema.py`;
a description has no defaults of its own, so every value comes from the composed config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from . import schema


def _frozen(config: type, *extra: tuple[str, Any]) -> type:
    """The frozen description of one config group: `config`'s fields (and `extra`), typed, no defaults."""
    fields = [(f.name, f.type) for f in dataclasses.fields(config)] + list(extra)
    return dataclasses.make_dataclass(config.__name__.removesuffix("Config") + "Spec", fields, frozen=True,
                                      namespace={"__module__": __name__})


ScaleSpec = _frozen(schema.ScaleConfig)
MetricsSpec = _frozen(schema.MetricsConfig)
TrackerSpec = _frozen(schema.TrackerConfig)
RouterSpec = _frozen(schema.RouterConfig)  # L2C's router-learning recipe
CalibrationSpec = _frozen(schema.CalibrationConfig)  # TeaCache's calibration settings
ShardSpec = _frozen(schema.ShardConfig)


@dataclass(frozen=True)
class ModelSpec:
    """The model a run loads: `schema.ModelConfig`'s keys and the run's scale (a `toy` checkpoint
    exists only at toy scale). Mappings are read-only views of plain dicts."""

    scale: str
    family: str
    arch: str
    checkpoint: str
    vae: str
    vae_checkpoint: str | None
    guidance_scale: float
    guidance_channels: int | None
    default_sampler: str
    latency_includes_decode: bool
    overrides: Mapping[str, Any]
    diffusers_class: str | None
    pretrained: str | None
    config: Mapping[str, Any]
    zoo: Mapping[str, Any]
    prompt_set: str | None

    @property
    def group(self) -> str:
        """The `model=` option that composes it: `diffusers` for a diffusers class, else the family."""
        return "diffusers" if self.diffusers_class else self.family


@dataclass(frozen=True)
class SamplerSpec:
    name: str  # resolved: `sampler.name`, or the model's default sampler when unset
    eta: float


@dataclass(frozen=True)
class RunDescription:
    """One run, as every part of the harness past `runs.prepare` reads it."""

    scale: ScaleSpec
    model: ModelSpec
    sampler: SamplerSpec
    cache: Any  # the method built from its own parameters (l2c_bench.caching.CacheMethod); None: uncached
    metrics: MetricsSpec
    router: RouterSpec
    calibration: CalibrationSpec
    shard: ShardSpec
    tracker: TrackerSpec
    steps: int  # NFE
    dtype: str
    tf32: bool
    compile: bool
    cuda_graph: bool
    seed: int
    results_dir: str
    reference_dir: str | None  # the shared reference store's root (None: records.references.default_root)
    device: str
    force: bool
    config: Mapping[str, Any]  # the resolved config as plain values (the record a tracker mirrors)


@dataclass(frozen=True)
class Loaded:
    """What a run loaded, for a method's `prepare` (a router learned or a calibration made on it)."""

    device: Any  # torch.device
    model: Any  # the diffusion model (l2c_bench.engine.model.Model)
    vae: Any  # None: samples are the model's own space


def _view(value):
    """Read-only at the top: a Mapping becomes a MappingProxyType over a plain dict copy."""
    return MappingProxyType(dict(value)) if isinstance(value, Mapping) else value


def spec_of(spec: type, values: Mapping[str, Any], **extra) -> Any:
    """`spec` from a plain mapping of its group: every field must be there (the schema puts it there)."""
    return spec(**{f.name: _view(values[f.name]) for f in dataclasses.fields(spec) if f.name not in extra}, **extra)


def describe_config(config: Mapping[str, Any], *, sampler: str, cache) -> RunDescription:
    """The description of a resolved config given as plain values (`OmegaConf.to_container(cfg,
    resolve=True)`), with its resolved sampler and built method."""
    frozen = MappingProxyType(config)
    scale = spec_of(ScaleSpec, config["scale"])
    return RunDescription(
        scale=scale,
        model=spec_of(ModelSpec, config["model"], scale=scale.name),
        sampler=SamplerSpec(name=sampler, eta=float(config["sampler"]["eta"])),
        cache=cache,
        metrics=spec_of(MetricsSpec, config["metrics"]),
        router=spec_of(RouterSpec, config["router"]),
        calibration=spec_of(CalibrationSpec, config["calibration"]),
        shard=spec_of(ShardSpec, config["shard"]),
        tracker=spec_of(TrackerSpec, config["tracker"]),
        config=frozen,
        **{key: config[key] for key in ("steps", "dtype", "tf32", "compile", "cuda_graph", "seed", "results_dir",
                                        "device", "force")},
        reference_dir=config.get("reference_dir"),
    )


__all__ = [
    "CalibrationSpec",
    "Loaded",
    "MetricsSpec",
    "ModelSpec",
    "RouterSpec",
    "RunDescription",
    "SamplerSpec",
    "ScaleSpec",
    "ShardSpec",
    "TrackerSpec",
    "describe_config",
    "spec_of",
]
