"""diffusers' own cache hooks as peers of our methods (model=diffusers only).

`diffusers_fbcache`, `diffusers_taylorseer`, `diffusers_pab`, `diffusers_magcache` and
`diffusers_seacache` apply diffusers' FirstBlockCache, TaylorSeerCache, PyramidAttentionBroadcast,
MagCache and SeaCache to the
wrapped transformer, through diffusers' functions, with diffusers' defaults. Their rows sit in
the same tables as ours: the engine computes whatever the hooks let run and records it
(the plan's `Hooked` rule), so MACs and cached ratios count what actually ran. FasterCache is not among
them: docs/diffusers.md says why.

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
- PyramidAttentionBroadcast reuses each self-attention module's last output (cross-attention's
  too with `cross_interval`) at the evaluations whose timestep lies inside (`timestep_low`,
  `timestep_high`), except every `interval`-th call. On DiT and Flux an attention branch is one
  module, and its samples are bit-identical to our engine reusing the attention branch on the
  same evaluations. On PixArt the attention branch is self- and cross-attention: an evaluation
  where PAB reuses only the self-attention counts the branch as computed (MACs an upper bound).
  It reads the evaluation's timestep on the host (one read per evaluation).
- MagCache skips the whole block stack (the input plus the last residual) while the accumulated
  drift of calibrated per-step magnitude ratios stays small. Its ratios are model-specific: the
  run calibrates them before sampling with diffusers' own calibration mode (`calibrate=True`: one
  uncached batch under the run's sampler, NFE and guidance; the ratios diffusers reports are
  read from its log) and records them in the row (`magcache_ratios`). Planned without a run
  (`generate`, the Python API), it calibrates unguided on 4 samples, once per model, sampler and NFE.
- SeaCache skips the whole block stack while the accumulated relative L1 change of the SEA-filtered
  latent stays under its threshold (our `seacache` filters block 0's modulated input, as the
  authors' code does, and reuses the last residual without extrapolating it or capping reuses in a
  row). Its hooks need the step index, NFE and sigma in every call's cache context; without them
  they compute every step silently, so `SeaHooks` passes them and fails any call that lacked them.
"""

from __future__ import annotations

import ast
import copy
import io
import logging
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from ...description import Loaded, RunDescription
from ...engine import CacheConfigError, CacheMethod, FixedPlan, Hooked, Plan, UnsupportedCombination
from ...engine.core import check_interval


def _zoo_model(model, method: str):
    from ...models.zoo import ZooModel

    if not isinstance(model, ZooModel):
        raise UnsupportedCombination(f"{method} applies diffusers' hooks: it runs on model=diffusers, not {model.family}")
    return model


def _one_expert(model, hook: str):
    """`model`, if it samples with one transformer. diffusers' PAB and MagCache count their own
    calls (PAB's `iteration`, MagCache's `step_index`); on two experts (Wan 2.2) each expert's hooks
    count only that expert's calls, not the sampler's steps (diffusers issue #14025): unsupported
    rather than run miscounted. FirstBlockCache counts nothing and runs (each expert its own state)."""
    if len(model.experts) > 1:
        raise UnsupportedCombination(f"diffusers' {hook} counts its own calls per transformer: on {model.diffusers_class}'s "
                                     f"{len(model.experts)} experts it would count each expert's calls, not the "
                                     "sampler's steps (diffusers issue #14025)")
    return model


def _registered_blocks(model, hook: str):
    """`model`, if diffusers' block registry (what its block-level hooks read) knows its blocks."""
    from diffusers.hooks._helpers import TransformerBlockRegistry

    for block in model.blocks:
        try:
            TransformerBlockRegistry.get(type(block))
        except ValueError:
            raise UnsupportedCombination(f"diffusers' {hook} does not know {type(block).__name__} "
                                         f"({model.diffusers_class})") from None
    return model


