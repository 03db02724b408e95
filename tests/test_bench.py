"""The speed benchmark runs at toy scale and prints every column the speed issue asks for."""

import json
import os
import platform
import subprocess
import sys

import pytest

from l2c_bench.benchmarks.speed import main


def test_bench_prints_every_column_at_toy_scale(capsys):
    row = main(["--arch", "DiT-toy", "--sampler", "ddim", "--nfe", "4", "--cache", "fora", "--interval", "2",
                "--batch", "2", "--repeats", "1", "--warmup", "0", "--dtype", "bf16", "--overhead", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(row))
    for key in ("uncached_ms", "uncached_iqr_ms", "cached_ms", "cached_iqr_ms", "measured_speedup", "macs_speedup",
                "efficiency", "peak_memory_mb", "cache_mb", "dtype", "tf32", "compile", "cuda_graph", "fused_kernels",
                "plain_loop_ms",
                "harness_overhead", "page_faults_uncached", "page_faults_cached", "cpu_heap"):
        assert key in row, key
    assert row["dtype"] == row["weights_dtype"] == "bf16" and row["macs_speedup"] > 1 and row["efficiency"] > 0
    # FORA at interval 2 holds every branch of the toy DiT: 8 blocks x 2 branches x (2N=4, 64 tokens, 128),
    # in bf16 under bf16 autocast (each branch ends in a linear layer)
    assert row["cache_mb"] * 2**20 == 16 * 4 * 64 * 128 * 2
    # the derived columns are what they say
    assert row["measured_speedup"] == pytest.approx(row["uncached_ms"] / row["cached_ms"])
    assert row["efficiency"] == pytest.approx(row["measured_speedup"] / row["macs_speedup"])
    assert row["macs_speedup"] == pytest.approx(row["macs_uncached_g"] / row["macs_cached_g"])
    assert row["harness_overhead"] == pytest.approx(row["uncached_ms"] / row["plain_loop_ms"])


def test_bench_plans_with_float32_weights_then_stores_them_in_bf16(monkeypatch):
    """The greedy heuristic runs the float32 model while planning; the timed calls use bf16 weights."""
    import torch

    from l2c_bench.caching.methods import heuristic
    from l2c_bench.models import build_model

    measured, measure = [], heuristic.branch_change

    def recording(model, sampler, nfe):  # what the model looked like when the plan measured it
        weights = {m.weight.dtype for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
        measured.append({"weights": weights, "autocast": torch.is_autocast_enabled("cpu"),
                         "change": measure(model, sampler, nfe)})
        return measured[-1]["change"]

    monkeypatch.setattr(heuristic, "branch_change", recording)
    row = main(["--arch", "DiT-toy", "--sampler", "ddim", "--nfe", "4", "--cache", "heuristic", "--param",
                "strategy=greedy", "--batch", "1", "--repeats", "1", "--warmup", "0", "--dtype", "bf16", "--json"])
    assert len(measured) == 1 and measured[0]["weights"] == {torch.float32} and not measured[0]["autocast"]
    # the measurement is the float32 one bit for bit: the same model (bench seeds 0 before building it)
    torch.manual_seed(0)
    float32 = build_model("DiT-toy").eval().requires_grad_(False)
    assert torch.equal(measured[0]["change"], measure(float32, "ddim", 4))
    # the timed calls: bf16 weights, half of each cache step's 16 branches reused (ratio 0.5)
    assert row["weights_dtype"] == "bf16" and row["cached_ratio"] == 0.5 and row["macs_speedup"] > 1
    assert row["fused_kernels"] is False  # our Triton kernels run on CUDA only (models/fused.py)


def test_bench_decomposes_the_time_into_always_run_work_and_branch_kinds():
    row = main(["--arch", "DiT-toy", "--sampler", "ddim", "--nfe", "6", "--cache", "fora", "--interval", "3",
                "--batch", "1", "--repeats", "3", "--warmup", "1", "--decompose", "--json"])
    per_eval = row["fixed_ms_per_eval"] + row["attention_ms_per_eval"] + row["mlp_ms_per_eval"]
    # the three costs account for the uncached call up to the fourth timing's misfit
    assert 6 * per_eval == pytest.approx(row["uncached_ms"] * (1 - row["time_model_additivity"]))
    assert row["attention_ms_per_eval"] > 0 and row["mlp_ms_per_eval"] > 0
    assert row["fixed_time_share"] == pytest.approx(row["fixed_ms_per_eval"] / per_eval)
    assert {"time_per_mac_fixed", "time_per_mac_attention", "time_per_mac_mlp"} <= set(row)
    # FORA's plan at interval 3 computes 2 of 6 evaluations: the prediction follows the mask
    predicted = 6 * row["fixed_ms_per_eval"] + 2 * (row["attention_ms_per_eval"] + row["mlp_ms_per_eval"])
    assert row["predicted_cached_ms"] == pytest.approx(predicted)
    assert row["predicted_efficiency"] > 0
    from l2c_bench.benchmarks.gpu_suite import markdown

    assert "Time model (DiT-toy NFE 6 fp32, graph False): per evaluation always-run" in markdown([row], [])


def test_bench_passes_any_method_parameter():
    row = main(["--arch", "DiT-toy", "--sampler", "ddim", "--nfe", "6", "--cache", "toca", "--param", "interval=2",
                "--param", "ratio=0.5", "--batch", "1", "--repeats", "1", "--warmup", "0", "--json"])
    assert row["params"] == {"interval": 2, "ratio": 0.5}
    assert row["cached_ratio"] == 0.75  # attention reused, half the MLP tokens, at the 3 cache steps


def _bench_in_fresh_process(*extra) -> dict:
    """Heap settings are process-wide and irreversible: each variant gets its own interpreter.

    glibc raises its mmap threshold each time a large block is freed, so with the defaults the
    fault count depends on the heap's history (1,500-50,000 per call pair seen on 2-core
    machines). Fixing the threshold at its initial 128 KiB through GLIBC_TUNABLES freezes that
    history: every large tensor is then mapped and unmapped per call, as at the start of any
    process. The benchmark's own mallopt calls override the tunable."""
    argv = ["--arch", "U-ViT-toy", "--sampler", "dpm_solver2", "--nfe", "10", "--cache", "fora", "--interval", "2",
            "--batch", "4", "--guidance", "0.4", "--repeats", "2", "--warmup", "0", "--json", *extra]
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}
    out = subprocess.run([sys.executable, "-m", "l2c_bench.benchmarks.speed", *argv], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_retained_cpu_heap_stops_the_page_faults_a_cache_causes():
    """Returning freed memory to the OS faults in fresh pages every call (~360,000 per call pair
    here at toy width, with the threshold held at 128 KiB); the benchmark's default keeps freed
    memory in the process (0-3,000: the heap's first growth)."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("heap retention is glibc's mallopt")
    kept, os_heap = _bench_in_fresh_process(), _bench_in_fresh_process("--os-heap")
    assert kept["cpu_heap"] == "retained" and os_heap["cpu_heap"] == "os default"
    faults = {name: row["page_faults_uncached"] + row["page_faults_cached"]
              for name, row in (("kept", kept), ("os", os_heap))}
    assert faults["os"] > 20_000 and faults["os"] > 10 * (faults["kept"] + 100), faults
