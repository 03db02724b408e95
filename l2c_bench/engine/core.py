"""The caching engine: every method becomes a plan, and one runner executes any plan.

A plan's `compute[nfe][block][branch]` (branch 0 = attention, 1 = MLP) says which branch
outputs are recomputed at each model evaluation; a reused branch returns the tensor from the
most recent evaluation that computed it (a reference, never a copy). What is stored is the
branch output before DiT's gate: gates, shifts, scales and U-ViT's skip_linear always run.
Each guidance pass has its own store (DiT: one pass over both CFG halves; U-ViT: cond and
uncond). A fresh `CacheRun` per batch means caches never leak across batches.

Refinements a plan can ask for (one each, see `Plan`): refresh only at some evaluations
(`store`: L2C cycles), forecast instead of reuse (`forecast`: TaylorSeer), per-evaluation
block spans (`spans`: Delta-DiT), run-time span decisions (`policy`: FBCache, TeaCache; the
realised mask is `CacheRun.schedule`), and token-wise MLP recomputation (`token_ratio` with its
`token_rule`: ToCa). Forecasts and token selection are rules the method supplies in its plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

import torch

from .model import store_key


class CacheConfigError(ValueError):
    """A cache setting that cannot work for this model/sampler/NFE (raised before compute)."""


def check_interval(interval) -> None:
    """`cache.interval`: every interval-th evaluation is full (fora, deepcache, taylorseer, ...)."""
    if int(interval) != interval or interval < 1:
        raise CacheConfigError(f"cache.interval={interval} must be an integer >= 1")


class UnsupportedCombination(CacheConfigError):
    """The method is not defined for this model family or sampler (a sweep records it)."""


@dataclass(frozen=True)
class Plan:
    """A static schedule. `cache_steps`: the evaluations the method designates for reuse
    (the denominator of the paper's Table 4 cached ratio)."""

    compute: tuple[tuple[tuple[bool, bool], ...], ...]  # [nfe][block][branch]
    cache_steps: tuple[int, ...]
    drop: bool = False  # layer dropout: a skipped branch contributes zero instead of its cache
    # Block-level reuse (DeepCache, Faster Diffusion): blocks [start, end) in execution order run
    # as one unit whose effect is cached at evaluations that compute them and reused where
    # `compute` marks all of them reused. "delta" reuses the residual update (out - in, DiT),
    # "output" reuses the span's output (and, for U-ViT, the skips it leaves on the stack).
    span: tuple[int, int] | None = None
    span_mode: str = "output"
    # Per-evaluation spans (overrides `span`; Delta-DiT moves its span from the rear blocks to the
    # front ones): None entries run no span. A new span's first evaluation must compute it.
    spans: tuple[tuple[int, int] | None, ...] | None = None
    # Per evaluation: whether the branch outputs it computes replace the cached ones (None: all
    # do). L2C with interval k > 2 refreshes only at full steps, so every cache step of a cycle
    # reuses the full step's features, as its router was trained.
    store: tuple[bool, ...] | None = None
    # Forecast instead of reuse (TaylorSeer's `TaylorForecast`): a computed branch output updates
    # `forecast.update(state, out, n) -> state`; a reused one is `forecast.predict(state, n)`.
    # None: plain reuse. The method module holds the rule; the engine only calls it.
    forecast: object | None = None
    # Dynamic span reuse (FBCache, TeaCache): `policy.decide` chooses at run time, per evaluation,
    # whether `span` is reused; `compute` is then the all-computed row and the realised schedule
    # is read from the run (`CacheRun.schedule`). `cache_steps` = the evaluations allowed to reuse.
    policy: object | None = None
    # Token-wise MLP caching (ToCa): per evaluation, the share of tokens whose MLP output is
    # recomputed (1.0 = all; the rest keep their cached outputs), and the rule that picks them:
    # `token_rule(store, key, share, fn, x, *rest) -> out` (ToCa's `StalestTokens`). None: whole
    # branches only.
    token_ratio: tuple[float, ...] | None = None
    token_rule: object | None = None
    # Another library's cache hooks (diffusers' own, `caching.methods.diffusers_hooks`): the model
    # applies `hooks.apply(transformer)` for each batch and they decide what runs; the runner
    # computes whatever is asked and records it, so the realised schedule is what ran
    # (`CacheRun.schedule`). `compute` is then the all-computed row.
    hooks: object | None = None
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.compute:
            raise CacheConfigError("a plan needs at least one evaluation")
        first = self.compute[0]
        if not self.drop and not all(all(branches) for branches in first):
            raise CacheConfigError("the first evaluation must compute every branch: the cache is empty")
        if self.spans is not None and len(self.spans) != len(self.compute):
            raise CacheConfigError("plan.spans needs one entry per evaluation")
        previous = None
        for n in range(len(self.compute)):
            span = self.span_at(n)
            if span is None:
                continue
            start, end = span
            if not 0 <= start < end <= len(first):
                raise CacheConfigError(f"block span {span} does not fit {len(first)} blocks")
            if self.span_mode not in ("delta", "output"):
                raise CacheConfigError(f"span_mode={self.span_mode!r}; valid: delta, output")
            if span != previous and self.span_reused(n):
                raise CacheConfigError(f"evaluation {n} reuses span {span} before any evaluation computed it")
            previous = span
        if self.policy is not None and (self.span is None or self.spans is not None or 0 in self.cache_steps):
            raise CacheConfigError("a dynamic plan needs one span and may not reuse at the first evaluation")
        if self.token_ratio is not None and (len(self.token_ratio) != len(self.compute) or self.token_ratio[0] != 1.0
                                             or not all(0.0 < r <= 1.0 for r in self.token_ratio)):
            raise CacheConfigError("plan.token_ratio needs one share in (0, 1] per evaluation, 1.0 at the first")
        if (self.token_ratio is None) != (self.token_rule is None):
            raise CacheConfigError("a token-wise plan needs both token_ratio and token_rule")
        if self.store is not None and (len(self.store) != len(self.compute) or not self.store[0]):
            raise CacheConfigError("plan.store needs one flag per evaluation, and the first must store")
        if self.hooks is not None and (self.policy is not None or self.span is not None or self.forecast is not None
                                       or self.token_ratio is not None or self.drop
                                       or not all(all(all(b) for b in row) for row in self.compute)):
            raise CacheConfigError("a hooked plan computes whatever the hooks ask: no other refinement")

    @property
    def nfe(self) -> int:
        return len(self.compute)

    @property
    def decided_at_run_time(self) -> bool:
        """What runs is known only after sampling: a policy's decisions, or another library's hooks."""
        return self.policy is not None or self.hooks is not None

    @property
    def num_blocks(self) -> int:
        return len(self.compute[0])

    def span_at(self, n: int) -> tuple[int, int] | None:
        return self.span if self.spans is None else self.spans[n]

    def span_reused(self, n: int) -> bool:
        span = self.span_at(n)
        if span is None:
            return False
        start, end = span
        return not any(any(branches) for branches in self.compute[n][start:end])

    def mask(self) -> torch.Tensor:
        """Boolean compute mask (nfe, blocks, 2)."""
        return torch.tensor(self.compute, dtype=torch.bool)

    def schedule(self) -> torch.Tensor:
        """What a static plan computes (nfe, blocks, 2), as rows, MACs and plots read it: the bool
        mask, or for a token-wise plan the float share (`share`). The one place it is derived."""
        return self.mask() if self.token_ratio is None else self.share()

    def share(self) -> torch.Tensor:
        """The share of each branch's work done (nfe, blocks, 2), float: the mask, with token-wise
        MLP evaluations counted at their token share (what MACs and reuse ratios count)."""
        share = self.mask().double()
        if self.token_ratio is not None:
            share[:, :, 1] *= torch.tensor(self.token_ratio, dtype=torch.float64)[:, None]
        return share

    @property
    def cached_ratio(self) -> float:
        """Reused branch evaluations / branch evaluations in cache steps (paper Table 4)."""
        if self.token_ratio is not None:
            return realised_ratios(self, self.share())[0]
        reused, total = self.reused_in_cache_steps
        return reused / total if total else 0.0

    @property
    def reused_in_cache_steps(self) -> tuple[int, int]:
        reused = sum(not c for n in self.cache_steps for block in self.compute[n] for c in block)
        return reused, len(self.cache_steps) * self.num_blocks * 2

    @property
    def reused_ratio_all(self) -> float:
        """Reused branch evaluations / all branch evaluations."""
        if self.token_ratio is not None:
            return realised_ratios(self, self.share())[1]
        reused = sum(not c for row in self.compute for block in row for c in block)
        return reused / (self.nfe * self.num_blocks * 2)


def realised_ratios(plan: Plan, schedule: torch.Tensor) -> tuple[float, float]:
    """(cached ratio in the plan's cache steps, reused ratio over all evaluations) of a realised
    compute mask (nfe, blocks, 2); float masks (a share of samples per entry) are averaged."""
    reused = 1.0 - schedule.double()
    steps = list(plan.cache_steps)
    cached = reused[steps].mean().item() if steps else 0.0
    return cached, reused.mean().item()


def full_plan(nfe: int, num_blocks: int) -> Plan:
    return Plan(tuple(((True, True),) * num_blocks for _ in range(nfe)), ())


class _Runner:
    """Branch runner for one guidance pass of one evaluation (see engine.model.BranchRunner)."""

    __slots__ = ("decide", "drop", "evaluation", "forecast", "refresh", "row", "span", "span_mode", "span_reuse",
                 "store", "token_rule", "tokens")

    def __init__(self, row, store: dict, drop: bool, span=None, span_mode="output", span_reuse=False,
                 refresh: bool = True, evaluation: int = 0, forecast=None, decide=None,
                 tokens: float | None = None, token_rule=None):
        self.row, self.store, self.drop, self.refresh = row, store, drop, refresh
        self.span, self.span_mode, self.span_reuse = span, span_mode, span_reuse
        self.evaluation, self.forecast, self.decide = evaluation, forecast, decide
        self.tokens, self.token_rule = tokens, token_rule

    def run_span(self, h, fn, probe=None):
        """Blocks `self.span` as one unit: fn(h) -> (h_out, extras) computed or reused. `probe(kind)`
        (from the model) gives a dynamic policy its indicator: "residual" = the span input minus
        the blocks' input (the first block's residual for span (1, ...)); "modulated" = the first
        block's timestep-modulated input (DiT; U-ViT: the blocks' input tokens)."""
        if self.decide is not None:
            self.span_reuse = self.decide(probe, "span" in self.store)
        if self.span_reuse:
            cached, extras = self.store["span"]
            return (h + cached if self.span_mode == "delta" else cached), extras
        out, extras = fn(h)
        self.store["span"] = (out - h if self.span_mode == "delta" else out, extras)
        return out, extras

    def reads_input(self, block: int, branch: int) -> bool:
        """False when `__call__` will hand back a stored, forecast or dropped output (the block
        may then add both of its branches in one pass)."""
        return bool(self.row[block][branch])

    def __call__(self, block: int, branch: int, fn, *args, part: int = 0):
        # A branch made of several modules (a cross-attention beside the self-attention, a text
        # stream's MLP beside the image stream's) stores each part under its own key.
        key = store_key(block, branch, part)
        if self.tokens is not None and branch == 1 and self.row[block][branch]:
            return self.token_rule(self.store, key, self.tokens, fn, *args)
        if self.row[block][branch]:
            out = fn(*args)
            if self.forecast is not None:
                self.store[key] = self.forecast.update(self.store.get(key), out, self.evaluation)
            elif self.refresh:
                self.store[key] = out  # a reference: the model never writes in place
            return out
        if self.drop:
            return 0.0  # x + gate * 0: the branch is skipped entirely
        if self.forecast is not None:
            return self.forecast.predict(self.store[key], self.evaluation)
        return self.store[key]


class _ObservingRunner(_Runner):
    """A hooked plan's runner: computes every branch the model evaluates and records it."""

    __slots__ = ("hooks", "nfe", "pass_index", "ran")

    def __call__(self, block: int, branch: int, fn, *args, part: int = 0):
        self.ran[block, branch] = True
        return fn(*args)


class CacheRun:
    """Per-batch state: counts evaluations, hands out runners, checks the plan was followed."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.observed = torch.zeros(plan.nfe, plan.num_blocks, 2, dtype=torch.bool) if plan.hooks is not None else None
        self.evaluations = 0
        self._stores: list[dict] = []
        # dynamic plans: per evaluation, whether the span was reused and the policy's indicator
        self.decisions: list[bool | None] = []
        self.indicators: list[float | None] = []
        self._policy_state = plan.policy.start() if plan.policy is not None else None

    def _decide(self, n: int, probe, has_cache: bool) -> bool:
        """The first guidance pass of evaluation n decides for all of them (one host sync)."""
        if self.decisions[n] is None:
            allowed = has_cache and n in self.plan.cache_steps
            reuse, value = self.plan.policy.decide(self._policy_state, probe, allowed, n, self.plan.nfe)
            self.decisions[n], self.indicators[n] = bool(reuse and allowed), value
        return self.decisions[n]

    def begin_evaluation(self, passes: int) -> list[_Runner]:
        if self.evaluations >= self.plan.nfe:
            raise RuntimeError(f"the sampler made more than the planned {self.plan.nfe} evaluations")
        while len(self._stores) < passes:
            self._stores.append({})
        plan, n = self.plan, self.evaluations
        self.evaluations += 1
        refresh = plan.store is None or plan.store[n]
        decide = None
        if plan.policy is not None:
            self.decisions.append(None)
            self.indicators.append(None)
            decide = lambda probe, has_cache: self._decide(n, probe, has_cache)  # noqa: E731
        tokens = None if plan.token_ratio is None else plan.token_ratio[n]
        if plan.hooks is not None:
            runners = [_ObservingRunner(plan.compute[n], store, False, evaluation=n) for store in self._stores[:passes]]
            for index, runner in enumerate(runners):
                runner.hooks, runner.nfe, runner.pass_index, runner.ran = plan.hooks, plan.nfe, index, self.observed[n]
            return runners
        return [_Runner(plan.compute[n], store, plan.drop, plan.span_at(n), plan.span_mode, plan.span_reused(n),
                        refresh, n, plan.forecast, decide, tokens, plan.token_rule) for store in self._stores[:passes]]

    @property
    def cache_bytes(self) -> int:
        """Bytes the cache holds now (each stored tensor once; references, never copies)."""
        tensors = {}
        for store in self._stores:
            for value in store.values():
                for t in (value if isinstance(value, tuple) else (value,)):
                    items = t if isinstance(t, (list, tuple)) else (t,)
                    for item in items:
                        if isinstance(item, torch.Tensor):
                            tensors[id(item)] = item.numel() * item.element_size()
        return sum(tensors.values())

    @property
    def schedule(self) -> torch.Tensor:
        """The compute mask (nfe, blocks, 2) that ran."""
        if self.evaluations != self.plan.nfe:
            raise RuntimeError(f"plan has {self.plan.nfe} evaluations, sampler made {self.evaluations}")
        if self.observed is not None:  # what the hooks let run
            return self.observed.clone()
        mask = self.plan.mask()
        if self.plan.policy is not None:  # what the policy decided at run time
            start, end = self.plan.span
            for n, reused in enumerate(self.decisions):
                if reused:
                    mask[n, start:end] = False
        return mask


class CacheMethod:
    """Base of every method: subclasses implement `plan(model, sampler, nfe)`.

    A method object is config (plain values, YAML round-trippable); `generate()` asks it for a
    checked plan once, then for fresh per-batch state (`run`) for every batch.
    """

    # Class attributes, not parameters: a subclass sets them WITHOUT a type annotation (an annotated
    # one would become a dataclass field, i.e. a parameter in its schema, rows and run id).
    name: ClassVar[str] = "base"  # its key in CACHE_METHODS and its `cache=` option
    label: ClassVar[str] = "base"  # its name in tables and plots
    # Its rows in the method tables of README.md (`summary`, one line) and docs/caching.md
    # (`description`; the parameters column is made from its fields and defaults, with
    # `parameter_notes` {parameter: what a value means} where the default alone does not say):
    # `python -m l2c_bench.catalog --write-docs` writes both tables from the registry.
    summary: ClassVar[str] = ""
    description: ClassVar[str] = ""
    parameter_notes: ClassVar[Mapping[str, str]] = MappingProxyType({})
    decides_at_run_time: ClassVar[bool] = False  # its plan carries a policy that reads model outputs on the host
    # Parameters whose value here reproduces what the method computed before the parameter existed:
    # left out of a run's identity at that value, so run ids of rows written before stay valid.
    identity_neutral: ClassVar[Mapping[str, object]] = MappingProxyType({})
    not_in_identity: ClassVar[tuple[str, ...]] = ()  # parameters that never change what it computes
    config_groups: ClassVar[tuple[str, ...]] = ()  # run-config groups it may read (see identity_groups)

    @property
    def plans_without_weights(self) -> bool:
        """True if `plan()` works on a weightless (`meta`) model, i.e. before any compute (and
        before `prepare`)."""
        return True

    @classmethod
    def identity_groups(cls, params: dict) -> tuple[str, ...]:
        """The run-config groups, besides `cache`, that change what this method computes with these
        parameters (L2C with `router=auto`: the `router` learning recipe); part of a run's identity."""
        return ()

    # What a run does with the method before sampling (`l2c_bench.runs.prepare`). `run` carries the
    # run's config (`cfg`), `sampler` and `nfe`, and for `prepare` also the loaded `device`, `model`
    # and `vae`. Both return the method to plan with: the same, or one with a resolved artifact.
    def check_run(self, run) -> "CacheMethod":
        """Checks that need the run's config, made before any compute (default: none)."""
        return self

    def prepare(self, run) -> tuple["CacheMethod", dict]:
        """Make or find what the method needs on the loaded model (a learned router, a calibration);
        also returns the row fields that name it. Default: nothing to make."""
        return self, {}

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:  # pragma: no cover - interface
        raise NotImplementedError

    def checked_plan(self, *, model, sampler: str, nfe: int) -> Plan:
        """`plan()`, checked against the model and NFE; `generate` calls it once per call."""
        plan = self.plan(model=model, sampler=sampler, nfe=nfe)
        if plan.nfe != nfe or plan.num_blocks != model.num_blocks:
            raise CacheConfigError(
                f"cache={self.name} planned {plan.nfe} evaluations x {plan.num_blocks} blocks for a "
                f"{model.num_blocks}-block model at {nfe} NFE"
            )
        return plan

    def run(self, plan: Plan) -> CacheRun:
        """Fresh per-batch state executing `plan`."""
        return CacheRun(plan)


class FixedPlan(CacheMethod):
    """A method whose plan is already made: timed calls then do no planning work (router
    reading, calibration) inside the measured region."""

    def __init__(self, plan: Plan, name: str):
        self._plan, self.name = plan, name

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        return self._plan

    @classmethod
    def of(cls, method: CacheMethod, *, model, sampler: str, nfe: int) -> "FixedPlan":
        return cls(method.checked_plan(model=model, sampler=sampler, nfe=nfe), method.name)
