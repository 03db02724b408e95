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
from pathlib import Path
from typing import Any, List, Optional  # noqa: UP035 - OmegaConf reads typing's forms

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from .caching import CACHE_METHODS
from .description.schema import (
    CalibrationConfig,
    MetricsConfig,
    ModelConfig,
    RouterConfig,
    SamplerConfig,
    ScaleConfig,
    ShardConfig,
    TrackerConfig,
)
from .sampling import DEFAULT_SAMPLERS


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
    # uncached latents every results folder shares (records/references.py); None: $L2C_BENCH_REFERENCES,
    # else ~/.cache/l2c-bench/references
    reference_dir: Optional[str] = None
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
    fields with their types and defaults. Fields and defaults are declared only in the method class
    (`conf/cache/<name>.yaml` names the method and extends this schema), so a run starts from the
    defaults the Python API and `python -m l2c_bench.catalog cache` show."""
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


# The config tree the entry points (run, calibrate, train_router) and `compose` read: the package's
# `conf/`. In a checkout that is a link to the repository's conf/ (whose sweep/ links to sweeps/),
# resolved here to conf/ itself; in an installed wheel it is the files, shipped as package data.
CONF_DIR = (Path(__file__).parent / "conf").resolve()


def compose(overrides: list[str]):
    """The run config these overrides compose (schemas registered), as `python -m l2c_bench.run
    <overrides>` would; for scripts and studies that build runs from Python."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


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
