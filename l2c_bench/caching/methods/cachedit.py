"""cache-dit's DBCache as a peer library (model=diffusers only; extra `cachedit`).

`cachedit_dbcache` runs cache-dit's own DBCache (optionally with its TaylorSeer calibrator) on the
wrapped diffusers transformer through cache-dit's public API (`enable_cache`, `refresh_context`,
`summary`, `disable_cache`), as `diffusers_hooks` runs diffusers' hooks: the plan is a `Hooked`
one, the engine computes whatever cache-dit lets run and records it, so MACs and cached ratios
count what actually ran. cache-dit's own account of what it cached (`summary().cached_steps`) is
read back after each batch.

How it is driven, and why:
- on a bare transformer cache-dit counts transformer calls, not timesteps; our diffusers
  families guide with batched halves (one call per evaluation), so `enable_separate_cfg=False`
  is passed explicitly (its Wan adapter would otherwise assume separate CFG calls).
- its context resets one call late in this mode, so every batch starts with
  `refresh_context(num_inference_steps=nfe)`.
- its patch functors replace the transformer's forward (DiT, Flux) and `disable_cache` puts back
  the patched one; its per-call `mock.patch` of the block lists moves them to the end of the
  module's children (a later diffusers FirstBlockCache then took a single block for the first
  block). `remove` restores every module's attributes and children order as they were.
- SD3's transformer is registered in cache-dit under its pipeline's name (`StableDiffusion3`),
  which a bare `SD3Transformer2DModel` does not match: it gets the same `BlockAdapter` that
  cache-dit's own SD3 adapter builds (its transformer blocks, `ForwardPattern.Pattern_1`).
- Wan 2.2's two experts: cache-dit would count each expert's calls, not the sampler's steps (as
  diffusers' PAB, issue #14025): unsupported.

Thresholds: cache-dit caches when mean|r_n - r_prev| / mean|r_prev| < threshold (strict; its
`similarity`), r the first Fn blocks' residual; diffusers' FirstBlockCache and our `fbcache`
cache when the same ratio is <= threshold. They differ only at exact equality, and cache-dit
treats a threshold >= 1 as "always similar" and <= 0 as "never".
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from dataclasses import dataclass

from ...description import Loaded, RunDescription
from ...engine import CacheConfigError, CacheMethod, Plan, UnsupportedCombination
from .diffusers_hooks import _zoo_model, hooked_plan

INSTALL = "cache-dit is not installed: pip install 'l2c-bench[cachedit]'"
# cache-dit registers SD3 under its pipeline's class name, which a bare transformer does not match
PIPELINE_NAMES = {"SD3Transformer2DModel": "StableDiffusion3"}


def import_cache_dit():
    """cache_dit, or an ImportError naming the extra that installs it."""
    try:
        import cache_dit
    except ImportError as exc:
        raise ImportError(INSTALL) from exc
    for name in list(logging.root.manager.loggerDict):  # its per-call info lines (a level per module)
        if name.startswith("cache_dit"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return cache_dit


def cache_dit_target(transformer):
    """What `cache_dit.enable_cache` takes for `transformer`: the transformer itself where cache-dit
    knows its class, the BlockAdapter cache-dit's own adapter builds for SD3; else unsupported."""
    cache_dit = import_cache_dit()
    from cache_dit.caching.block_adapters import BlockAdapterRegister

    name = type(transformer).__name__
    if name in PIPELINE_NAMES:
        return cache_dit.BlockAdapter(transformer=transformer, blocks=transformer.transformer_blocks,
                                      forward_pattern=cache_dit.ForwardPattern.Pattern_1, check_forward_pattern=True)
    if not BlockAdapterRegister.is_supported(transformer):
        raise UnsupportedCombination(f"cache-dit has no block adapter for {name}")
    return transformer


class CacheDitHooks:
    """A hooked plan's hooks (the interface of diffusers_hooks.PeerHooks) that enable cache-dit on
    each batch and read back what it cached. `batches`: per batch, cache-dit's cached steps."""

    names = ()
    reads_timestep = False
    host_sync = True  # cache-dit reads its residual ratio back (`.item()`) at every evaluation

    def __init__(self, cache_config, calibrator_config, nfe: int, batches: list | None = None):
        self.cache_config, self.calibrator_config, self.nfe = cache_config, calibrator_config, nfe
        self.batches = [] if batches is None else batches
        self._saved: dict = {}

    def apply(self, transformer) -> None:
        cache_dit = import_cache_dit()
        # every module's attributes and children, as they were (see the module docstring)
        self._saved[transformer] = {m: (dict(vars(m)), dict(m._modules)) for m in transformer.modules()}
        kwargs = {} if self.calibrator_config is None else {"calibrator_config": copy.deepcopy(self.calibrator_config)}
        cache_dit.enable_cache(cache_dit_target(transformer), cache_config=copy.deepcopy(self.cache_config), **kwargs)
        cache_dit.refresh_context(transformer, num_inference_steps=self.nfe)  # its context: fresh for this batch

    def remove(self, transformer) -> None:
        # disable_cache warns "Acceleration hooks is disabled" each time: at every batch and timed call
        # here, where removing the hooks is the plan, not news (a sweep's log had one every second)
        cache_dit = import_cache_dit()  # (sets its loggers' levels: before ours)
        interface = logging.getLogger("cache_dit.caching.cache_interface")
        level = interface.level
        interface.setLevel(logging.ERROR)
        try:
            cache_dit.disable_cache(transformer)
        finally:
            interface.setLevel(level)
        for module, (attributes, children) in self._saved.pop(transformer, {}).items():
            module._modules.clear()
            module._modules.update(children)
            for key in set(vars(module)) - set(attributes):
                delattr(module, key)
            for key, value in attributes.items():
                if vars(module).get(key) is not value:
                    setattr(module, key, value)

    @contextmanager
    def context(self, transformer, pass_index: int, evaluation: int, nfe: int, t):
        yield  # cache-dit counts its own calls
        if evaluation == nfe - 1 and pass_index == 0:
            stats = import_cache_dit().summary(transformer, logging=False)[0]
            self.batches.append(sorted(int(s) for s in stats.cached_steps))