def _same_streams(model, hook: str):
    """`model`, if its first and last blocks return their streams alike. diffusers' FirstBlockCache
    and SeaCache take the last block's output minus the first's as one residual; FLUX.2's first
    (double-stream) block returns (text, image) and its last (single-stream) one the two streams
    concatenated in one tensor (N, L + T, D): FirstBlockCache fails (a tensor minus a list) and
    SeaCache never records a residual (it falls open). MagCache slices the image tokens: it runs."""
    from diffusers.hooks._helpers import TransformerBlockRegistry

    first, last = (TransformerBlockRegistry.get(type(b)) for b in (model.blocks[0], model.blocks[-1]))
    if (first.return_encoder_hidden_states_index is None) != (last.return_encoder_hidden_states_index is None):
        raise UnsupportedCombination(f"diffusers' {hook} takes the last block's output minus the first's, and "
                                     f"{model.diffusers_class}'s first block returns (text, image) while its last "
                                     "returns both streams concatenated in one tensor")
    return model


def hooked_plan(nfe: int, num_blocks: int, hooks) -> Plan:
    compute = tuple(((True, True),) * num_blocks for _ in range(nfe))
    return Plan(compute, tuple(range(1, nfe)), rule=Hooked(hooks))


class PeerHooks:
    """What a hooked plan carries: how to apply diffusers' hooks, remove them, and tell them which
    call of which evaluation is running (diffusers keeps one state per named context)."""

    def __init__(self, apply, names: tuple[str, ...], host_sync: bool, reads_timestep: bool = False):
        self._apply, self.names = apply, names
        self.host_sync = host_sync  # its hooks read a value back to the host at every evaluation
        self.reads_timestep = reads_timestep  # its hooks ask for the evaluation's timestep (`timestep`)
        self.timestep: float | None = None

    def apply(self, transformer) -> None:
        self._apply(transformer)

    def remove(self, transformer) -> None:
        from diffusers.hooks import HookRegistry

        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        for name in self.names:
            registry.remove_hook(name, recurse=True)

    @contextmanager
    def context(self, transformer, pass_index: int, evaluation: int, nfe: int, t):
        """t (N,): the evaluation's model time (1000-step scale, as diffusers' pipelines pass it)."""
        from diffusers.hooks.hooks import (  # CacheMixin.cache_context's core
            CacheContext,
            _set_cache_context,
        )

        if self.reads_timestep:  # once per evaluation, not once per hooked module
            self.timestep = float(t.reshape(-1)[0])
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
    summary = "diffusers' own FirstBlockCache hook, `model=diffusers` only: a peer of `fbcache`"
    description = ("diffusers' own FirstBlockCache hook (default threshold diffusers'), applied to a "
                   "`model=diffusers` transformer; the engine records what its hooks let run (MACs, ratios). "
                   "Decides as `fbcache` at the same threshold (tested). [diffusers.md](diffusers.md)")
    decides_at_run_time = True

    def __post_init__(self):
        if not float(self.threshold) >= 0:
            raise CacheConfigError(f"cache.threshold={self.threshold} must be >= 0")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
        from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

        model = _same_streams(_registered_blocks(_zoo_model(model, self.name), "FirstBlockCache"), "FirstBlockCache")
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
    summary = "diffusers' own TaylorSeerCache hook, `model=diffusers` only (Flux, SD3)"
    description = ("diffusers' own TaylorSeerCache hook (its `cache_interval`, `disable_cache_before_step`, "
                   "`max_order`; factors in float32): forecasts the attention modules named "
                   "`transformer_blocks.*attn` (Flux, SD3; `unsupported` elsewhere)")

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


