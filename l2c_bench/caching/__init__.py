"""Layer caching: `make_cache(name, **params)` -> a method that `generate(..., cache=...)` runs.

    cache = make_cache("l2c", router="DDIM20_router.pt", threshold=0.1)
    out = l2c_bench.generate(model, ..., cache=cache)
    out.schedule        # bool (nfe, blocks, 2): what ran
    out.cached_ratio    # paper Table 4 ratio

Adding a method (docs/adding_a_method.md): one module in `methods/` (a dataclass subclassing
CacheMethod, its fields the parameters, with a `plan`), one line in CACHE_METHODS, one
`conf/cache/<name>.yaml`, its tests.
"""

from __future__ import annotations

from dataclasses import fields

from ..engine import (
    CacheConfigError,
    CacheMethod,
    CacheRun,
    FixedPlan,
    Plan,
    UnsupportedCombination,
    full_plan,
)
from .methods.cachedit import CacheDitDBCache
from .methods.deepcache import DeepCache
from .methods.delta_dit import DeltaDiT
from .methods.diffusers_hooks import (
    DiffusersFBCache,
    DiffusersMagCache,
    DiffusersPAB,
    DiffusersSeaCache,
    DiffusersTaylorSeer,
)
from .methods.easycache import EasyCache
from .methods.faster_diffusion import FasterDiffusion
from .methods.fbcache import FBCache
from .methods.fora import Fora
from .methods.heuristic import Heuristic
from .methods.hicache import HiCache
from .methods.l2c.method import L2C, l2c_plan
from .methods.l2c.router import load_router, save_router
from .methods.layer_drop import LayerDrop
from .methods.lemica import LeMiCa
from .methods.none import NoCache
from .methods.seacache import SeaCache
from .methods.taylorseer import TaylorSeer
from .methods.teacache import TeaCache
from .methods.toca import ToCa

CACHE_METHODS: dict[str, type[CacheMethod]] = {
    "none": NoCache,
    "l2c": L2C,
    "fora": Fora,
    "heuristic": Heuristic,
    "layer_drop": LayerDrop,
    "deepcache": DeepCache,
    "faster_diffusion": FasterDiffusion,
    "delta_dit": DeltaDiT,
    "taylorseer": TaylorSeer,
    "fbcache": FBCache,
    "teacache": TeaCache,
    "toca": ToCa,
    "easycache": EasyCache,
    "seacache": SeaCache,
    "lemica": LeMiCa,
    "hicache": HiCache,
    "diffusers_fbcache": DiffusersFBCache,  # diffusers' own hooks, model=diffusers only
    "diffusers_taylorseer": DiffusersTaylorSeer,
    "diffusers_pab": DiffusersPAB,
    "diffusers_magcache": DiffusersMagCache,
    "diffusers_seacache": DiffusersSeaCache,
    "cachedit_dbcache": CacheDitDBCache,  # cache-dit's own DBCache, model=diffusers only (extra cachedit)
}


def make_cache(name: str, **params) -> CacheMethod:
    """Build a cache method by name; unknown names and parameters are errors naming them."""
    if name not in CACHE_METHODS:
        raise CacheConfigError(f"cache.name={name!r} is unknown; valid: {', '.join(CACHE_METHODS)}")
    cls = CACHE_METHODS[name]
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise CacheConfigError(f"cache={name} has no parameter(s) {unknown}; valid: {sorted(valid)}")
    return cls(**params)


__all__ = [
    "CACHE_METHODS",
    "CacheConfigError",
    "CacheMethod",
    "CacheRun",
    "FixedPlan",
    "Plan",
    "UnsupportedCombination",
    "full_plan",
    "l2c_plan",
    "load_router",
    "make_cache",
    "save_router",
]
