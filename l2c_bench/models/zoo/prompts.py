"""Text conditioning as a table of prompt embeddings, so our labels address prompts.

A text-conditioned model's label `i` is prompt `i` of its bank, and label `len(bank)` is the
empty prompt (the unconditional half of classifier-free guidance), exactly as class labels and
the null class work for DiT. At toy scale the bank is random and seeded (no text encoder, no
download): `prompts` embeddings of (tokens, width) and a pooled (pooled_width,) vector each. A
pretrained folder's text encoders fill it with the prompt set's encodings instead (text.py),
with the attention mask of the padded tokens where the model reads one (PixArt).
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
        self.register_buffer("mask", None, persistent=False)  # (P + 1, L) 1 = a real token; None: all are

    @classmethod
    def encoded(cls, embeddings: torch.Tensor, pooled: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> PromptBank:
        """A bank holding text encoders' outputs: embeddings (P + 1, L, D), pooled (P + 1, Dp) or
        None, mask (P + 1, L) or None; row P is the empty prompt's."""
        prompts, tokens, width = embeddings.shape
        with torch.device("meta"):  # no random table drawn only to be replaced
            bank = cls(prompts - 1, tokens, width, 0 if pooled is None else pooled.shape[1])
        bank.embeddings = embeddings.float()
        bank.pooled = torch.zeros(prompts, 1, device=embeddings.device) if pooled is None else pooled.float()
        bank.mask = mask
        return bank

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y (N,) prompt indices -> (N, L, D) token embeddings, (N, Dp) pooled."""
        return self.embeddings[y], self.pooled[y]

    def mask_of(self, y: torch.Tensor) -> torch.Tensor | None:
        """y (N,) -> the (N, L) attention mask of their tokens, None where every token is real."""
        return None if self.mask is None else self.mask[y]
