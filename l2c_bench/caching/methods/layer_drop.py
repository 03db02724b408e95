"""`layer_drop`: the paper's layer-dropout baseline (Tables 5/7) -- the branches `heuristic` would
pick (random by default) contribute nothing instead of their cached output."""

from __future__ import annotations

from dataclasses import dataclass

from .heuristic import Heuristic


@dataclass
class LayerDrop(Heuristic):
    strategy: str = "random"
    ratio: float = 0.3  # the share of branches dropped in the cache steps (paper Tables 5/7's comparison)
    name = "layer_drop"
    label = "Random Drop"  # in tables and plots (analysis/labels.py)
    summary = "skip random branches instead of reusing them (paper Tables 5/7)"
    description = "drop (skip) random branches instead of reusing them (paper Tables 5/7)"
    parameter_notes = {"strategy": "`random`; or `bottom`, `top`, `greedy`"}
    drop = True
