"""Whole sampling loops as CUDA graphs: captured once, then replayed with one launch.

Why: with bf16 a DiT-XL/2 DDIM-20 call launches about 23,000 kernels (40 per block per step),
and the host cannot queue them as fast as the GPU runs them (GPU busy ~0.6). A cached step
launches fewer kernels but not proportionally fewer host instructions, so the host's share
grows with caching and efficiency (measured / MACs speedup) falls below 0.95. One graph per
(model, sampler, NFE, plan, batch shape, numerics) replays the whole loop without the host.

What can be captured: a loop whose control flow is fixed before it starts and that neither
copies from the host nor synchronises with it. That is DDIM with eta 0 and DPM-Solver-2 (their
coefficients are prepared on the device beforehand), with no cache or a static plan. Ancestral
DDPM and DDIM eta > 0 draw each step's noise on the host; the 'fast' DPM-Solver computes
coefficients on the host per step; FBCache and TeaCache decide on the host at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from ..models.layers import autocast_dtype

GRAPHABLE_SAMPLERS = ("ddim", "dpm_solver2")
RUNTIME_DECISIONS = ("cuda_graph cannot replay a cache that decides at run time (fbcache, teacache): "
                     "its decisions are read on the host")


def check_graphable(sampler: str, eta: float, plan, device: torch.device) -> None:
    """Fail before any compute when the loop cannot be one CUDA graph (see the module doc)."""
    if device.type != "cuda":
        raise ValueError(f"cuda_graph needs a CUDA device, the model is on {device}")
    if sampler not in GRAPHABLE_SAMPLERS:
        raise ValueError(f"cuda_graph works with the samplers {', '.join(GRAPHABLE_SAMPLERS)}, "
                         f"not {sampler!r} (it does host work inside its loop)")
    if eta != 0:
        raise ValueError(f"cuda_graph needs a deterministic loop: DDIM eta={eta} draws host noise per step")
    if plan is not None and plan.decided_at_run_time:
        raise ValueError(RUNTIME_DECISIONS)


def plan_key(plan) -> tuple | None:
    """Everything a static plan's compute depends on: every Plan field but its notes (its rule is
    part of the key; a run-time rule is never captured), so a field added to Plan joins the key."""
    if plan is None:
        return None
    return tuple((f.name, getattr(plan, f.name)) for f in fields(plan) if f.name != "notes")


def numerics_key(device: torch.device) -> tuple:
    """The settings that choose kernels at capture time: autocast dtype and TF32."""
    return (autocast_dtype(device.type), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    x: torch.Tensor  # static input x_T (N, C, H, W)
    labels: torch.Tensor  # static labels (N,)
    out: torch.Tensor  # static output, overwritten by every replay
    loop: Callable  # keeps what the graph reads from outside its pool alive (tables, model)


class SamplingGraphs:
    """The CUDA graphs of one caller's sampling loops; pass one to `generate(graphs=...)`.

    Each graph owns a private memory pool about the size of one eager call's peak (its cache
    included), held until this object is dropped. `captures` counts captures (a sweep that
    recaptured per call would be slower than eager: a capture costs two eager calls).
    """

    def __init__(self):
        self._graphs: dict[tuple, _Graph] = {}
        self.captures = 0

    def __len__(self) -> int:
        return len(self._graphs)

    def run(self, key: tuple, loop: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """loop(x (N, C, H, W), labels (N,)) -> x_0, replayed from its graph (captured on first use)."""
        key = (*key, tuple(x.shape), x.dtype, str(x.device))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(loop, x, labels)
        entry.x.copy_(x)
        entry.labels.copy_(labels)
        entry.graph.replay()
        return entry.out.clone()  # the next replay overwrites `out`

    def _capture(self, loop, x, labels) -> _Graph:
        static_x, static_labels = x.clone(), labels.clone()
        # one eager run on a side stream first: lazy initialisation (cuBLAS workspaces, autotuning,
        # torch.compile) must not happen inside the capture
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            loop(static_x, static_labels)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = loop(static_x, static_labels)
        self.captures += 1
        return _Graph(graph, static_x, static_labels, out, loop)
