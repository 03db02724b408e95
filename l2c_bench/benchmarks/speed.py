"""Speed benchmark: does the cached model run as fast as its MACs allow?

    python -m l2c_bench.benchmarks.speed --arch DiT-S/2 --override depth=28 --sampler ddim --nfe 20 \\
        --cache l2c --router official --threshold 0.1 --batch 2 --guidance 1.5
    python -m l2c_bench.benchmarks.speed --arch U-ViT-H/2 --override embed_dim=384 --override num_heads=6 \\
        --sampler dpm_solver2 --nfe 20 --cache l2c --router official --threshold 0.9 --batch 2 --guidance 0.4

Random weights (speed does not depend on them). Prints uncached and cached latency (median
and IQR, interleaved in one process), measured speedup, MACs speedup,
efficiency = measured / MACs speedup (both with a 95% bootstrap interval over the repeat pairs
from 6 repeats on), peak memory and the numeric settings.
"""

from __future__ import annotations

import argparse
import ast
import json

import torch

from .. import generate
from ..caching import FixedPlan, make_cache
from ..engine.core import Plan
from ..metrics import cuda_event_timer, device_sync, measure
from ..metrics.intervals import ratio_of_medians_interval
from ..metrics.macs import branch_macs, macs
from ..metrics.time_model import fit_time_model, reuse_mask
from ..models import build_model, fused
from ..models.layers import AUTOCAST_DTYPES, cast_weights_, compile_branches, weights_dtype
from ..sampling.graphs import SamplingGraphs
from ..system.devices import (
    PageFaults,
    call_peak_memory_mb,
    device_name,
    host_syncs,
    peak_memory_mb,
    resolve_device,
    retain_cpu_heap,
    set_tf32,
)


def _override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def run_bench(args, model: torch.nn.Module | None = None) -> dict:
    """One benchmark row; `model` (already on the device) saves rebuilding it in a suite."""
    with fused.switched(not args.no_fused):
        return _run_bench(args, model)


def _run_bench(args, model: torch.nn.Module | None) -> dict:
    torch.manual_seed(0)
    device = resolve_device(args.device)
    set_tf32(device, args.tf32)
    heap = None if device.type != "cpu" else "retained" if not args.os_heap and retain_cpu_heap() else "os default"
    if model is None:
        model = build_model(args.arch, **dict(args.override))
    if args.diffusers:  # the same DiT (same weights) as diffusers' DiTTransformer2DModel, through our hooks
        from ..models.zoo import from_ours

        model = from_ours(model.eval(), official=True)
    model = model.to(device).eval().requires_grad_(False)
    params = {"router": args.router, "threshold": args.threshold} if args.cache == "l2c" else {}
    if args.cache == "fora":
        params = {"interval": args.interval}
    params.update(dict(args.param))  # any method's own parameters, e.g. --param order=2
    # planned first: the greedy heuristic measures branch changes with the float32 model
    cache = _Keeping.of(make_cache(args.cache, **params), model=model, sampler=args.sampler, nfe=args.nfe)
    dtype = AUTOCAST_DTYPES[args.dtype]
    if weight_storage(args) != "fp32":
        cast_weights_(model, dtype)  # as `run` does: the same values, no per-call weight casts
    if args.compile:
        compile_branches(model)  # compiled during the warm-up calls below
    common = dict(labels=[i % model.num_classes for i in range(args.batch)], seeds=list(range(args.batch)),
                  steps=args.nfe, sampler=args.sampler, guidance_scale=args.guidance)

    graphs = SamplingGraphs() if args.cuda_graph else None

    def call(method, graphed=True):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return generate(model, cache=method, graphs=graphs if graphed else None, **common)

    plan_run = call(cache)
    # a replayed graph must give what the eager loop gives (the same kernels: expect 0)
    graph_error = (plan_run.latents - call(cache, graphed=False).latents).abs().max().item() if graphs else None
    cache_mb = cache.release() / 2**20  # held at the end of sampling: every cached branch, every pass
    # CUDA: each method's own peak, one call each (not under graphs: a replay allocates nothing,
    # its memory is the private pool its capture reserved)
    peak_u = None if graphs else call_peak_memory_mb(lambda: call(None), device)
    peak_c = None if graphs else call_peak_memory_mb(lambda: call(cache), device)
    if graphs:
        call(None)  # capture the uncached loop's graph too, whatever --warmup says
    syncs = host_syncs(lambda: call(cache), device)  # a static plan should need none inside the loop
    faults = {"uncached": PageFaults(lambda: call(None)), "cached": PageFaults(lambda: call(cache))}
    fns = dict(faults)
    if args.overhead:
        def plain_loop():  # same numerics as `call`: the autocast wraps both
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return plain_ddim(model, common["labels"], args.nfe, args.guidance, device)

        fns["plain_loop"] = plain_loop
    if args.decompose:  # the time model's three extra plans, interleaved with the rest
        for name, kinds in DECOMPOSITION.items():
            plan = FixedPlan(_mask_plan(reuse_mask(args.nfe, model.num_blocks, **kinds)), name)
            fns[name] = lambda plan=plan: call(plan)
    timer = cuda_event_timer(device) if device.type == "cuda" else None
    timings = measure(fns, repeats=args.repeats, warmup=args.warmup, sync=device_sync(device), timer=timer)
    u, c = timings["uncached"], timings["cached"]
    profiled = gpu_profile({"uncached": fns["uncached"], "cached": fns["cached"]}, device) if args.profile else None
    macs_u, macs_c = macs(model, None, nfe=args.nfe), macs(model, plan_run.schedule, nfe=args.nfe, plan=plan_run.plan)
    measured = u.median_s / c.median_s
    # 95% bootstrap interval of the speedup over the interleaved repeat pairs (None below 6 repeats)
    ci = ratio_of_medians_interval(u.samples_s, c.samples_s, resamples=2000, seed=0)
    decomposed = time_decomposition(model, timings, plan_run.schedule, macs_u / macs_c) if args.decompose else {}
    return {
        "arch": args.arch + (" via diffusers" if args.diffusers else ""), "overrides": dict(args.override),
        "sampler": args.sampler, "nfe": args.nfe,
        "cache": args.cache, "params": params, "cached_ratio": plan_run.cached_ratio, "batch": args.batch,
        "uncached_ms": u.median_s * 1e3, "uncached_iqr_ms": u.iqr_s * 1e3,
        "cached_ms": c.median_s * 1e3, "cached_iqr_ms": c.iqr_s * 1e3,
        "measured_speedup": measured, "macs_uncached_g": macs_u / 1e9, "macs_cached_g": macs_c / 1e9,
        "macs_speedup": macs_u / macs_c, "efficiency": measured / (macs_u / macs_c),
        "speedup_ci": ci, "efficiency_ci": None if ci is None else tuple(b / (macs_u / macs_c) for b in ci),
        "peak_memory_mb": peak_memory_mb(device), "peak_uncached_mb": peak_u, "peak_cached_mb": peak_c,
        "cache_mb": cache_mb, "host_syncs": None if syncs is None else len(syncs),
        "host_sync_sites": None if syncs is None else sorted(set(syncs)),
        "page_faults_uncached": faults["uncached"].median(), "page_faults_cached": faults["cached"].median(),
        "cpu_heap": heap, "dtype": args.dtype, "weights_dtype": weights_dtype(model), "tf32": args.tf32,
        "compile": args.compile, "cuda_graph": args.cuda_graph, "fused_kernels": fused.active(device, dtype),
        "graph_vs_eager_max_abs": graph_error,
        "device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        **decomposed,
        **({"profile": profiled} if args.profile else {}),
        **({"plain_loop_ms": timings["plain_loop"].median_s * 1e3,
            "harness_overhead": u.median_s / timings["plain_loop"].median_s} if args.overhead else {}),
    }


