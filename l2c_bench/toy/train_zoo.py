"""Train toy weights of the wrapped diffusers classes on the procedural images (video: clips of them).

    python -m l2c_bench.toy.train_zoo --model pixart --minutes 10
    python -m l2c_bench.toy.train_zoo --model sd3 --minutes 10
    python -m l2c_bench.toy.train_zoo --model flux --minutes 10
    python -m l2c_bench.toy.train_zoo --model flux2 --minutes 10
    python -m l2c_bench.toy.train_zoo --model wan --minutes 24
    python -m l2c_bench.toy.train_zoo --model ltx --minutes 22

The configurations are models/zoo/toy_weights.py's (pixel space, 3 x 32 x 32, 10 prompts = the 10
classes; Wan: toy/video_data.py's clips of them, 3 x 3 x 32 x 32; LTX-Video: those 4x pooled,
3 x 3 x 8 x 8). Each family's objective, in the time convention its adapter and sampler use:
PixArt -- eps-MSE on DiT's linear schedule, integer t in 0..999 (ddim reads the first 3 of its 6
output channels; the variance channels are not trained, as for the toy DiT); SD3, Flux, FLUX.2, Wan, LTX --
rectified-flow velocity matching, x_s = (1 - s) x0 + s eps, v = eps - x0, s = the flow sampler's
shifted schedule shift*u / (1 + (shift - 1) u) at u ~ U(0, 1), model time 1000 s. Labels drop to
the empty prompt with probability 0.1 (guidance). The loop, EMA and fp16 save are toy/train.py's.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.model import latent_shape
from ..models.zoo import build, zoo_args
from ..models.zoo.toy_weights import ASSETS, TRAINED_CONFIGS, trained_args
from ..sampling.diffusion import linear_betas
from .data import make_batch
from .train import LABEL_DROP, fit
from .video_data import make_clip_batch

CLASSES = {"pixart": "PixArtTransformer2DModel", "sd3": "SD3Transformer2DModel", "flux": "FluxTransformer2DModel",
           "flux2": "Flux2Transformer2DModel", "wan": "WanTransformer3DModel", "ltx": "LTXVideoTransformer3DModel"}


def build_trainable(cls: str, seed: int = 0):
    """The wrapped class in its trained-toy configuration, freshly initialised from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(zoo_args(cls, TRAINED_CONFIGS[cls], **trained_args(cls)))


def zoo_loss(model, x0: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The family's objective on clean images x0 (N, 3, 32, 32) or clips (N, 3, F, 32, 32) in [-1, 1]
    with class labels (N,)."""
    n = x0.shape[0]
    eps = torch.randn(x0.shape, generator=g)
    drop = torch.rand(n, generator=g) < LABEL_DROP
    labels = torch.where(drop, torch.full_like(labels, model.null_class), labels)
    if model.family == "dit":
        abar = torch.tensor(np.cumprod(1 - linear_betas()), dtype=torch.float32)
        t = torch.randint(0, 1000, (n,), generator=g)
        a = abar[t][:, None, None, None]
        out = model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, labels)[:, : x0.shape[1]]  # eps channels
        return F.mse_loss(out, eps)
    u = torch.rand(n, generator=g)
    shift = model.flow_shift
    sigma = shift * u / (1 + (shift - 1) * u)  # (N,) the sampler's shifted sigmas, uniform in its timesteps
    s = sigma.reshape(-1, *[1] * (x0.ndim - 1))
    out = model((1 - s) * x0 + s * eps, 1000 * sigma, labels)
    return F.mse_loss(out, eps - x0)


def batches(model):
    """The training stream of `model`: procedural images, or clips of them for a video model
    (latents (C, F, H, W))."""
    shape = latent_shape(model)
    return partial(make_clip_batch, frames=shape[1], size=shape[2]) if len(shape) == 4 else make_batch


def train(kind: str, minutes: float, max_steps: int, batch_size: int, lr: float, seed: int, out: Path | None,
          init: Path | None = None) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = build_trainable(CLASSES[kind], seed).train()
    return fit(model, lambda model, x0, labels: zoo_loss(model, x0, labels, g), kind=kind, minutes=minutes,
               max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed, out=out, init=init, mininterval=10,
               batches=batches(model))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(CLASSES), required=True)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget")
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default: the shipped asset path")
    parser.add_argument("--init", type=Path, default=None, help="start from these weights")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train(args.model, args.minutes, args.max_steps, args.batch_size, args.lr, args.seed,
          args.out or ASSETS / f"{args.model}_toy.pt", args.init)


if __name__ == "__main__":
    main()
