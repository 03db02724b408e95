"""Speed of one router-learning iteration, in plain forward passes at the same batch.

    python -m l2c_bench.benchmarks.router_learning --model dit --batch 32           # toy DiT (shipped weights)
    python -m l2c_bench.benchmarks.router_learning --arch DiT-XL/2 --batch 8 --nfe 20 --device cuda   # random weights
    python -m l2c_bench.benchmarks.router_learning --arch U-ViT-H/2 --sampler dpm_solver2 --batch 8 --device cuda

An iteration is: the full sampler step that fills the cache (DiT DDIM: 1 evaluation; U-ViT
DPM-Solver-2: 2), the teacher (1, no grad), the student forward and its backward (logits only;
the frozen model gets no weight gradients), and the AdamW step. Printed: median ms of a plain
no-grad forward and of each part, and iteration / forward (issue target: about 3.5 for DiT).
"""

from __future__ import annotations

import argparse

import torch

from ..caching.methods.l2c.learning.data import step_generator
from ..caching.methods.l2c.learning.objective import iteration_loss
from ..caching.methods.l2c.learning.pairs import make_pairs
from ..caching.methods.l2c.learning.runners import Blender, Recorder
from ..caching.methods.l2c.learning.trainer import initial_logits
from ..metrics import device_sync, measure
from ..models import build_model, load_checkpoint
from ..sampling import DEFAULT_SAMPLERS
from ..system.devices import resolve_device
from .speed import print_row


def run(args) -> dict:
    device = resolve_device(args.device)
    torch.manual_seed(0)
    if args.arch:
        model = build_model(args.arch)
    else:
        from ..models.loading import TOY_ASSETS  # (imports omegaconf; paper scale needs only torch)

        toy = "DiT-toy" if args.model == "dit" else "U-ViT-toy"
        model = load_checkpoint(build_model(toy), TOY_ASSETS / f"{args.model}_toy.pt")
    family = model.family
    sampler = args.sampler or DEFAULT_SAMPLERS[family]
    model = model.to(device).eval().requires_grad_(False)
    pairs = make_pairs(family, sampler, args.nfe, device)
    logits = torch.nn.Parameter(initial_logits(args.nfe, model.num_blocks, 1.0, 0).to(device))
    optimizer = torch.optim.AdamW([logits], lr=1e-3, weight_decay=0.0)
    b, c, s = args.batch, model.in_channels, model.input_size
    x0 = torch.randn(b, c, s, s, device=device)
    labels = torch.arange(b, device=device) % model.num_classes
    row = pairs.pairs[len(pairs.pairs) // 2][1]
    t = pairs.prepare(model, x0, labels, torch.randn_like(x0), row, Recorder())[1]
    recorder = Recorder()

    def forward():
        with torch.no_grad():
            model(x0, t, labels, None)

    def full_step():
        pairs.prepare(model, x0, labels, torch.randn_like(x0), row, recorder)

    def student():
        out = model(x0, t, labels, Blender(recorder.store, torch.sigmoid(logits[row]).view(-1, 2)))
        out.pow(2).mean().backward()

    def iteration():
        out = iteration_loss(model, pairs, logits, x0, labels, generator=step_generator(0, 0, 2), lam=1e-3,
                             loss="mean", label_dropout=0.1)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    full_step()
    timings = measure({"forward": forward, "full_step": full_step, "student_fwd_bwd": student, "iteration": iteration},
                      repeats=args.repeats, warmup=1, sync=device_sync(device))
    fwd = timings["forward"].median_s
    row_out = {"model": args.arch or f"{family}-toy", "sampler": sampler, "nfe": args.nfe, "batch": b,
               "device": str(device), "threads": torch.get_num_threads()}
    for name, timing in timings.items():
        row_out[f"{name}_ms"] = timing.median_s * 1e3
        row_out[f"{name}_in_forwards"] = timing.median_s / fwd
    return row_out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dit", choices=["dit", "uvit"], help="toy model (shipped weights)")
    parser.add_argument("--arch", help="a paper-scale architecture with random weights, e.g. DiT-XL/2")
    parser.add_argument("--sampler")
    parser.add_argument("--nfe", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    row = run(args)
    print_row(row, as_json=args.json)
    return row


if __name__ == "__main__":
    main()
