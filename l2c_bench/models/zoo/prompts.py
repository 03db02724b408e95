"""Text conditioning as a table of prompt embeddings, so our labels address prompts.

A text-conditioned model's label `i` is prompt `i` of its bank, and label `len(bank)` is the
empty prompt (the unconditional half of classifier-free guidance), exactly as class labels and
the null class work for DiT. At toy scale the bank is random and seeded (no text encoder, no
download): `prompts` embeddings of (tokens, width) and a pooled (pooled_width,) vector each.
"""

from __future__ import annotations

import torch
from torch import nn


class PromptBank(nn.Module):
    """embeddings (P + 1, L, D) and pooled (P + 1, Dp); row P is the empty prompt."""

    def __init__(self, prompts: int, tokens: int, width: int, pooled_width: int = 0, seed: int = 0):
        super().__init__()
        if prompts < 1:
            raise ValueError(f"a text-conditioned model needs prompts >= 1, got {prompts}")
        self.prompts = prompts
        shape, pooled = (prompts + 1, tokens, width), (prompts + 1, max(pooled_width, 1))
        if torch.empty(0).device.type == "meta":  # a weightless copy (MACs): shapes only
            embeddings, pooled_embeddings = torch.empty(shape), torch.empty(pooled)
        else:
            generator = torch.Generator().manual_seed(seed)
            embeddings = torch.randn(shape, generator=generator)
            pooled_embeddings = torch.randn(pooled, generator=generator)
        # buffers, not parameters: they move with the model, and a checkpoint of the transformer
        # does not carry them (the seed and sizes in ZooArgs rebuild them)
        self.register_buffer("embeddings", embeddings, persistent=False)
        self.register_buffer("pooled", pooled_embeddings, persistent=False)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y (N,) prompt indices -> (N, L, D) token embeddings, (N, Dp) pooled."""
        return self.embeddings[y], self.pooled[y]
