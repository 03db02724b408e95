"""Train the shipped toy assets: the tiny DiT, the tiny U-ViT and the feature classifier.

    python -m l2c_bench.toy.train --model dit --minutes 30
    python -m l2c_bench.toy.train --model uvit --minutes 30
    python -m l2c_bench.toy.train --model classifier --minutes 3

Each model learns on fresh batches of the procedural set (no epochs, no overfitting), with the
objective of its family: DiT -- eps-MSE on DiT's linear schedule with integer t in 0..999;
U-ViT -- eps-MSE on the SD schedule with n in 1..1000 fed as the model time. Labels drop to the
null class with probability 0.1 (for guidance). The EMA of the weights is saved, in fp16.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models import build_model, read_state_dict, save_checkpoint
from ..sampling.diffusion import linear_betas
from ..sampling.dpm_solver import sd_betas
from .classifier import ToyClassifier
from .data import make_batch

ASSETS = Path(__file__).parent / "assets"
TOY_MODELS = {"dit": "DiT-toy", "uvit": "U-ViT-toy"}
LABEL_DROP = 0.1
EMA_DECAY = 0.995  # a ~200-step window: runs are short (a few thousand steps)


def diffusion_loss(model, x0: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """eps-prediction MSE at a random timestep, in the model family's own time convention."""
    n = x0.shape[0]
    if model.family == "dit":
        abar_table = torch.tensor(np.cumprod(1 - linear_betas()), dtype=torch.float32)
        t = torch.randint(0, 1000, (n,), generator=g)
        abar, t_model = abar_table[t], t
    else:
        abar_table = torch.tensor(np.cumprod(1 - sd_betas()), dtype=torch.float32)
        t = torch.randint(1, 1001, (n,), generator=g)
        abar, t_model = abar_table[t - 1], t.float()
    eps = torch.randn(x0.shape, generator=g)
    x_t = abar.sqrt()[:, None, None, None] * x0 + (1 - abar).sqrt()[:, None, None, None] * eps
    drop = torch.rand(n, generator=g) < LABEL_DROP
    labels = torch.where(drop, torch.full_like(labels, model.null_class), labels)
    out = model(x_t, t_model, labels)[:, : x0.shape[1]]
    return F.mse_loss(out, eps)


def train(kind: str, minutes: float, max_steps: int, batch_size: int, lr: float, seed: int,
          out: Path, init: Path | None = None) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if kind == "classifier":
        model, loss_fn = ToyClassifier(), lambda model, x0, labels: F.cross_entropy(model(x0), labels)
    else:
        model = build_model(TOY_MODELS[kind])
        loss_fn = lambda model, x0, labels: diffusion_loss(model, x0, labels, g)
    return fit(model, loss_fn, kind=kind, minutes=minutes, max_steps=max_steps, batch_size=batch_size, lr=lr,
               seed=seed, out=out, init=init)


def fit(model, loss_fn, *, kind: str, minutes: float, max_steps: int, batch_size: int, lr: float, seed: int,
        out: Path | None, init: Path | None = None, mininterval: float = 0.1, batches=make_batch) -> dict:
    """The training loop every toy asset shares (this module's models and toy/train_zoo.py's):
    `loss_fn(model, x0, labels)` on fresh procedural batches, AdamW with a 200-step linear warm-up,
    gradient clipping at 1 and an EMA of the weights, saved to `out` in fp16 (None: not saved).
    `init`: start from these weights (weights only; fresh optimiser and EMA); `batches(seed, index,
    batch_size)`: the stream (default the procedural images; toy/video_data.py's clips for video)."""
    if init is not None:
        model.load_state_dict({k: v.float() for k, v in read_state_dict(init).items()})
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    start, step, losses = time.time(), 0, []
    bar = tqdm(total=max_steps, desc=f"train {kind}", mininterval=mininterval)
    while step < max_steps and time.time() - start < minutes * 60:
        x0, labels = batches(seed, step, batch_size)
        for group in opt.param_groups:  # linear warm-up
            group["lr"] = lr * min(1.0, (step + 1) / 200)
        loss = loss_fn(model, x0, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    bar.close()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(ema, out, half=True)
    summary = {"kind": kind, "steps": step, "minutes": (time.time() - start) / 60,
               "final_loss": float(np.mean(losses[-100:])), "batch_size": batch_size, "lr": lr}
    print(summary, flush=True)
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["dit", "uvit", "classifier"], required=True)
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget")
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-3 (models), 2e-3 (classifier)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default: the shipped asset path")
    parser.add_argument("--init", type=Path, default=None, help="start from these weights")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lr = args.lr or (2e-3 if args.model == "classifier" else 1e-3)
    out = args.out or ASSETS / f"{args.model}_toy.pt"
    train(args.model, args.minutes, args.max_steps, args.batch_size, lr, args.seed, out, args.init)


if __name__ == "__main__":
    main()
