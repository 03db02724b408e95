"""`lemica`: LeMiCa (Gao et al., NeurIPS 2025, "Lexicographic Minimax Path Caching for Efficient
Diffusion-Based Video Generation"): a whole-trajectory cache schedule searched offline, then
applied as a static plan. Each cache segment's global error is measured on a calibration batch
(`calibration`); the schedule is the path from the first to the last evaluation through `budget`
computed evaluations whose segment errors, largest first, are lexicographically smallest
(`search`). Evaluations off the path add the whole block stack's residual update from the last
computed one.

What we read: UnicomAI/LeMiCa (its fork scruffynerf/LeMiCa, `LeMiCa4FLUX/inference_flux1.py`,
`Lemica_call`): the published code applies fixed lists of computed steps (`calc_dict`, e.g. 10, 15,
20 or 26 of Flux's 50) by reusing the residual of the whole block stack; the offline search that
made them is not published, so the DAG, its edge costs and the lexicographic minimax path follow
the paper. Differences: the edge cost is the relative L1 error of the final latents (a scale-free
form of the paper's global error) on `samples` calibration samples of this model, sampler, NFE and
guidance, measured before sampling (one sampling run per segment); segments reuse at most
`max_reuse` evaluations in a row (bounds the calibration runs; the authors' shipped 10-of-50 Flux
list reuses at most 6 in a row)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from ....description import Loaded, RunDescription
from ....engine import CacheConfigError, CacheMethod, Plan
from .calibration import schedule_plan, segment_errors
from .search import lexminimax_path


@dataclass
class LeMiCa(CacheMethod):
    budget: int | None = None  # evaluations that compute; None: half the NFE, rounded up
    max_reuse: int = 6  # the longest run of reused evaluations a segment may have
    samples: int = 2  # calibration samples (labels 0.., seeds 0..)
    name = "lemica"
    label = "LeMiCa"  # in tables and plots (analysis/labels.py)
    summary = "LeMiCa: a static whole-trajectory schedule, the lexicographic minimax path over segment errors"
    description = ("LeMiCa (Gao et al., NeurIPS 2025): before sampling, each cache segment's error on the final "
                   "latents is measured (one calibration run per segment of <= `max_reuse` reused evaluations, "
                   "`samples` samples); the schedule is the path through `budget` computed evaluations whose "
                   "segment errors, largest first, are lexicographically smallest; the others reuse the whole "
                   "stack's residual (static plan; in the row: `lemica_schedule`). Differs from the authors: their "
                   "search code is unpublished (their shipped step lists are applied the same way); error = relative"
                   " L1 of the final latents")
    parameter_notes = {"budget": "null: half the NFE"}

    def __post_init__(self):
        if self.budget is not None and (int(self.budget) != self.budget or self.budget < 2):
            raise CacheConfigError(f"cache.budget={self.budget} must be an integer >= 2 (the first and last evaluation)")
        if int(self.max_reuse) != self.max_reuse or self.max_reuse < 1 or int(self.samples) != self.samples \
                or self.samples < 1:
            raise CacheConfigError(f"cache.max_reuse={self.max_reuse} and cache.samples={self.samples} must be integers >= 1")
        # measured segment errors, not parameters: per model, {(sampler, nfe): errors}
        self._errors: WeakKeyDictionary = WeakKeyDictionary()

    @property
    def plans_without_weights(self) -> bool:
        return False  # its schedule is searched on the loaded model's errors

    def budget_for(self, nfe: int) -> int:
        budget = math.ceil(nfe / 2) if self.budget is None else int(self.budget)
        if not min(2, nfe) <= budget <= nfe:
            raise CacheConfigError(f"cache.budget={budget} must lie in 2..{nfe} at {nfe} evaluations")
        return budget

    def calibrated(self, model, sampler: str, nfe: int, errors: dict) -> LeMiCa:
        method = copy.copy(self)
        method._errors = WeakKeyDictionary({model: {(sampler, nfe): dict(errors)}})
        return method

    def schedule(self, model, sampler: str, nfe: int) -> tuple[int, ...]:
        """The evaluations that compute (calibrating once per model, sampler and NFE if needed)."""
        known = self._errors.setdefault(model, {})
        if (sampler, nfe) not in known:  # planned without a run: unguided calibration
            known[(sampler, nfe)] = segment_errors(model, sampler=sampler, nfe=nfe, max_reuse=int(self.max_reuse),
                                                   samples=int(self.samples))
        return lexminimax_path(known[(sampler, nfe)], nfe, self.budget_for(nfe))

    def prepare(self, run: RunDescription, loaded: Loaded) -> tuple[CacheMethod, dict]:
        self.budget_for(run.steps)  # a bad budget fails before the calibration runs
        errors = segment_errors(loaded.model, sampler=run.sampler.name, nfe=run.steps, max_reuse=int(self.max_reuse),
                                guidance_scale=run.model.guidance_scale, guidance_channels=run.model.guidance_channels,
                                samples=int(self.samples))
        method = self.calibrated(loaded.model, run.sampler.name, run.steps, errors)
        path = method.schedule(loaded.model, run.sampler.name, run.steps)
        worst = max((errors.get((a, b), 0.0) for a, b in zip(path, path[1:], strict=False)), default=0.0)
        return method, {"lemica_schedule": list(path), "lemica_worst_segment_error": worst}

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        return schedule_plan(nfe, model.num_blocks, self.schedule(model, sampler, nfe))