@dataclass
class DiffusersPAB(CacheMethod):
    interval: int = 2  # diffusers' spatial_attention_block_skip_range (its default when none is set)
    cross_interval: int = 0  # cross_attention_block_skip_range (PixArt's attn2); 0: cross-attention always runs
    timestep_low: int = 100  # the timestep range (exclusive) where attention may be reused: diffusers' default
    timestep_high: int = 800
    name = "diffusers_pab"
    label = "PAB (diffusers)"  # in tables and plots (analysis/labels.py)
    summary = "diffusers' own PyramidAttentionBroadcast hook, `model=diffusers` only"
    description = ("diffusers' own PyramidAttentionBroadcast hook (its spatial and cross `*_block_skip_range`"
                   " and `*_timestep_skip_range`): each attention module reuses its last output at "
                   "evaluations with timestep inside the range, except every `interval`-th call. "
                   "Bit-identical to our engine reusing the attention branch on those evaluations (DiT, Flux;"
                   " tested). Reads the timestep on the host once per evaluation")
    parameter_notes = {"cross_interval": "0: off"}

    def __post_init__(self):
        check_interval(self.interval)
        if self.cross_interval:
            check_interval(self.cross_interval)
        if not 0 <= self.timestep_low < self.timestep_high:
            raise CacheConfigError(f"cache.timestep_low={self.timestep_low} must be >= 0 and below "
                                   f"cache.timestep_high={self.timestep_high}")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        from diffusers.hooks import (
            PyramidAttentionBroadcastConfig,
            apply_pyramid_attention_broadcast,
        )
        from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

        model = _one_expert(_zoo_model(model, self.name), "PyramidAttentionBroadcast")
        window = (int(self.timestep_low), int(self.timestep_high))
        # each callback reads its name when called: the config asks the hooks for the evaluation's timestep
        hooks = PeerHooks(lambda transformer: apply_pyramid_attention_broadcast(transformer, config),
                          (_PYRAMID_ATTENTION_BROADCAST_HOOK,), True, reads_timestep=True)
        config = PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=int(self.interval), spatial_attention_timestep_skip_range=window,
            cross_attention_block_skip_range=int(self.cross_interval) or None, cross_attention_timestep_skip_range=window,
            current_timestep_callback=lambda: hooks.timestep)
        return hooked_plan(nfe, model.num_blocks, hooks)


MAG_CACHE_LOG = "diffusers.hooks.mag_cache"


def _mag_hooks(model, config) -> PeerHooks:
    from diffusers.hooks import apply_mag_cache
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

    return PeerHooks(lambda transformer: apply_mag_cache(transformer, config),
                     (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK), True)


def mag_ratios(model, *, sampler: str, nfe: int, guidance_scale: float = 1.0, guidance_channels=None,
               samples: int = 4, seed: int = 0) -> list[float]:
    """MagCache's per-step magnitude ratios (nfe,) of `model`, from diffusers' own calibration mode
    on one uncached batch (`samples` labels 0.., seeds seed..); its report is read from its log."""
    from diffusers.hooks import MagCacheConfig

    from ...pipeline import generate

    hooks = _mag_hooks(model, MagCacheConfig(calibrate=True, num_inference_steps=nfe))
    reports: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: reports.append(record.getMessage())
    logger = logging.getLogger(MAG_CACHE_LOG)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with redirect_stdout(io.StringIO()):  # its "copy these values" print
            generate(model, cache=FixedPlan(hooked_plan(nfe, model.num_blocks, hooks), "magcache_calibration"),
                     labels=[i % model.num_classes for i in range(samples)], seeds=range(seed, seed + samples),
                     steps=nfe, sampler=sampler, guidance_scale=guidance_scale, guidance_channels=guidance_channels)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    found = [m for m in reports if m.startswith("MagCache Calibration Results:")]
    if not found:
        raise RuntimeError("diffusers' MagCache calibration reported no ratios (its log format may have changed)")
    ratios = [float(r) for r in ast.literal_eval(found[-1].split(":", 1)[1].strip())]
    if len(ratios) != nfe:
        raise RuntimeError(f"diffusers' MagCache calibration reported {len(ratios)} ratios for {nfe} steps")
    return ratios


