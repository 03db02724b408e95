"""`l2c`: Learning-to-Cache (Ma et al., NeurIPS 2024, Sec. 3.4-3.5) at inference.

In each cache step (see `pairing`), branch (block b, j) is recomputed iff
sigmoid(router[row][2b + j]) > threshold, else the previous evaluation's output is reused.

`interval` k > 2 (DiT + DDIM) goes past the paper's 2x ceiling: one full step, then k-1 cache
steps that all reuse the full step's branch outputs (branches a cache step recomputes are used
there but do not refresh the cache), with a router trained for that cycle
(`train_router cache.interval=k`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ....description import Loaded, RunDescription
from ....engine.core import CacheConfigError, CacheMethod, Plan
from ....engine.rules import REUSE, Refresh
from .learning.job import learn, recipe_from, resolve_auto
from .pairing import check_l2c_interval, l2c_cache_steps, l2c_cycle
from .router import load_router

ROUTER_DIR = Path(__file__).resolve().parents[2] / "routers"
OFFICIAL_TAGS = {"ddim": "ddim", "dpm_solver2": "dpm"}


def resolve_router(router: str, family: str, sampler: str, nfe: int) -> str:
    """`official` -> the shipped copy of the official L2C router for (family, sampler, NFE)."""
    if router != "official":
        return router
    path = ROUTER_DIR / f"official_{family}_{OFFICIAL_TAGS.get(sampler, sampler)}{nfe}.pt"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem.removeprefix("official_") for p in ROUTER_DIR.glob("official_*.pt")))
        raise CacheConfigError(
            f"cache.router=official: the L2C release has no router for {family}+{sampler} at {nfe} NFE "
            f"(shipped: {shipped}); give a router file path"
        )
    return str(path)


def l2c_plan(logits: torch.Tensor, threshold: float, family: str, sampler: str, nfe: int,
             num_blocks: int, interval: int = 2) -> Plan:
    """Pure: router logits (nfe, 2*blocks) + threshold -> plan."""
    pairs = l2c_cache_steps(family, sampler, nfe, interval=interval)
    if tuple(logits.shape) != (nfe, 2 * num_blocks):
        raise CacheConfigError(
            f"cache.router has shape {tuple(logits.shape)} but {family} with {num_blocks} blocks at "
            f"{nfe} NFE needs ({nfe}, {2 * num_blocks}): a router is trained for one model and NFE"
        )
    recompute = (torch.sigmoid(logits.float()) > threshold).view(nfe, num_blocks, 2).tolist()
    compute = [((True, True),) * num_blocks for _ in range(nfe)]
    for n, row in pairs:
        compute[n] = tuple((bool(a), bool(m)) for a, m in recompute[row])
    cache_steps = tuple(n for n, _ in pairs)
    rule = REUSE if interval == 2 else Refresh(tuple(n not in cache_steps for n in range(nfe)))
    return Plan(tuple(compute), cache_steps, rule=rule, notes={"interval": interval})


# The paper's threshold per family; flow models (SD3, Flux) have none in the paper: DiT's, the other
# family with one evaluation per step.
PAPER_THRESHOLDS = {"dit": 0.1, "uvit": 0.9, "flow": 0.1}


@dataclass
class L2C(CacheMethod):
    # `auto`: the learned router for this checkpoint, sampler, NFE and router.* recipe, from the run's
    # results store (l2c_bench.run); `official`: the L2C release (paper-scale models, NFE 20/50); a path
    router: str = "auto"
    threshold: float | None = None  # None: the paper's value for the model family
    train_if_missing: bool = False  # router=auto at paper scale: learn a missing router instead of failing
    interval: int = 2  # one full step + interval-1 cache steps (2 = the paper; > 2: DiT + DDIM)
    name = "l2c"
    not_in_identity = ("train_if_missing",)
    config_groups = ("router",)
    identity_neutral = {"interval": 2}  # rows from before `interval` existed computed the paper's cycle
    label = "L2C"  # in tables and plots (analysis/labels.py)
    summary = ("L2C: a learned router picks the branches to recompute in each cache step; `cache.interval=k` "
               "for cycles past 2x")
    description = ("L2C: in each cache step a branch is recomputed iff `sigmoid(logit) > threshold`. "
                   "DiT+DDIM: cache steps at even respaced indices; U-ViT+DPM-Solver-2: the first evaluation "
                   'of each solver step after the first ("shifted"). `interval=k` (DiT+DDIM): one full step, '
                   "then k-1 cache steps that all reuse it (past the 2x ceiling); needs a router learned for "
                   "that cycle (`router=auto`; shipped for the toy DiT at NFE 20, k = 2-4, lambda 1e-4 and "
                   "3e-3)")
    parameter_notes = {
        "router": "`official`, `auto` or a file",
        "threshold": "null: DiT 0.1, U-ViT 0.9",
        "interval": "2 = the paper",
        "train_if_missing": "false: `router=auto` at paper scale prints the training command",
    }

    def __post_init__(self):
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise CacheConfigError(f"cache.threshold={self.threshold} must lie in [0, 1]")
        if not self.router:
            raise CacheConfigError("cache.router is empty: give the path of a router file")
        check_l2c_interval(self.interval)  # as every method checks its interval: when built

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        l2c_cycle(model.family, sampler, nfe, interval=self.interval)  # unsupported: fail before reading files
        if self.router == "auto":
            raise CacheConfigError("cache.router=auto is resolved by `l2c_bench.run` from the router store; "
                                   "through the Python API give a router file path")
        path = resolve_router(self.router, model.family, sampler, nfe)
        threshold = PAPER_THRESHOLDS[model.family] if self.threshold is None else float(self.threshold)
        if self.router == "official" and self.interval != 2:
            raise CacheConfigError("the official L2C routers were trained for interval 2; "
                                   f"cache.interval={self.interval} needs a router learned for it (router=auto)")
        return l2c_plan(load_router(path), threshold, model.family, sampler, nfe, model.num_blocks,
                        int(self.interval))

    @property
    def plans_without_weights(self) -> bool:
        return self.router != "auto"  # `auto`: resolved from the router store by check_run / prepare

    @classmethod
    def identity_groups(cls, params: dict) -> tuple[str, ...]:
        return ("router",) if params.get("router") == "auto" else ()  # the recipe picks the router

    def check_run(self, run: RunDescription) -> CacheMethod:
        """`router=auto`: the cycle and the learning recipe are checked, and a stored router for this
        model, sampler, NFE and recipe is used if there is one (paper scale without one: an error
        printing the training command, unless `train_if_missing`)."""
        if self.router != "auto":
            return self
        l2c_cycle(run.model.family, run.sampler.name, run.steps, interval=self.interval)  # unsupported: recorded
        recipe_from(run.router)  # a bad recipe (lam < 0, ...) fails here
        path = resolve_auto(run)
        return self if path is None else replace(self, router=str(path))

    def prepare(self, run: RunDescription, loaded: Loaded) -> tuple[CacheMethod, dict]:
        """`router=auto` (as configured: `run.cache`): the stored router, or one learned now on the loaded model."""
        if run.cache.router != "auto":
            return self, {}
        path = learn(run, device=loaded.device, model=loaded.model, vae=loaded.vae)  # a stored one is reused
        return replace(self, router=str(path)), {"router_file": path.name}
