"""The caching engine: every method becomes a plan, and one runner executes any plan.

A plan's `compute[nfe][block][branch]` (branch 0 = attention, 1 = MLP) says which branch
outputs are recomputed at each model evaluation; a reused branch returns the tensor from the
most recent evaluation that computed it (a reference, never a copy). What is stored is the
branch output before DiT's gate: gates, shifts, scales and U-ViT's skip_linear always run.
Each guidance pass has its own store (DiT: one pass over both CFG halves; U-ViT: cond and
uncond). A fresh `CacheRun` per batch means caches never leak across batches.

A plan refines plain reuse by at most one rule (`engine.rules`): skipped branches add zero
(`Drop`), refresh only at some evaluations (`Refresh`: L2C cycles), block spans (`Span`:
DeepCache, Delta-DiT), run-time span decisions (`RunTimeSpan`: FBCache, TeaCache; the realised
mask is `CacheRun.schedule`), forecast instead of reuse (`Forecast`: TaylorSeer), token-wise MLP
recomputation (`TokenWise`: ToCa), or another library's hooks (`Hooked`: diffusers').

A model whose weights change during sampling (Wan 2.2's two experts, switched at a boundary
timestep) declares the evaluations where they change (`expert_switches(sampler, nfe)`); the
checked plan restarts there (`restarted`): nothing stored before a switch is read after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import partial
from types import MappingProxyType
from typing import ClassVar

import torch

from .model import MLP, store_key
from .rules import REUSE, Hooked, Reuse, RunTimeSpan, TokenWise, computes_all, span_reused


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
    """A schedule, refined by at most one `rule` (`engine.rules`; default: plain reuse).
    `cache_steps`: the evaluations the method designates for reuse (the denominator of the
    paper's Table 4 cached ratio)."""

    compute: tuple[tuple[tuple[bool, bool], ...], ...]  # [nfe][block][branch]
    cache_steps: tuple[int, ...]
    rule: Reuse = REUSE
    notes: dict = field(default_factory=dict)
    # evaluations where the model's weights change (a two-expert model's switch; `restarted`): every
    # store and the run-time policy's state start empty there
    restarts: tuple[int, ...] = ()

    def __post_init__(self):
        problem = self.rule.problem(self) if self.compute else "a plan needs at least one evaluation"
        if not problem and self.rule.reads_store:
            problem = next((f"evaluation {n} follows a restart (the model's weights changed) and must compute "
                            "every branch: nothing stored before it may be read" for n in self.restarts
                            if not computes_all(self.compute[n])), None)
        if problem:
            raise CacheConfigError(problem)

    @property
    def nfe(self) -> int:
        return len(self.compute)

    @property
    def num_blocks(self) -> int:
        return len(self.compute[0])

    @property
    def decided_at_run_time(self) -> bool:
        """What runs is known only after sampling: a policy's decisions, or another library's hooks."""
        return self.rule.decided_at_run_time

    @property
    def policy(self):
        """The run-time span policy (`RunTimeSpan`), or None."""
        return self.rule.policy if isinstance(self.rule, RunTimeSpan) else None

    @property
    def hooks(self):
        """Another library's hooks (`Hooked`), or None."""
        return self.rule.hooks if isinstance(self.rule, Hooked) else None

    def mask(self) -> torch.Tensor:
        """Boolean compute mask (nfe, blocks, 2)."""
        return torch.tensor(self.compute, dtype=torch.bool)

    def schedule(self) -> torch.Tensor:
        """What a static plan computes (nfe, blocks, 2), as rows, MACs and plots read it: the bool
        mask, or for a token-wise plan the float share (`share`). The one place it is derived."""
        return self.share() if isinstance(self.rule, TokenWise) else self.mask()

    def share(self) -> torch.Tensor:
        """The share of each branch's work done (nfe, blocks, 2), float: the mask, with token-wise
        MLP evaluations counted at their token share (what MACs and reuse ratios count)."""
        share = self.mask().double()
        if isinstance(self.rule, TokenWise):
            share[:, :, MLP] *= torch.tensor(self.rule.share, dtype=torch.float64)[:, None]
        return share

    @property
    def cached_ratio(self) -> float:
        """Reused branch evaluations / branch evaluations in cache steps (paper Table 4)."""
        if isinstance(self.rule, TokenWise):
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
        if isinstance(self.rule, TokenWise):
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


def restarted(plan: Plan, restarts) -> Plan:
    """`plan` on a model whose weights change at evaluations `restarts` (Wan 2.2: the low-noise
    expert's first step). Step indices stay the sampler's; at a restart every store empties
    (`CacheRun`), so nothing one expert computed is read by the other: a rule that reads its store
    computes every branch there (a plan's reuse, forecast, token cache, span residual or router
    cycle starts again), and a run-time policy starts from its empty state. Layer dropout reads no
    store and runs as planned."""
    restarts = tuple(sorted({int(n) for n in restarts} | set(plan.restarts)))
    if restarts == plan.restarts:
        return plan
    compute = list(plan.compute)
    if plan.rule.reads_store:
        for n in restarts:
            compute[n] = ((True, True),) * plan.num_blocks
    return replace(plan, compute=tuple(compute), rule=plan.rule.restarted(restarts), restarts=restarts)


def full_plan(nfe: int, num_blocks: int) -> Plan:
    return Plan(tuple(((True, True),) * num_blocks for _ in range(nfe)), ())


class _Runner:
    """Branch runner for one guidance pass of one evaluation (see engine.model.BranchRunner):
    `row` [block][branch] says what is computed, `rule` what is kept and what a reuse returns."""

    __slots__ = ("decide", "evaluation", "observe", "reuse_span", "row", "rule", "span", "store")

    def __init__(self, *, row, store: dict, rule: Reuse = REUSE, evaluation: int = 0,
                 span: tuple[int, int] | None = None, reuse_span: bool = False, decide=None, observe=None):
        self.row, self.store, self.rule, self.evaluation = row, store, rule, evaluation
        self.span, self.reuse_span, self.decide, self.observe = span, reuse_span, decide, observe

    def run_span(self, h, fn, probe=None):
        """Blocks `self.span` as one unit: fn(h) -> (h_out, extras) computed or reused. `probe(kind)`
        (from the model) gives a dynamic policy its indicator: "residual" = the span input minus
        the blocks' input (the first block's residual for span (1, ...)); "modulated" = the first
        block's timestep-modulated input (DiT; U-ViT: the blocks' input tokens); and, from the
        engine, "input" = the span input h itself. A policy that also reads what a computed span
        returned (EasyCache's transformation rate) is handed (h, out) through `observe`."""
        if self.decide is None:
            reuse = self.reuse_span
        else:
            reuse = self.decide(lambda kind: h if kind == "input" else probe(kind), "span" in self.store)
        delta = self.rule.mode == "delta"
        if reuse:
            cached, extras = self.store["span"]
            return (h + cached if delta else cached), extras
        out, extras = fn(h)
        self.store["span"] = (out - h if delta else out, extras)
        if self.observe is not None:
            self.observe(h, out)
        return out, extras

    def reads_input(self, block: int, branch: int) -> bool:
        """False when `__call__` will hand back a stored, forecast or dropped output (the block
        may then add both of its branches in one pass)."""
        return bool(self.row[block][branch])

    def __call__(self, block: int, branch: int, fn, *args, part: int = 0):
        # A branch made of several modules (a cross-attention beside the self-attention, a text
        # stream's MLP beside the image stream's) stores each part under its own key.
        key = store_key(block, branch, part)
        if self.row[block][branch]:
            return self.rule.compute(self.store, key, self.evaluation, fn, *args)
        return self.rule.reuse(self.store, key, self.evaluation)


class _ObservingRunner:
    """A hooked plan's runner: computes every branch the model evaluates and records it in `ran`
    (blocks, 2); the model hands `hooks` the pass, evaluation and NFE they run at."""

    __slots__ = ("evaluation", "hooks", "nfe", "pass_index", "ran")
    span = None  # the hooks decide what runs: no span of ours

    def __init__(self, *, hooks, evaluation: int, nfe: int, pass_index: int, ran: torch.Tensor):
        self.hooks, self.evaluation, self.nfe, self.pass_index, self.ran = hooks, evaluation, nfe, pass_index, ran

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
        self._observed: set[int] = set()  # evaluations whose computed span the policy has seen

    def _decide(self, n: int, probe, has_cache: bool) -> bool:
        """The first guidance pass of evaluation n decides for all of them (one host sync)."""
        if self.decisions[n] is None:
            allowed = has_cache and n in self.plan.cache_steps
            reuse, value = self.plan.policy.decide(self._policy_state, probe, allowed, n, self.plan.nfe)
            self.decisions[n], self.indicators[n] = bool(reuse and allowed), value
        return self.decisions[n]

    def _observe(self, n: int, span_in, span_out) -> None:
        """What the span computed at evaluation n, handed to the policy once (the first pass, as
        it decided): span_in and span_out (N, T, D)."""
        if n not in self._observed:
            self._observed.add(n)
            self.plan.policy.observe(self._policy_state, span_in, span_out, n)

    def begin_evaluation(self, passes: int) -> list:
        if self.evaluations >= self.plan.nfe:
            raise RuntimeError(f"the sampler made more than the planned {self.plan.nfe} evaluations")
        plan, n = self.plan, self.evaluations
        if n in plan.restarts:  # the model's weights changed: nothing stored before is read again
            self._stores = []
            if plan.policy is not None:
                self._policy_state = plan.policy.start()
        while len(self._stores) < passes:
            self._stores.append({})
        self.evaluations += 1
        if plan.hooks is not None:
            return [_ObservingRunner(hooks=plan.hooks, evaluation=n, nfe=plan.nfe, pass_index=index,
                                     ran=self.observed[n]) for index in range(passes)]
        decide = None
        if plan.policy is not None:
            self.decisions.append(None)
            self.indicators.append(None)
            decide = partial(self._decide, n)
        observe = partial(self._observe, n) if hasattr(plan.policy, "observe") else None
        span = plan.rule.span_at(n)
        reuse_span = span is not None and span_reused(plan.compute[n], span)
        return [_Runner(row=plan.compute[n], store=store, rule=plan.rule, evaluation=n, span=span,
                        reuse_span=reuse_span, decide=decide, observe=observe) for store in self._stores[:passes]]

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
            start, end = self.plan.rule.span
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
    def defaults(cls) -> dict[str, object]:
        """Each parameter that has a default, with it: the run's default too (the method's config
        schema is made from these fields), as the catalog and the sweep summary's labels show it."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    @classmethod
    def identity_groups(cls, params: dict) -> tuple[str, ...]:
        """The run-config groups, besides `cache`, that change what this method computes with these
        parameters (L2C with `router=auto`: the `router` learning recipe); part of a run's identity."""
        return ()

    # What a run does with the method before sampling (`l2c_bench.runs.prepare`). `run` is the run's
    # description (l2c_bench.description.RunDescription: model, sampler, NFE, recipes, store);
    # `loaded` (description.Loaded) the `device`, `model` and `vae` it loaded. Both return the
    # method to plan with: the same, or one with a resolved artifact.
    def check_run(self, run) -> "CacheMethod":
        """Checks that need the run's description, made before any compute (default: none)."""
        return self

    def prepare(self, run, loaded) -> tuple["CacheMethod", dict]:
        """Make or find what the method needs on the loaded model (a learned router, a calibration);
        also returns the row fields that name it. Default: nothing to make."""
        return self, {}

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:  # pragma: no cover - interface
        raise NotImplementedError

    def checked_plan(self, *, model, sampler: str, nfe: int) -> Plan:
        """`plan()`, checked against the model and NFE, restarted where the model's weights change
        (`restarted`); `generate` calls it once per call."""
        plan = self.plan(model=model, sampler=sampler, nfe=nfe)
        if plan.nfe != nfe or plan.num_blocks != model.num_blocks:
            raise CacheConfigError(
                f"cache={self.name} planned {plan.nfe} evaluations x {plan.num_blocks} blocks for a "
                f"{model.num_blocks}-block model at {nfe} NFE"
            )
        switches = getattr(model, "expert_switches", None)
        return plan if switches is None else restarted(plan, switches(sampler, nfe))

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
