"""Classifier-free guidance in each model family's own convention.

DiT:   out = uncond + w * (cond - uncond) on the first `channels` output channels (default 3),
       conditional and null halves evaluated as one batch of 2N; the remaining channels
       (eps channel 3, learned variance) come from the conditional half. w = 1: no guidance.
U-ViT: eps = cond + s * (cond - uncond) on all channels, two passes; s = 0: no guidance.
(U-ViT's s corresponds to DiT's w = 1 + s.)
flow (SD3, Flux, Wan): DiT's form on every channel of the velocity, halves batched; w = 1: no guidance.
A two-expert model (Wan 2.2) may guide its low-noise expert with its own scale, as diffusers'
WanPipeline's `guidance_scale_2`: the model's `guidance_scale_2` (None: w for both) and
`expert_guidance(w)`, the scale of the expert that ran the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

CONVENTIONS = {
    "dit": "uncond + w*(cond - uncond), batched halves, first 3 channels",
    "uvit": "cond + s*(cond - uncond), two passes, all channels",
    "flow": "uncond + w*(cond - uncond), batched halves, all channels",
}
GUIDANCE_OFF = {"dit": 1.0, "uvit": 0.0, "flow": 1.0}  # the scale at which each convention is unguided


@dataclass
class GuidedDenoiser:
    """denoise(x (N,C,H,W), t_model (N,)) -> guided model output for fixed labels (N,).

    `cache` (optional) is the caching engine's per-run state: before each evaluation it hands
    out one branch runner per forward pass (DiT: one, shared by both halves; U-ViT: cond, uncond).
    """

    model: nn.Module
    labels: torch.Tensor
    scale: float
    channels: int = 3
    cache: object | None = None

    def __post_init__(self):
        self.null = torch.full_like(self.labels, self.model.null_class)
        self.batched = self.model.family != "uvit"  # both halves in one batch: one pass
        off = GUIDANCE_OFF[self.model.family]
        self.second = getattr(self.model, "guidance_scale_2", None)  # Wan 2.2's low-noise expert's scale
        self.guided = self.scale != off or (self.second is not None and self.second != off)
        self.passes = 1 if (self.batched or not self.guided) else 2

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        runners = self.cache.begin_evaluation(self.passes) if self.cache is not None else [None] * 2
        if self.batched:
            return self._dit(x, t, runners[0])
        return self._uvit(x, t, runners)

    def _dit(self, x, t, runner):
        if not self.guided:
            return self.model(x, t, self.labels, runner)
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.labels, self.null]), runner)
        cond, uncond = out.chunk(2)  # each (N, C_out, H, W)
        c = self.channels
        scale = self.scale if self.second is None else self.model.expert_guidance(self.scale)
        guided = uncond[:, :c] + scale * (cond[:, :c] - uncond[:, :c])
        return torch.cat([guided, cond[:, c:]], dim=1)

    def _uvit(self, x, t, runners):
        cond = self.model(x, t, self.labels, runners[0])
        if not self.guided:
            return cond
        uncond = self.model(x, t, self.null, runners[1])
        return cond + self.scale * (cond - uncond)
