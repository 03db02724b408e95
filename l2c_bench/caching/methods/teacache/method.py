"""`teacache`: TeaCache (Liu et al., CVPR 2025, "Timestep Embedding Tells: It's Time to Cache"):
the relative L1 change of the first block's timestep-modulated input between consecutive
evaluations (U-ViT, which has no adaLN: of the blocks' input tokens), rescaled by a polynomial
fitted per model, sampler and NFE (`l2c_bench.calibrate`, stored as an artifact), is
accumulated; while the sum stays below `threshold` the whole block stack's residual is reused,
otherwise the stack runs and the sum resets. The first and the last evaluation always run.

Decided at run time: see `..dynamic` (one host sync per evaluation)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ....description import Loaded, RunDescription
from ....engine import CacheConfigError, CacheMethod, Plan
from ..dynamic import check_threshold
from .calibration import calibration_for, check_calibration
from .coefficients import load_coefficients
from .policy import TeaCachePolicy, stack_plan


@dataclass
class TeaCache(CacheMethod):
    threshold: float | None = None  # None: 0.1 (TeaCache's "slow" setting for DiT-like models)
    coefficients: str | list | None = "auto"  # auto: the calibration artifact; a file; or a list
    name = "teacache"
    config_groups = ("calibration",)
    label = "TeaCache"  # in tables and plots (analysis/labels.py)
    summary = "TeaCache: reuse the whole stack while a calibrated estimate of the change stays small"
    description = ("TeaCache (Liu et al., CVPR 2025): the whole block stack reuses its residual while the "
                   "accumulated, polynomial-rescaled relative L1 change of block 0's modulated input stays "
                   "below `threshold`; coefficients fitted by `python -m l2c_bench.calibrate` (artifact in "
                   "`<results_dir>/_calibration/`; `auto` finds it, and calibrates on first use at toy "
                   "scale). Dynamic, as fbcache")
    parameter_notes = {"threshold": "null: 0.1", "coefficients": "`auto`, a file or a list"}
    decides_at_run_time = True

    def __post_init__(self):
        check_threshold(self.threshold, 0.1)

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        if self.coefficients == "auto":
            raise CacheConfigError("cache.coefficients=auto is resolved by `l2c_bench.run` from the calibration "
                                   "store; through the Python API give a list or a calibration file")
        coefficients = (tuple(float(c) for c in self.coefficients) if isinstance(self.coefficients, (list, tuple))
                        else load_coefficients(self.coefficients, model=model, sampler=sampler, nfe=nfe))
        policy = TeaCachePolicy(check_threshold(self.threshold, 0.1), coefficients)
        return stack_plan(nfe, model.num_blocks, policy)

    @property
    def plans_without_weights(self) -> bool:
        return self.coefficients != "auto"  # `auto`: found or made on the loaded model by `prepare`

    @classmethod
    def identity_groups(cls, params: dict) -> tuple[str, ...]:
        return ("calibration",) if params.get("coefficients") == "auto" else ()

    def check_run(self, run: RunDescription) -> CacheMethod:
        """`coefficients=auto` at paper scale: a missing calibration fails before any compute."""
        if self.coefficients == "auto":
            check_calibration(run)
        return self

    def prepare(self, run: RunDescription, loaded: Loaded) -> tuple[CacheMethod, dict]:
        """`coefficients=auto`: the stored calibration for this model, sampler and NFE (made now at
        toy scale; at paper scale a missing one is an error printing the command)."""
        if self.coefficients != "auto":
            return self, {}
        path = calibration_for(run, loaded.model)
        return replace(self, coefficients=str(path)), {"calibration_file": path.name}
