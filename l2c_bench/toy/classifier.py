"""The toy feature network: a small CNN trained on the procedural set.

`features(x)` (N, 3, 32, 32) in [-1, 1] -> (N, 128) pooled features (FID/KID/precision-recall
at toy scale); `forward(x)` -> (N, 10) class logits (Inception Score, on-class accuracy).
"""

from __future__ import annotations

import torch
from torch import nn

from .data import NUM_CLASSES

FEATURE_DIM = 128


class ToyClassifier(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()

        def stage(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())

        self.stages = nn.Sequential(stage(3, 32), nn.AvgPool2d(2), stage(32, 64), nn.AvgPool2d(2),
                                    stage(64, FEATURE_DIM))
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x).mean(dim=(2, 3))  # (N, C, 8, 8) -> (N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