@dataclass
class DiffusersMagCache(CacheMethod):
    threshold: float = 0.06  # diffusers' defaults
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    name = "diffusers_magcache"
    label = "MagCache (diffusers)"  # in tables and plots (analysis/labels.py)
    summary = "diffusers' own MagCache hook (calibrated before sampling), `model=diffusers` only"
    description = ("diffusers' own MagCache hook (diffusers' defaults): after the first `retention_ratio` of "
                   "the steps, the whole block stack is its input plus the last residual while the "
                   "accumulated drift of the per-step magnitude ratios stays under `threshold` (at most "
                   "`max_skip_steps` in a row). The ratios come from diffusers' own calibration mode on one "
                   "uncached batch before sampling (in the row: `magcache_ratios`). Matches our engine "
                   "reusing the whole stack's offset on the same evaluations (tested). Dynamic, as fbcache")
    decides_at_run_time = True

    def __post_init__(self):
        if not float(self.threshold) >= 0 or int(self.max_skip_steps) < 1 or not 0 <= float(self.retention_ratio) <= 1:
            raise CacheConfigError(f"cache.threshold={self.threshold} must be >= 0, cache.max_skip_steps="
                                   f"{self.max_skip_steps} >= 1 and cache.retention_ratio={self.retention_ratio} "
                                   "in [0, 1]")
        # calibrated ratios, not parameters: per model, {(sampler, nfe): ratios}
        self._ratios: WeakKeyDictionary = WeakKeyDictionary()

    def calibrated(self, model, sampler: str, nfe: int, ratios) -> DiffusersMagCache:
        """This method holding `ratios` for `model` at `sampler` and `nfe` (a run's calibration)."""
        method = copy.copy(self)
        method._ratios = WeakKeyDictionary({model: {(sampler, nfe): [float(r) for r in ratios]}})
        return method

    @property
    def plans_without_weights(self) -> bool:
        return False  # its ratios are calibrated on the loaded model

    def prepare(self, run: RunDescription, loaded: Loaded) -> tuple[CacheMethod, dict]:
        _one_expert(_zoo_model(loaded.model, self.name), "MagCache")  # before its calibration
        ratios = mag_ratios(loaded.model, sampler=run.sampler.name, nfe=run.steps,
                            guidance_scale=run.model.guidance_scale, guidance_channels=run.model.guidance_channels)
        return self.calibrated(loaded.model, run.sampler.name, run.steps, ratios), {"magcache_ratios": ratios}

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        from diffusers.hooks import MagCacheConfig

        model = _registered_blocks(_one_expert(_zoo_model(model, self.name), "MagCache"), "MagCache")
        known = self._ratios.setdefault(model, {})
        if (sampler, nfe) not in known:  # planned without a run (generate calls plan per call): calibrate once
            known[(sampler, nfe)] = mag_ratios(model, sampler=sampler, nfe=nfe)
        ratios = known[(sampler, nfe)]
        config = MagCacheConfig(threshold=float(self.threshold), max_skip_steps=int(self.max_skip_steps),
                                retention_ratio=float(self.retention_ratio), num_inference_steps=nfe,
                                mag_ratios=ratios)
        plan = hooked_plan(nfe, model.num_blocks, _mag_hooks(model, config))
        retained = int(float(self.retention_ratio) * nfe + 0.5)  # MagCache never skips these first steps
        return Plan(plan.compute, tuple(range(retained, nfe)), rule=plan.rule)


class SeaHooks(PeerHooks):
    """diffusers' SeaCache hooks: their gate needs `cache_context(name, step_index=, sigma=,
    num_inference_steps=)` on every call and, without them, silently computes every step. So each
    context carries the evaluation's flow sigma (`noise_levels`), and every transformer call checks
    that the hook received its step index, sigma and latents (its `forward_metadata`): a call where
    it did not is an error, so an unwired peer fails its point instead of reporting the uncached
    model as SeaCache; so is any call where diffusers' hook "falls open" (its own fallback to a full
    step, logged once). `latents(args, kwargs)` hands the hook one (C, F, H, W) tensor per sample."""

    def __init__(self, config, sigmas: tuple[float, ...]):
        from diffusers.hooks.sea_cache import (
            _SEA_CACHE_BLOCK_HOOK,
            _SEA_CACHE_LEADER_BLOCK_HOOK,
            _SEA_CACHE_ROOT_HOOK,
            apply_sea_cache,
        )

        super().__init__(self._apply_checked, (_SEA_CACHE_ROOT_HOOK, _SEA_CACHE_LEADER_BLOCK_HOOK, _SEA_CACHE_BLOCK_HOOK),
                         True)
        self._apply_sea, self.config, self.sigmas = apply_sea_cache, config, sigmas
        self.gated_calls = 0  # transformer calls whose hook received step index, sigma and latents

    def _apply_checked(self, transformer) -> None:
        from diffusers.hooks import HookRegistry

        self._apply_sea(transformer, self.config)
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        root = registry.get_hook(self.names[0])
        # the registry calls the pre_forward it captured at registration (its function reference)
        reference = registry._fn_refs[registry._hook_order.index(self.names[0])]
        pre_forward = reference.pre_forward

        def checked(module, *args, **kwargs):
            out = pre_forward(module, *args, **kwargs)
            if root.shared_state.forward_metadata is None:
                raise RuntimeError("diffusers' SeaCache got no step index, sigma or latents for this call (its "
                                   "cache_context is not wired): it would compute every step, not SeaCache")
            self.gated_calls += 1
            return out

        reference.pre_forward = checked

        def fell_open(message: str):  # diffusers would log once and compute the step in full, silently
            raise RuntimeError(f"diffusers' SeaCache fell open (it would compute every step, not SeaCache): {message}")

        root.shared_state.mark_fail_open = fell_open

    @contextmanager
    def context(self, transformer, pass_index: int, evaluation: int, nfe: int, t):
        from diffusers.hooks.hooks import CacheContext, _set_cache_context

        _set_cache_context(transformer, CacheContext(f"pass{pass_index}", step_index=evaluation, num_inference_steps=nfe,
                                                     sigma=self.sigmas[evaluation]))
        try:
            yield
        finally:
            _set_cache_context(transformer, None)