def weight_storage(args) -> str:
    """The dtype a benchmark stores the weights in: autocast's, unless float32 or --recast-weights."""
    return "fp32" if args.dtype == "fp32" or args.recast_weights else args.dtype


# the time model's plans (metrics/time_model.py): which branch kinds are reused after evaluation 0
DECOMPOSITION = {"attention_reused": dict(attention=True, mlp=False), "mlp_reused": dict(attention=False, mlp=True),
                 "both_reused": dict(attention=True, mlp=True)}


def _mask_plan(mask: torch.Tensor) -> Plan:
    compute = tuple(tuple((bool(a), bool(m)) for a, m in block) for block in mask.tolist())
    return Plan(compute, cache_steps=tuple(range(1, len(compute))))


def time_decomposition(model, timings: dict, schedule: torch.Tensor, macs_speedup: float) -> dict:
    """The time model's columns: per-evaluation cost of the always-run work and of each branch
    kind, each kind's time per MAC (1 = exactly its MACs' worth), and the cached run's latency
    and efficiency as the model predicts them from the plan's mask (compare with the measured)."""
    nfe = len(schedule)  # schedule (nfe, blocks, 2): the cached run's mask
    model_t = fit_time_model(*(timings[k].median_s for k in ("uncached", *DECOMPOSITION)), nfe=nfe,
                             blocks=model.num_blocks)
    costs = branch_macs(model)
    per_mac = model_t.time_per_mac(costs.base, sum(a for a, _ in costs.branch), sum(m for _, m in costs.branch))
    predicted = model_t.predict(schedule)
    return {"fixed_ms_per_eval": model_t.fixed_s * 1e3, "attention_ms_per_eval": model_t.attention_s * 1e3,
            "mlp_ms_per_eval": model_t.mlp_s * 1e3, "time_model_additivity": model_t.additivity,
            "fixed_time_share": model_t.fixed_s / model_t.evaluation_s,
            **{f"time_per_mac_{kind}": value for kind, value in per_mac.items()},
            "predicted_cached_ms": predicted * 1e3, "predicted_efficiency": nfe * model_t.evaluation_s / predicted / macs_speedup}