@dataclass
class CacheDitDBCache(CacheMethod):
    Fn_compute_blocks: int = 1  # cache-dit's default is 8, more than a small model's blocks
    Bn_compute_blocks: int = 0
    residual_diff_threshold: float = 0.08  # cache-dit's default
    max_warmup_steps: int = 8  # cache-dit's default
    taylorseer: bool = False  # its TaylorSeer calibrator on the cached blocks' residuals
    taylorseer_order: int = 1
    name = "cachedit_dbcache"
    label = "DBCache (cache-dit)"  # in tables and plots (analysis/labels.py)
    summary = "cache-dit's own DBCache (optionally TaylorSeer), `model=diffusers` only: a peer of `fbcache`"
    description = ("cache-dit's own DBCache through its public API (extra `cachedit`): the first "
                   "`Fn_compute_blocks` blocks always run, the middle ones are reused while their residual's "
                   "relative L1 change stays under `residual_diff_threshold`, the last `Bn_compute_blocks` "
                   "always run; no caching in the first `max_warmup_steps`. F1B0 decides as `fbcache` and "
                   "`diffusers_fbcache` (tested). The row records cache-dit's own cached steps "
                   "(`cachedit_cached_steps`). [diffusers.md](diffusers.md)")
    decides_at_run_time = True

    def __post_init__(self):
        if int(self.Fn_compute_blocks) < 1 or int(self.Bn_compute_blocks) < 0 or int(self.max_warmup_steps) < 0:
            raise CacheConfigError(f"cache.Fn_compute_blocks={self.Fn_compute_blocks} must be >= 1, "
                                   f"cache.Bn_compute_blocks={self.Bn_compute_blocks} and "
                                   f"cache.max_warmup_steps={self.max_warmup_steps} >= 0")
        if not float(self.residual_diff_threshold) >= 0 or int(self.taylorseer_order) < 1:
            raise CacheConfigError(f"cache.residual_diff_threshold={self.residual_diff_threshold} must be >= 0 "
                                   f"and cache.taylorseer_order={self.taylorseer_order} >= 1")
        self._record: list | None = None  # a run's list of cache-dit's cached steps per batch

    def prepare(self, run: RunDescription, loaded: Loaded) -> tuple[CacheMethod, dict]:
        method = copy.copy(self)
        method._record = []  # filled as batches run: the row's `cachedit_cached_steps`
        return method, {"cachedit_cached_steps": method._record}

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        model = _zoo_model(model, self.name)
        cache_dit = import_cache_dit()
        if len(model.experts) > 1:
            raise UnsupportedCombination(f"cache-dit counts its own calls per transformer: on {model.diffusers_class}'s "
                                         f"{len(model.experts)} experts it would count each expert's calls, not the "
                                         "sampler's steps")
        for expert in model.experts:
            cache_dit_target(expert)  # unsupported where cache-dit has no adapter
        blocks = int(self.Fn_compute_blocks) + int(self.Bn_compute_blocks)
        if blocks > model.num_blocks:
            raise UnsupportedCombination(f"cache-dit's Fn_compute_blocks + Bn_compute_blocks = {blocks} exceeds "
                                         f"{model.diffusers_class}'s {model.num_blocks} blocks")
        config = cache_dit.DBCacheConfig(
            Fn_compute_blocks=int(self.Fn_compute_blocks), Bn_compute_blocks=int(self.Bn_compute_blocks),
            residual_diff_threshold=float(self.residual_diff_threshold), max_warmup_steps=int(self.max_warmup_steps),
            enable_separate_cfg=False, num_inference_steps=nfe)
        # SD3's last block drops the text stream: cache-dit never stores its residual, and its text-stream
        # calibrator then fails on a cached step ("State 'transformer_blocks_Bn_residual' not found").
        # The text stream is not read after the blocks there, so it is not forecast.
        text_read = not any(getattr(block, "context_pre_only", False) for block in model.blocks)
        calibrator = (cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=int(self.taylorseer_order),
                                                           enable_encoder_calibrator=text_read)
                      if self.taylorseer else None)
        plan = hooked_plan(nfe, model.num_blocks, CacheDitHooks(config, calibrator, nfe, self._record))
        # no caching in its warm-up steps nor at the first (nothing to compare with)
        return Plan(plan.compute, tuple(range(max(1, int(self.max_warmup_steps)), nfe)), rule=plan.rule)
