"""The router-learning loop: AdamW on the logits only, checkpoints, exact resume, data parallel.

Every random draw of iteration `step` comes from generators seeded by (seed, step) for the
global batch (a rank uses its slice), and a checkpoint holds the logits, the optimizer state, the step and the loss
history. Resuming from the checkpoint written after step k therefore continues exactly as the
uninterrupted run would have (a test checks this bit for bit). A killed job loses at most
`checkpoint_every` iterations.

Data parallel (`torchrun --nproc_per_node G -m l2c_bench.train_router ...`): every rank holds the
frozen model and a copy of the logits; after each backward the logits' gradient is averaged
with one all-reduce (the model has no gradients to reduce). Ranks see slices of the global
batch one process would see, so G ranks learn what one process learns (up to float summation
order). Rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .....system.files import atomic_path
from .data import step_generator
from .objective import iteration_loss

CHECKPOINT = "checkpoint.pt"


@dataclass
class Recipe:
    """The training hyper-parameters (a `RouterConfig` minus data and logging paths)."""

    lam: float
    lr: float = 1e-3
    iterations: int = 400
    batch_size: int = 32
    loss: str = "mean"
    clamp: float | None = 5.0
    label_dropout: float = 0.1
    init_std: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if not (isinstance(self.lam, (int, float)) and self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"router.lam={self.lam} must be a finite number >= 0")
        if not self.lr > 0:
            raise ValueError(f"router.lr={self.lr} must be > 0")
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError("router.iterations and router.batch_size must be >= 1")
        if self.loss not in ("mean", "sum"):
            raise ValueError(f"router.loss={self.loss!r} is unknown; valid: mean, sum")
        if self.clamp is not None and not self.clamp > 0:
            raise ValueError(f"router.clamp={self.clamp} must be > 0 or null")
        if not 0 <= self.label_dropout <= 1:
            raise ValueError(f"router.label_dropout={self.label_dropout} must lie in [0, 1]")


@dataclass
class TrainState:
    logits: torch.Tensor  # (nfe, 2 * blocks)
    step: int = 0  # iterations done
    history: list[dict] = field(default_factory=list)  # one entry per iteration
    seconds: float = 0.0
    resumed_from: int | None = None


def initial_logits(nfe: int, num_blocks: int, std: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(nfe, 2 * num_blocks, generator=g) * std


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def save_checkpoint(path: Path, state: TrainState, optimizer: torch.optim.Optimizer, recipe: Recipe) -> None:
    payload = {"logits": state.logits.detach().cpu(), "optimizer": optimizer.state_dict(), "step": state.step,
               "history": state.history, "seconds": state.seconds, "recipe": vars(recipe)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def train(model, pairs, data, recipe: Recipe, *, nfe: int, work_dir: Path | None = None,
          checkpoint_every: int = 50, log_every: int = 10, progress: bool = True, on_log=None,
          stop_after: int | None = None) -> TrainState:
    """Learn logits (nfe, 2*blocks) for `model` (frozen) over `pairs`; resume from work_dir's checkpoint.

    `stop_after` ends the loop after that many iterations of this call (tests use it to simulate
    an interruption); `on_log(step, means)` receives rank-averaged losses every `log_every`.
    """
    recipe.check()
    rank, world = _world()
    if recipe.batch_size % world:
        raise ValueError(f"router.batch_size={recipe.batch_size} is not divisible by {world} ranks")
    device = next(model.parameters()).device
    logits = torch.nn.Parameter(initial_logits(nfe, model.num_blocks, recipe.init_std, recipe.seed).to(device))
    optimizer = torch.optim.AdamW([logits], lr=recipe.lr, weight_decay=0.0)
    state = TrainState(logits=logits)
    ckpt = None if work_dir is None else Path(work_dir) / CHECKPOINT
    if ckpt is not None and ckpt.is_file():
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        if saved["recipe"] != vars(recipe):
            raise ValueError(f"{ckpt} was written by a different recipe ({saved['recipe']}); remove it to restart")
        with torch.no_grad():
            logits.copy_(saved["logits"])
        optimizer.load_state_dict(saved["optimizer"])
        state.step, state.history, state.seconds = saved["step"], saved["history"], saved["seconds"]
        state.resumed_from = state.step

    model.requires_grad_(False)
    per_rank = recipe.batch_size // world
    stream = data.batches(state.step, per_rank, rank, world)
    end = recipe.iterations if stop_after is None else min(recipe.iterations, state.step + stop_after)
    bar = tqdm(total=recipe.iterations, initial=state.step, disable=not progress or rank != 0,
               desc="router", leave=False)
    window: list[dict] = []
    while state.step < end:
        started = time.perf_counter()
        x0, labels = next(stream)
        out = iteration_loss(model, pairs, logits, x0.to(device), labels, lam=recipe.lam, loss=recipe.loss,
                             label_dropout=recipe.label_dropout, rank=rank, world=world,
                             generator=step_generator(recipe.seed, state.step, stream=2))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        values = torch.stack([out.loss.detach(), out.data_loss, out.l1])
        if world > 1:
            dist.all_reduce(logits.grad)
            logits.grad /= world
            dist.all_reduce(values)
            values /= world
        optimizer.step()
        if recipe.clamp is not None:
            with torch.no_grad():
                logits.clamp_(-recipe.clamp, recipe.clamp)
        loss, data_loss, l1 = values.tolist()
        entry = {"step": state.step + 1, "loss": loss, "data_loss": data_loss, "l1": l1, "row": out.row}
        state.history.append(entry)
        window.append(entry)
        state.step += 1
        state.seconds += time.perf_counter() - started
        bar.update(1)
        if state.step % log_every == 0 or state.step == end:
            means = {k: sum(e[k] for e in window) / len(window) for k in ("loss", "data_loss", "l1")}
            bar.set_postfix(loss=f"{means['loss']:.4g}")
            if on_log is not None and rank == 0:
                on_log(state.step, means)
            window = []
        if ckpt is not None and rank == 0 and (state.step % checkpoint_every == 0 or state.step == end):
            save_checkpoint(ckpt, state, optimizer, recipe)
    bar.close()
    if world > 1:  # identical starts, identical averaged gradients: the ranks must agree exactly
        reference = logits.detach().clone()
        dist.broadcast(reference, src=0)
        if not torch.equal(reference, logits.detach()):
            raise RuntimeError(f"rank {rank}: router logits diverged from rank 0")
    state.logits = logits.detach().cpu()
    return state
