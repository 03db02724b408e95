"""One router-learning iteration's loss (paper Sec. 3.4, as the official code computes it).

    x_m, t_m  = full sampler step to the cache step m (no grad; fills the cache)
    teacher   = model(x_m, t_m)                               every branch fresh (no grad)
    student   = model(x_m, t_m) with branch (b, j) = w*fresh + (1-w)*cached, w = sigmoid(logit[m])
    loss      = err(student, teacher) + lam * sum(w)

err is the mean squared error (DiT) or the per-sample sum of squares averaged over the batch
(U-ViT). No guidance: the router is shared by the conditional and the null-class passes, and
labels are dropped to the null class with probability `label_dropout` (both official scripts).
The diffusion model is frozen: the only tensor that requires grad is the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .runners import Blender, Recorder


@dataclass
class IterationLoss:
    loss: torch.Tensor  # scalar, differentiable in the logits
    data_loss: torch.Tensor
    l1: torch.Tensor  # sum(sigmoid(logits[row])), without lam
    row: int


def error(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mean":
        return (student - teacher).pow(2).mean()
    if kind == "sum":
        return (student - teacher).pow(2).flatten(1).sum(1).mean()
    raise ValueError(f"router.loss={kind!r} is unknown; valid: mean, sum")


def iteration_loss(model, pairs, logits: torch.Tensor, x0: torch.Tensor, labels: torch.Tensor, *,
                   generator: torch.Generator, lam: float, loss: str, label_dropout: float,
                   rank: int = 0, world: int = 1) -> IterationLoss:
    """Draw a cache step and the global batch's noise and label drops from `generator` (CPU, one
    per iteration, shared by all ranks); this rank uses its slice. Returns the loss for x0 (N, ...)."""
    device = x0.device
    n = x0.shape[0]
    part = slice(rank * n, (rank + 1) * n)
    row = pairs.pairs[int(torch.randint(len(pairs.pairs), (1,), generator=generator))][1]
    noise = torch.randn((n * world, *x0.shape[1:]), generator=generator)[part].to(device)
    drop = (torch.rand(n * world, generator=generator) < label_dropout)[part].to(device)
    labels = torch.where(drop, torch.full_like(labels, model.null_class), labels.to(device))

    recorder = Recorder()
    with torch.no_grad():
        x_m, t_m = pairs.prepare(model, x0, labels, noise, row, recorder)
        teacher = model(x_m, t_m, labels, None)
    weights = torch.sigmoid(logits[row])  # (2 * blocks,): entry 2b + j is block b, branch j
    student = model(x_m, t_m, labels, Blender(recorder.store, weights.view(-1, 2)))
    data_loss = error(student, teacher, loss)
    l1 = weights.sum()
    return IterationLoss(data_loss + lam * l1, data_loss.detach(), l1.detach(), row)
