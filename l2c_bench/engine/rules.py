"""What a plan may ask for beyond plain reuse: one rule per plan (`Plan.rule`), so refinements
never combine. A rule says what a computed branch output leaves in the store and what a reused
branch returns (`compute`, `reuse`), which blocks run as one unit (`span_at`), and what a plan
needs for it to work (`problem`). What is method-specific (TaylorSeer's forecast, ToCa's token
choice, FBCache's and TeaCache's policies, diffusers' hooks) the method supplies; a rule calls it.

A store maps `engine.model.store_key` -- (block, branch) or (block, branch, part) -- to what the
rule keeps for that branch, and "span" to a span's cached (effect, extras).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .model import MLP


def computes_all(row) -> bool:
    """Whether one evaluation's row [block][branch] computes every branch."""
    return all(all(branches) for branches in row)


def span_reused(row, span: tuple[int, int]) -> bool:
    """Whether an evaluation's row reuses blocks [start, end) as one unit (computes none of them)."""
    start, end = span
    return not any(any(branches) for branches in row[start:end])


@dataclass(frozen=True)
class Reuse:
    """Plain reuse, a plan's default: a computed branch output replaces the stored one (a
    reference, never a copy: the model never writes in place); a reused one hands it back."""

    decided_at_run_time: ClassVar[bool] = False  # what runs is known only after sampling
    # whether a skipped branch reads what an earlier evaluation stored: then an evaluation after a
    # restart (the model's weights changed, engine.core.restarted) must compute every branch
    reads_store: ClassVar[bool] = True

    def problem(self, plan) -> str | None:
        """Why `plan` cannot run under this rule (checked when the plan is made), or None."""
        if not computes_all(plan.compute[0]):
            return "the first evaluation must compute every branch: the cache is empty"
        return None

    def restarted(self, restarts: tuple[int, ...]) -> Reuse:
        """This rule where the evaluations `restarts` start from empty stores (their rows compute
        every branch): a rule with per-evaluation settings makes them those of a first evaluation."""
        return self

    def span_at(self, n: int) -> tuple[int, int] | None:
        """The blocks [start, end) that run as one unit at evaluation n; None: none do."""
        return None

    def compute(self, store: dict, key: tuple, n: int, fn, *args):
        out = fn(*args)
        store[key] = out
        return out

    def reuse(self, store: dict, key: tuple, n: int):
        return store[key]


REUSE = Reuse()


@dataclass(frozen=True)
class Drop(Reuse):
    """Layer dropout: a skipped branch contributes zero instead of a cached output, so no
    evaluation needs an earlier one to have computed it."""

    reads_store: ClassVar[bool] = False

    def problem(self, plan) -> str | None:
        return None

    def reuse(self, store: dict, key: tuple, n: int):
        return 0.0  # x + gate * 0: the branch is skipped entirely


@dataclass(frozen=True)
class Refresh(Reuse):
    """Per evaluation, whether the branch outputs it computes replace the stored ones. L2C with
    interval k > 2 refreshes only at full steps, so every cache step of a cycle reuses the full
    step's features, as its router was trained."""

    at: tuple[bool, ...]

    def problem(self, plan) -> str | None:
        if len(self.at) != plan.nfe or not self.at[0]:
            return "Refresh needs one flag per evaluation, and the first must store"
        return super().problem(plan)

    def restarted(self, restarts: tuple[int, ...]) -> Refresh:
        return Refresh(tuple(flag or n in restarts for n, flag in enumerate(self.at)))  # a restart stores

    def compute(self, store: dict, key: tuple, n: int, fn, *args):
        out = fn(*args)
        if self.at[n]:
            store[key] = out
        return out


