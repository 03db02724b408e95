"""The paper-scale GPU speed suite: every figure the speed issue asks of a GPU, in one short run.

    python -m l2c_bench.benchmarks.gpu_suite --out gpu_bench            # on a CUDA machine
    python -m l2c_bench.benchmarks.gpu_suite --out /tmp/x --smoke        # toy models, any machine (the CI test)

Random weights (speed does not depend on them), batch 8 with classifier-free guidance (16 rows
per evaluation), official L2C routers:

- DiT-XL/2 256, DDIM-20 and DDIM-50, threshold 0.1;
- U-ViT-H/2 256, DPM-Solver-2 NFE 20 and 50, threshold 0.9;

each uncached vs L2C in fp32 (TF32 off) and bf16 autocast, then DiT-XL/2 DDIM-20 with TF32, with
`torch.compile`, the harness overhead against a bare DDIM loop, the cost of one router-learning
iteration at paper scale, (points 10-17) whole sampling loops replayed as CUDA graphs, (18-20)
the time model that says where the time goes (`bench --decompose`), and (21-22) two graph points
with float32 weights that autocast recasts at every call (the comparison for stored bf16 weights,
`models.layers.cast_weights_`, which every other bf16 point uses), and (23-24) two graph points
with PyTorch's kernels for the mixed-dtype elementwise work instead of ours (`models/fused.py`).
Rows are appended to `<out>/gpu_bench.jsonl` as they finish (a run cut short keeps what it
measured); `<out>/gpu_bench.md` sets the latencies beside the paper's (A5000, Tables 1 and 2).
Points not started within `--budget-s`, or that failed, are listed with the reason.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models import build_model
from . import router_learning, speed

PAPER_NUMBERS = Path(__file__).resolve().parents[2] / "analysis" / "paper_numbers"


@dataclass(frozen=True)
class Point:
    """One benchmark row: `bench` arguments for a model family at an NFE and numeric setting."""

    family: str  # dit | uvit
    nfe: int
    dtype: str = "fp32"
    tf32: bool = False
    compile: bool = False
    graph: bool = False  # replay each sampling loop as a CUDA graph
    overhead: bool = False
    extra: tuple[str, ...] = field(default=())

    def argv(self, smoke: bool, repeats: int) -> list[str]:
        if self.family == "dit":
            model = ["--arch", "DiT-toy" if smoke else "DiT-XL/2", "--sampler", "ddim", "--threshold", "0.1",
                     "--guidance", "1.5"]
        else:
            model = ["--arch", "U-ViT-toy" if smoke else "U-ViT-H/2", "--sampler", "dpm_solver2",
                     "--threshold", "0.9", "--guidance", "0.4"]
        if smoke:  # toy width, but the paper's block count so the official routers fit
            model += ["--override", "depth=28"]
        return [*model, "--nfe", str(self.nfe), "--cache", "l2c", "--router", "official",
                "--batch", "2" if smoke else "8",
                "--repeats", str(repeats), "--warmup", "1", "--dtype", self.dtype,
                *(["--tf32"] if self.tf32 else []), *(["--compile"] if self.compile else []),
                *(["--cuda-graph"] if self.graph else []),
                *(["--overhead"] if self.overhead else []), *self.extra]


# Grouped by model; a model is rebuilt (on the GPU, about a second) when the weight storage changes
# (bf16 points store bf16 weights) and after a point that compiles it in place.
POINTS = [
    Point("dit", 20, extra=("--profile",)), Point("dit", 20, "bf16", overhead=True, extra=("--profile",)), Point("dit", 50), Point("dit", 50, "bf16"),
    Point("dit", 20, tf32=True),
    Point("uvit", 20), Point("uvit", 20, "bf16"), Point("uvit", 50), Point("uvit", 50, "bf16"),
    Point("dit", 20, "bf16", compile=True),
    # CUDA graphs (10-15): compare with the eager rows of the same run, e.g. --select 1,10,3,11,...
    Point("dit", 20, "bf16", graph=True), Point("dit", 50, "bf16", graph=True),
    Point("dit", 20, tf32=True, graph=True), Point("dit", 20, graph=True),
    Point("uvit", 20, "bf16", graph=True), Point("uvit", 50, "bf16", graph=True),
    # compiled branches inside the graphs (16-17; the model compiled in place is rebuilt for later points)
    Point("dit", 20, "bf16", compile=True, graph=True), Point("uvit", 50, "bf16", compile=True, graph=True),
    # where the time goes (18-20; `bench --decompose`, metrics/time_model.py): always-run work and
    # each branch kind per evaluation, time per MAC, the predicted efficiency beside the measured
    Point("dit", 20, "bf16", graph=True, extra=("--decompose",)), Point("dit", 20, graph=True, extra=("--decompose",)),
    Point("uvit", 50, "bf16", graph=True, extra=("--decompose",)),
    # weights recast by autocast at every call, without `cast_weights_` (21-22): compare with 10 and 15
    Point("dit", 20, "bf16", graph=True, extra=("--recast-weights",)),
    Point("uvit", 50, "bf16", graph=True, extra=("--recast-weights",)),
    # PyTorch's kernels for the mixed-dtype residual adds and U-ViT's skip concatenation instead of
    # ours (models/fused.py) (23-24): compare with 10 and 15
    Point("dit", 20, "bf16", graph=True, extra=("--no-fused",)),
    Point("uvit", 50, "bf16", graph=True, extra=("--no-fused",)),
]


def paper_latency(family: str, nfe: int) -> tuple[float | None, float | None]:
    """The paper's A5000 seconds (uncached, L2C) for DiT-XL/2 / U-ViT-H/2 at 256 px and this NFE."""
    name, model = ("table1_dit.csv", "DiT-XL/2") if family == "dit" else ("table2_uvit.csv", "U-ViT-H/2")
    base, l2c = None, None
    with open(PAPER_NUMBERS / name) as f:
        for row in csv.DictReader(f):
            if row["model"] != model or row["resolution"] != "256" or int(row["nfe"]) != nfe:
                continue
            if row["method"] == "L2C":
                l2c = float(row["latency_s"])
            elif row["method"] in ("DDIM", "DPM-Solver-2"):
                base = float(row["latency_s"])
    return base, l2c


