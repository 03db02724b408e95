"""Branch runners for router learning (the `BranchRunner` protocol of models.layers).

`Recorder` computes every branch and keeps its output (the full step fills the cache; a later
evaluation overwrites an earlier one, so the store holds the most recent, as at inference).
`Blender` is the training-time student: branch (b, j) returns w*fresh + (1-w)*cached with
w = weights[b, j] = sigmoid(router logit), differentiable in w.
"""

from __future__ import annotations

import torch

from .....engine.model import store_key


class Recorder:
    def __init__(self):
        self.store: dict[tuple[int, ...], torch.Tensor] = {}  # keyed as the engine keys it

    def __call__(self, block: int, branch: int, fn, *args, part: int = 0):
        out = fn(*args)
        self.store[store_key(block, branch, part)] = out.detach()
        return out


class Blender:
    def __init__(self, store: dict, weights: torch.Tensor):
        self.store, self.weights = store, weights  # weights (blocks, 2), requires grad

    def __call__(self, block: int, branch: int, fn, *args, part: int = 0):
        fresh = fn(*args)  # (N, T, D) from this block's (blended) input
        cached = self.store[store_key(block, branch, part)]
        return cached + self.weights[block, branch] * (fresh - cached)