@dataclass(frozen=True)
class Span(Reuse):
    """Block-level reuse (DeepCache, Faster Diffusion; Delta-DiT moves its span from the rear
    blocks to the front ones): per evaluation, blocks [start, end) in execution order run as one
    unit (None: no span), whose effect is cached at evaluations that compute them and reused where
    `compute` marks all of them reused; a new span's first evaluation must compute it. `mode`
    "delta" reuses the residual update (out - in, DiT), "output" the span's output (and, for
    U-ViT, the skips it leaves on the stack)."""

    at: tuple[tuple[int, int] | None, ...]
    mode: str = "output"

    def problem(self, plan) -> str | None:
        if len(self.at) != plan.nfe:
            return "Span needs one entry per evaluation"
        if self.mode not in ("delta", "output"):
            return f"span mode={self.mode!r}; valid: delta, output"
        previous = None
        for n, span in enumerate(self.at):
            if span is None:
                continue
            if not 0 <= span[0] < span[1] <= plan.num_blocks:
                return f"block span {span} does not fit {plan.num_blocks} blocks"
            if span != previous and span_reused(plan.compute[n], span):
                return f"evaluation {n} reuses span {span} before any evaluation computed it"
            previous = span
        return super().problem(plan)

    def span_at(self, n: int) -> tuple[int, int] | None:
        return self.at[n]


@dataclass(frozen=True)
class RunTimeSpan(Reuse):
    """Dynamic span reuse (FBCache, TeaCache): `policy.decide` chooses at run time, per evaluation,
    whether `span` adds its cached residual update instead of running; `compute` is then the
    all-computed row, the realised schedule is read from the run (`CacheRun.schedule`) and
    `cache_steps` are the evaluations allowed to reuse. A policy with `observe(state, span_in,
    span_out, n)` is also shown what each computed span returned (EasyCache)."""

    span: tuple[int, int]
    policy: object
    mode: ClassVar[str] = "delta"
    decided_at_run_time: ClassVar[bool] = True

    def problem(self, plan) -> str | None:
        if not 0 <= self.span[0] < self.span[1] <= plan.num_blocks:
            return f"block span {self.span} does not fit {plan.num_blocks} blocks"
        if 0 in plan.cache_steps:
            return "a dynamic plan may not reuse at the first evaluation"
        return super().problem(plan)

    def span_at(self, n: int) -> tuple[int, int]:
        return self.span


@dataclass(frozen=True)
class Forecast(Reuse):
    """Forecast instead of reuse (TaylorSeer's `TaylorForecast`): a computed branch output updates
    the branch's state, `rule.update(state, out, n) -> state`; a reused one is
    `rule.predict(state, n)`."""

    rule: object

    def compute(self, store: dict, key: tuple, n: int, fn, *args):
        out = fn(*args)
        store[key] = self.rule.update(store.get(key), out, n)
        return out

    def reuse(self, store: dict, key: tuple, n: int):
        return self.rule.predict(store[key], n)


@dataclass(frozen=True)
class TokenWise(Reuse):
    """Token-wise MLP caching (ToCa): per evaluation, the share of tokens whose MLP output is
    recomputed (1.0 = all; the rest keep their cached outputs), and the rule that picks them:
    `rule(store, key, share, fn, x, *rest) -> out` (ToCa's `StalestTokens`). Attention is
    computed or reused whole."""

    share: tuple[float, ...]
    rule: object

    def problem(self, plan) -> str | None:
        if len(self.share) != plan.nfe or self.share[0] != 1.0 or not all(0.0 < r <= 1.0 for r in self.share):
            return "TokenWise needs one share in (0, 1] per evaluation, 1.0 at the first"
        return super().problem(plan)

    def restarted(self, restarts: tuple[int, ...]) -> TokenWise:
        return TokenWise(tuple(1.0 if n in restarts else r for n, r in enumerate(self.share)), self.rule)  # all tokens

    def compute(self, store: dict, key: tuple, n: int, fn, *args):
        if key[1] == MLP:  # key: (block, branch) or (block, branch, part)
            return self.rule(store, key, self.share[n], fn, *args)
        return super().compute(store, key, n, fn, *args)


@dataclass(frozen=True)
class Hooked(Reuse):
    """Another library's cache hooks (diffusers' own, `caching.methods.diffusers_hooks`): the model
    applies `hooks.apply(transformer)` for each batch and they decide what runs; the engine
    computes whatever is asked and records it, so the realised schedule is what ran
    (`CacheRun.schedule`). `compute` is then the all-computed row."""

    hooks: object
    decided_at_run_time: ClassVar[bool] = True

    def problem(self, plan) -> str | None:
        if not all(computes_all(row) for row in plan.compute):
            return "a hooked plan computes whatever the hooks ask: every branch planned as computed"
        return None
