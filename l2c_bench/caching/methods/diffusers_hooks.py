"""diffusers' own cache hooks as peers of our methods (model=diffusers only).

`diffusers_fbcache` applies diffusers' FirstBlockCache and `diffusers_taylorseer` its
TaylorSeerCache to the wrapped transformer, through diffusers' functions, with diffusers'
defaults. Their rows sit in the same tables as ours: the engine computes whatever the hooks let
run and records it (`Plan.hooks`), so MACs and cached ratios count what actually ran.

Differences from ours, measured in tests/test_diffusers_hooks.py:
- FirstBlockCache and our `fbcache` decide alike: both compare the first block's residual on the
  image tokens with the one of the last evaluation that ran the rest (relative mean |.|) and
  reuse the rest's residual. diffusers' default threshold is 0.05 (ours 0.08); at the same
  threshold the decisions and samples agree (the samples to float rounding).
- TaylorSeerCache forecasts the attention modules it finds by name (`transformer_blocks.*attn`:
  Flux and SD3, not DiT's or PixArt's `attn1`, so those are `unsupported`), computes the first
  `disable_cache_before_step` evaluations and then every `cache_interval`-th, and differences
  its Taylor factors per evaluation; ours forecasts attention and MLP branches of every block
  from evaluation 0 on a fixed interval. They are different schedules, compared as peers.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from ...engine import CacheConfigError, CacheMethod, Plan, UnsupportedCombination
from ...engine.core import check_interval


def _zoo_model(model, method: str):
    from ...models.zoo import ZooModel

    if not isinstance(model, ZooModel):
        raise UnsupportedCombination(f"{method} applies diffusers' hooks: it runs on model=diffusers, not {model.family}")
    return model


def hooked_plan(nfe: int, num_blocks: int, hooks) -> Plan:
    compute = tuple(((True, True),) * num_blocks for _ in range(nfe))
    return Plan(compute, tuple(range(1, nfe)), hooks=hooks)


class PeerHooks:
    """What a hooked plan carries: how to apply diffusers' hooks, remove them, and tell them which
    call of which evaluation is running (diffusers keeps one state per named context)."""

    def __init__(self, apply, names: tuple[str, ...], host_sync: bool):
        self._apply, self.names = apply, names
        self.host_sync = host_sync  # its hooks read a value back to the host at every evaluation

    def apply(self, transformer) -> None:
        self._apply(transformer)

    def remove(self, transformer) -> None:
        from diffusers.hooks import HookRegistry

        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        for name in self.names:
            registry.remove_hook(name, recurse=True)

    @contextmanager
    def context(self, transformer, pass_index: int, evaluation: int, nfe: int):
        from diffusers.hooks.hooks import (  # CacheMixin.cache_context's core
            CacheContext,
            _set_cache_context,
        )

        _set_cache_context(transformer, CacheContext(f"pass{pass_index}", step_index=evaluation, num_inference_steps=nfe))
        try:
            yield
        finally:
            _set_cache_context(transformer, None)


@dataclass
class DiffusersFBCache(CacheMethod):
    threshold: float = 0.05  # diffusers' default
    name = "diffusers_fbcache"
    label = "FBCache (diffusers)"  # in tables and plots (analysis/labels.py)
    decides_at_run_time = True

    def __post_init__(self):
        if not float(self.threshold) >= 0:
            raise CacheConfigError(f"cache.threshold={self.threshold} must be >= 0")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
        from diffusers.hooks._helpers import TransformerBlockRegistry
        from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

        model = _zoo_model(model, self.name)
        for block in model.blocks:
            try:
                TransformerBlockRegistry.get(type(block))
            except ValueError:
                raise UnsupportedCombination(f"diffusers' FirstBlockCache does not know {type(block).__name__} "
                                             f"({model.diffusers_class})") from None
        if any(getattr(block, "context_pre_only", False) for block in model.blocks):
            raise UnsupportedCombination("diffusers' FirstBlockCache takes the text stream's residual over the "
                                         f"blocks, and {model.diffusers_class}'s last block drops that stream")
        config = FirstBlockCacheConfig(threshold=float(self.threshold))
        return hooked_plan(nfe, model.num_blocks, PeerHooks(lambda t: apply_first_block_cache(t, config),
                                                            (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK), True))


@dataclass
class DiffusersTaylorSeer(CacheMethod):
    interval: int = 5  # diffusers' cache_interval
    warmup: int = 3  # diffusers' disable_cache_before_step
    order: int = 1  # diffusers' max_order
    name = "diffusers_taylorseer"
    label = "TaylorSeer (diffusers)"  # in tables and plots (analysis/labels.py)

    def __post_init__(self):
        check_interval(self.interval)
        if int(self.warmup) != self.warmup or self.warmup < 1 or int(self.order) != self.order or self.order < 0:
            raise CacheConfigError(f"cache.warmup={self.warmup} must be >= 1 and cache.order={self.order} >= 0")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        import re

        import torch
        from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
        from diffusers.hooks.taylorseer_cache import (
            _TAYLORSEER_CACHE_HOOK,
            _TRANSFORMER_BLOCK_IDENTIFIERS,
        )

        model = _zoo_model(model, self.name)
        names = [n for n, _ in model.transformer.named_modules()]
        if not any(re.fullmatch(p, n) for p in _TRANSFORMER_BLOCK_IDENTIFIERS for n in names):
            raise UnsupportedCombination(f"diffusers' TaylorSeerCache finds no attention module named like "
                                         f"`transformer_blocks.*attn` in {model.diffusers_class}")
        config = TaylorSeerCacheConfig(cache_interval=int(self.interval), disable_cache_before_step=int(self.warmup),
                                       max_order=int(self.order), taylor_factors_dtype=torch.float32)
        return hooked_plan(nfe, model.num_blocks, PeerHooks(lambda t: apply_taylorseer_cache(t, config),
                                                            (_TAYLORSEER_CACHE_HOOK,), False))