def markdown(rows: list[dict], skipped: list[str]) -> str:
    head = ("| model | NFE | dtype | weights | TF32 | compile | graph | fused | uncached s (IQR) | L2C s (IQR) | speedup | MACs speedup | "
            "efficiency | paper A5000 s | peak MiB uncached / L2C | cache MiB | host syncs |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        base, l2c = paper_latency("dit" if r["arch"].startswith("DiT") else "uvit", r["nfe"])
        paper = f"{base} -> {l2c}" if base else "-"
        peak = f"{r['peak_uncached_mb']:.0f} / {r['peak_cached_mb']:.0f}" if r["peak_uncached_mb"] else "-"
        lines.append(
            f"| {r['arch']} | {r['nfe']} | {r['dtype']} | {r['weights_dtype']} | {r['tf32']} | {r['compile']} | {r['cuda_graph']} | "
            f"{r['fused_kernels']} | "
            f"{r['uncached_ms'] / 1e3:.3f} ({r['uncached_iqr_ms'] / 1e3:.3f}) | "
            f"{r['cached_ms'] / 1e3:.3f} ({r['cached_iqr_ms'] / 1e3:.3f}) | {r['measured_speedup']:.3f} | "
            f"{r['macs_speedup']:.3f} | **{r['efficiency']:.3f}** | {paper} | {peak} | {r['cache_mb']:.0f} | "
            f"{r['host_syncs']} |")
    gpus = sorted({r["device_name"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    lines += ["", f"Device: {', '.join(gpus) or '-'}; torch {torch.__version__}; batch {batches} with CFG "
              "(twice the rows per evaluation)."]
    for r in rows:
        if "harness_overhead" in r:
            lines.append(f"Harness overhead ({r['arch']} NFE {r['nfe']} {r['dtype']}): uncached generate "
                         f"{r['uncached_ms']:.1f} ms / bare DDIM loop {r['plain_loop_ms']:.1f} ms = "
                         f"{r['harness_overhead']:.3f}")
    for r in rows:
        for method, p in (r.get("profile") or {}).items():
            lines.append(f"Profile ({r['arch']} NFE {r['nfe']} {r['dtype']}, {method}): wall {p['wall_ms']:.1f} ms, "
                         f"kernels {p['kernel_ms']:.1f} ms in {p['kernels']} launches, GPU busy {p['gpu_busy']:.2f}; "
                         f"top: {p['top'][:4]}")
    for r in rows:
        if "fixed_ms_per_eval" in r:
            lines.append(
                f"Time model ({r['arch']} NFE {r['nfe']} {r['dtype']}, graph {r['cuda_graph']}): per evaluation "
                f"always-run {r['fixed_ms_per_eval']:.2f} ms, attention {r['attention_ms_per_eval']:.2f} ms, "
                f"MLP {r['mlp_ms_per_eval']:.2f} ms (always-run share {r['fixed_time_share']:.3f}); time per MAC "
                f"{r['time_per_mac_fixed']:.2f} / {r['time_per_mac_attention']:.3f} / {r['time_per_mac_mlp']:.3f}; "
                f"predicted efficiency {r['predicted_efficiency']:.3f} (measured {r['efficiency']:.3f}); "
                f"additivity {r['time_model_additivity']:+.3f}")
    if skipped:
        lines.append(f"Skipped or failed: {', '.join(skipped)}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no new point after this many seconds")
    parser.add_argument("--smoke", action="store_true",
                        help="toy widths at the paper's depth, batch 2, one repeat (a check that it runs)")
    parser.add_argument("--first", type=int, help="only the first N points")
    parser.add_argument("--select", type=lambda t: [int(i) for i in t.split(",")],
                        help="only these points, by 0-based index into POINTS, e.g. 1,3")
    parser.add_argument("--no-router", action="store_true", help="skip the router-learning iteration cost")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "gpu_bench.jsonl"
    start, rows, skipped, models = time.perf_counter(), [], [], {}
    repeats = 1 if args.smoke else args.repeats
    points = [POINTS[i] for i in args.select] if args.select else POINTS[:args.first]
    for point in points:
        name = f"{point.family} NFE {point.nfe} {point.dtype}{' tf32' if point.tf32 else ''}" \
               f"{' compile' if point.compile else ''}{' graph' if point.graph else ''}" \
               + "".join(f" {e}" for e in point.extra)
        if time.perf_counter() - start > args.budget_s:
            skipped.append(f"{name} (budget)")
            continue
        bench_args = speed.parse_args(point.argv(args.smoke, repeats))
        # one random model per architecture and weight storage (a bf16 point casts its weights once,
        # in place, and a float32 point needs them float32); built on the GPU, it takes a second
        key = (bench_args.arch, tuple(bench_args.override), speed.weight_storage(bench_args))
        if key not in models:
            models.clear()  # free the other model's GPU memory first
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            models[key] = build_model(bench_args.arch, device="cuda" if torch.cuda.is_available() else None,
                                      **dict(bench_args.override))
        t0 = time.perf_counter()
        try:
            row = speed.run_bench(bench_args, model=models[key])
        except Exception as error:  # noqa: BLE001 - keep the other points of a short GPU lease
            print(f"{name}: failed: {type(error).__name__}: {error}", flush=True)
            skipped.append(f"{name} (failed: {type(error).__name__}: {str(error)[:200]})")
            continue
        finally:
            if point.compile:  # compiled in place: a later point of this model gets a fresh one
                models.pop(key, None)
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{time.perf_counter() - start:6.1f} s] {name}: {row['uncached_ms']:.1f} -> {row['cached_ms']:.1f} ms, "
              f"efficiency {row['efficiency']:.3f}, host syncs {row['host_syncs']}"
              f"{'' if row['graph_vs_eager_max_abs'] is None else ', graph-eager ' + str(row['graph_vs_eager_max_abs'])}",
              flush=True)
    models.clear()
    if not args.no_router:
        for arch, sampler in (("DiT-XL/2", "ddim"), ("U-ViT-H/2", "dpm_solver2")):
            if time.perf_counter() - start > args.budget_s:
                skipped.append(f"router iteration {arch}")
                continue
            argv_r = ["--nfe", "20", "--batch", "8", "--repeats", str(repeats), "--json"]
            argv_r += ["--model", "dit" if arch.startswith("DiT") else "uvit"] if args.smoke else \
                ["--arch", arch, "--sampler", sampler]
            row = router_learning.main(argv_r)
            with open(log, "a") as f:
                f.write(json.dumps({"router_iteration": True, **row}) + "\n")
    text = markdown(rows, skipped)
    (args.out / "gpu_bench.md").write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
