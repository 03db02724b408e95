"""Where sampling time goes: always-run work, attention branches and MLP branches.

Efficiency (measured speedup / MACs speedup) falls below 1 when the work caching removes costs
less time per MAC than the work it leaves. Four interleaved timings of one sampling call tell
which: uncached (T_full); attention reused at every evaluation after the first, in every block
(T_attn); the same for the MLP (T_mlp); both (T_both). With per-evaluation costs f (work that
runs whatever is cached: embeddings, adaLN, gates and residual adds, skip linears, the final
layer, the sampler), a (all blocks' attention branches) and m (all MLP branches), N evaluations:

    T_full = N (f + a + m)        T_attn = N f + a + N m
    T_mlp  = N f + N a + m        T_both = N f + a + m

so a = (T_full - T_attn) / (N - 1), m = (T_full - T_mlp) / (N - 1), f = (T_both - a - m) / N.
The fourth timing is one more than the three unknowns need: `additivity` = (T_attn + T_mlp -
T_full - T_both) / T_full is 0 when the costs add up as modelled (nothing else changes with
what is cached, e.g. memory traffic or allocator effects).

Per branch kind, `time_per_mac` = its share of an uncached evaluation's time / its share of the
evaluation's MACs (counted as efficiency counts them: linear layers, the paper's convention, so
attention's QK^T and AV products are time without MACs): 1 = it costs exactly its MACs' worth.
The always-run work usually costs far more than its few MACs, and reusing a kind above 1 saves
more time than its MACs promise.
`predict(schedule)` gives the time of any run from its compute mask, so a plan's efficiency can
be explained: predicted ~ measured means these three costs are the whole story.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("fixed", "attention", "mlp")


@dataclass(frozen=True)
class TimeModel:
    nfe: int
    blocks: int
    fixed_s: float  # per evaluation, whatever is cached
    attention_s: float  # per evaluation, all blocks' attention branches
    mlp_s: float  # per evaluation, all blocks' MLP branches
    additivity: float  # relative misfit of the fourth timing (0 = the costs add up)

    @property
    def evaluation_s(self) -> float:
        return self.fixed_s + self.attention_s + self.mlp_s

    def predict(self, schedule: torch.Tensor) -> float:
        """Seconds of a run with this compute mask (nfe, blocks, 2); bool, or the share computed."""
        schedule = torch.as_tensor(schedule).double()
        if schedule.shape != (self.nfe, self.blocks, 2):
            raise ValueError(f"schedule shape {tuple(schedule.shape)} is not ({self.nfe}, {self.blocks}, 2)")
        attention, mlp = schedule[..., 0].sum().item(), schedule[..., 1].sum().item()
        return self.nfe * self.fixed_s + (attention * self.attention_s + mlp * self.mlp_s) / self.blocks

    def time_per_mac(self, base_macs: float, attention_macs: float, mlp_macs: float) -> dict[str, float]:
        """Per kind: share of an evaluation's time / share of its MACs (all per evaluation)."""
        total_macs = base_macs + attention_macs + mlp_macs
        times = (self.fixed_s, self.attention_s, self.mlp_s)
        return {kind: (t / self.evaluation_s) / (m / total_macs) if m > 0 else float("inf")
                for kind, t, m in zip(KINDS, times, (base_macs, attention_macs, mlp_macs), strict=True)}


def fit_time_model(full_s: float, attention_reused_s: float, mlp_reused_s: float, both_reused_s: float, *,
                   nfe: int, blocks: int) -> TimeModel:
    """The three per-evaluation costs from the four timings (see the module docstring)."""
    if nfe < 2:
        raise ValueError("a time model needs nfe >= 2: the first evaluation always computes everything")
    attention = (full_s - attention_reused_s) / (nfe - 1)
    mlp = (full_s - mlp_reused_s) / (nfe - 1)
    fixed = (both_reused_s - attention - mlp) / nfe
    additivity = (attention_reused_s + mlp_reused_s - full_s - both_reused_s) / full_s
    return TimeModel(nfe, blocks, fixed, attention, mlp, additivity)


def reuse_mask(nfe: int, blocks: int, *, attention: bool, mlp: bool) -> torch.Tensor:
    """Compute mask (nfe, blocks, 2): everything at evaluation 0, then the chosen kinds reused."""
    mask = torch.ones(nfe, blocks, 2, dtype=torch.bool)
    mask[1:, :, 0] = not attention
    mask[1:, :, 1] = not mlp
    return mask