def gpu_profile(fns: dict, device: torch.device, top: int = 8) -> dict:
    """Where one (warm) call of each function spends GPU time: its wall time, the summed kernel
    time, their ratio (GPU busy; well below 1 = the host cannot launch kernels fast enough),
    the kernel count and the `top` kernels by time. CUDA only (an empty dict elsewhere)."""
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        return {}
    out = {}
    for name, fn in fns.items():
        torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernel_ms = sum(e.device_time for e in kernels) / 1e3  # us -> ms
        per_name: dict[str, list[float]] = {}
        for e in kernels:
            per_name.setdefault(e.name[:80], []).append(e.device_time / 1e3)
        ranked = sorted(per_name.items(), key=lambda kv: -sum(kv[1]))[:top]
        wall_ms = start.elapsed_time(end)
        out[name] = {"wall_ms": wall_ms, "kernel_ms": kernel_ms, "gpu_busy": kernel_ms / wall_ms,
                     "kernels": len(kernels), "top": [[k, round(sum(v), 3), len(v)] for k, v in ranked]}
    return out


class _Keeping(FixedPlan):
    """A fixed plan that keeps the per-batch state of its first run (to read the cache's size)."""

    last = None
    keep = True

    def run(self, plan):
        state = super().run(plan)
        if self.keep:
            self.last, self.keep = state, False
        return state

    def release(self) -> int:
        """The kept cache's bytes; the state is dropped so later peaks do not count a stale cache
        (kept, it would stay alive into the next call: an 'uncached' peak would hold the L2C cache
        of the call before)."""
        nbytes, self.last = self.last.cache_bytes, None
        return nbytes


@torch.no_grad()
def plain_ddim(model, labels, nfe: int, guidance: float, device) -> torch.Tensor:
    """Uncached DDIM with batched CFG written as a bare loop: what the harness must not be slower than."""
    from ..sampling.ddim import DiffusionTables, ddim_update
    from ..sampling.diffusion import SpacedDiffusion

    tables = DiffusionTables(SpacedDiffusion.create(nfe), device)
    y = torch.as_tensor(labels, device=device)
    x = torch.randn(len(y), model.in_channels, model.input_size, model.input_size, device=device)
    y2 = torch.cat([y, torch.full_like(y, model.null_class)])
    for k in range(nfe - 1, -1, -1):
        t = tables.timestep_map[k].expand(2 * len(y))
        out = model(torch.cat([x, x]), t, y2)
        cond, uncond = out.chunk(2)
        eps = torch.cat([uncond[:, :3] + guidance * (cond[:, :3] - uncond[:, :3]), cond[:, 3:]], dim=1)
        x, _ = ddim_update(tables, eps, x, k)
    return x


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="DiT-S/2")
    parser.add_argument("--override", type=_override, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--nfe", type=int, default=20)
    parser.add_argument("--cache", default="l2c")
    parser.add_argument("--router", default="official")
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--interval", type=int, default=2)
    parser.add_argument("--param", type=_override, action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter of the cache method (e.g. --cache toca --param ratio=0.1)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--recast-weights", action="store_true",
                        help="bf16/fp16: keep float32 weights and let autocast cast them at every call "
                             "(the comparison for models.layers.cast_weights_, which runs by default)")
    parser.add_argument("--no-fused", action="store_true",
                        help="CUDA: PyTorch's own kernels for the mixed-dtype residual adds and U-ViT's skip "
                             "concatenation instead of ours (models/fused.py), to time the difference")
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--diffusers", action="store_true",
                        help="a DiT arch run as diffusers' DiTTransformer2DModel with the same weights (model=diffusers)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the branch functions")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="CUDA: replay each whole sampling loop as a CUDA graph (sampling/graphs.py)")
    parser.add_argument("--os-heap", action="store_true",
                        help="CPU: leave glibc's heap trimming on (by default freed memory stays in the "
                             "process for reuse; see devices.retain_cpu_heap)")
    parser.add_argument("--overhead", action="store_true",
                        help="also time a bare DDIM loop (DiT): harness_overhead = uncached generate / bare loop")
    parser.add_argument("--profile", action="store_true",
                        help="CUDA: profile one uncached and one cached call (GPU busy share, top kernels)")
    parser.add_argument("--decompose", action="store_true",
                        help="also time three plans that reuse all attention / all MLP / both after the first "
                             "evaluation, and fit where the time goes (metrics/time_model.py): always-run work "
                             "and each branch kind per evaluation, time per MAC, predicted efficiency")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    row = run_bench(args)
    print_row(row, as_json=args.json)
    return row


def print_row(row: dict, as_json: bool) -> None:
    """One JSON line, or an aligned `key: value` table (the benchmarks' output)."""
    if as_json:
        print(json.dumps(row))
        return
    width = max(map(len, row))
    for key, value in row.items():
        print(f"{key:>{width}}: {value:.4f}" if isinstance(value, float) else f"{key:>{width}}: {value}")


if __name__ == "__main__":
    main()