def _sea_latents(model):
    """SeaCache's `raw_vision_callback` for `model`: per sample, the latent the transformer is
    called on as (C, F, H, W) (images: F = 1; Flux's and LTX-Video's packed tokens unpacked)."""
    from ...engine.model import latent_shape

    shape = latent_shape(model)

    def latents(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        if x.ndim == 3 and len(shape) == 4:  # LTX-Video: (N, F*H*W, C) tokens, one per latent pixel
            x = x.transpose(1, 2).reshape(len(x), *shape)
        elif x.ndim == 3:  # Flux: (N, H/2 * W/2, 4C) tokens
            from ...models.zoo.flux import unpack

            x = unpack(x, shape[-2], shape[-1])
        if x.ndim == 4:  # (N, C, H, W)
            x = x.unsqueeze(2)
        return list(x.unbind(0))  # (N, C, F, H, W) -> N x (C, F, H, W)

    return latents


@dataclass
class DiffusersSeaCache(CacheMethod):
    threshold: float = 0.25  # diffusers' SeaCacheConfig defaults
    residual_order: int = 1
    retention_steps: int = 1
    cache_end_steps: int = 1
    max_consecutive_cached: int = 2
    power: float = 3.0
    name = "diffusers_seacache"
    label = "SeaCache (diffusers)"  # in tables and plots (analysis/labels.py)
    summary = "diffusers' own SeaCache hook, `model=diffusers` only: a peer of `seacache`"
    description = ("diffusers' own SeaCache hook (diffusers' defaults: `residual_order` 1 extrapolates the last "
                   "two residuals, at most `max_consecutive_cached` reuses in a row): the whole block stack is "
                   "skipped while the accumulated relative L1 change of the SEA-filtered *latent* (ours: block 0's "
                   "modulated input) stays under `threshold`. Each call's cache context carries the step index, "
                   "NFE and flow sigma it needs; a call where the hook did not get them fails the point (unwired, "
                   "it would silently compute every step). Dynamic, as fbcache")
    decides_at_run_time = True

    def __post_init__(self):
        from diffusers.hooks.sea_cache import SeaCacheConfig

        try:  # diffusers checks its own parameters
            SeaCacheConfig(threshold=float(self.threshold), residual_order=int(self.residual_order),
                           retention_steps=int(self.retention_steps), cache_end_steps=int(self.cache_end_steps),
                           max_consecutive_cached=int(self.max_consecutive_cached), power_exp=float(self.power))
        except ValueError as error:
            raise CacheConfigError(f"cache={self.name}: {error}") from None

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        from diffusers.hooks.sea_cache import SeaCacheConfig

        from .noise_levels import flow_sigmas

        model = _same_streams(_registered_blocks(_one_expert(_zoo_model(model, self.name), "SeaCache"), "SeaCache"),
                              "SeaCache")
        if any(getattr(block, "context_pre_only", False) for block in model.blocks):
            raise UnsupportedCombination("diffusers' SeaCache records the text stream's output of the last block, and "
                                         f"{model.diffusers_class}'s last block drops that stream: it never reuses")
        config = SeaCacheConfig(threshold=float(self.threshold), residual_order=int(self.residual_order),
                                retention_steps=int(self.retention_steps), cache_end_steps=int(self.cache_end_steps),
                                max_consecutive_cached=int(self.max_consecutive_cached), power_exp=float(self.power),
                                raw_vision_callback=_sea_latents(model))
        return hooked_plan(nfe, model.num_blocks, SeaHooks(config, tuple(flow_sigmas(sampler, nfe, model))))
