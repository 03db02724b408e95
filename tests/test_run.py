"""The harness end to end at toy scale: rows, multirun, W&B read-back, failures, skipping."""

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_config, stored_references
from PIL import Image

from l2c_bench import generate
from l2c_bench.metrics import (
    feature_statistics,
    fid_from_statistics,
    kid,
    on_class_rate,
    precision_recall,
)
from l2c_bench.metrics.features import ToyNet, reference_set
from l2c_bench.models.loading import load_model
from l2c_bench.records import load_results, read_row, write_row
from l2c_bench.run import run_point
from l2c_bench.runs.prepare import describe
from l2c_bench.system.devices import resolve_device

FAST = ["cache=none", "metrics.converged_nfe=0", "steps=2", "metrics.num_samples=4", "metrics.batch_size=4", "metrics.timing_batch=2",
        "metrics.timing_repeats=1", "metrics.reference_samples=40", "metrics.grid_samples=4"]


def config(tmp_path, *overrides):
    return compose_config(tmp_path, *FAST, *overrides)


def _dit_macs_per_evaluation(args) -> tuple[int, int]:
    """MACs of one DiT forward pass for one image, by hand from its sizes: the linear and conv
    layers (the paper's count), and the attention products QK^T and AV the `all` count adds."""
    tokens, width, hidden = (args.input_size // args.patch_size) ** 2, args.hidden_size, int(args.hidden_size * args.mlp_ratio)
    patch_out = args.patch_size ** 2 * args.in_channels * (2 if args.learn_sigma else 1)  # noise and variance
    patch_embed = tokens * args.in_channels * args.patch_size ** 2 * width
    timestep = 256 * width + width * width  # 256 frequencies -> D -> D, one row
    # qkv, proj, the MLP's two layers per token; the adaLN modulation (6 D) on the conditioning row
    block = tokens * (width * 3 * width + width * width + 2 * width * hidden) + width * 6 * width
    final = width * 2 * width + tokens * width * patch_out
    return patch_embed + timestep + args.depth * block + final, args.depth * 2 * tokens * tokens * width


def test_single_run_writes_an_ok_row_with_provenance_and_grid(tmp_path):
    cfg = config(tmp_path, "tracker=none")
    row = run_point(cfg)
    assert row["status"] == "ok", row.get("error")
    stored = read_row(tmp_path, row["run_id"])
    assert stored == json.loads(json.dumps(row, default=str))
    m = {k.removeprefix("metrics."): v for k, v in stored.items() if k.startswith("metrics.")}
    assert stored["config.model.arch"] == "DiT-toy"
    # the counts the config sets (FAST): 2 NFE, 4 samples in one shard, batches of 2 timed once, DiT's DDIM
    assert (m["nfe"], m["num_samples"], m["shards"], m["latency_batch"], m["timing_repeats"]) == (2, 4, 1, 2, 1)
    device = resolve_device(cfg.device)
    timer = "cuda_events" if device.type == "cuda" else "perf_counter"
    assert (m["sampler"], m["dtype"], m["compile"], m["timer"]) == ("ddim", "fp32", False, timer)
    # uncached: nothing reused, and the method is its own reference (speedup exactly 1)
    assert m["cached_ratio"] == m["reused_ratio_all"] == 0.0 and "paired_latent_mse" not in m
    assert m["latency_ms_uncached"] == m["latency_ms"] > 0 and m["speedup"] == 1.0
    # one timed call: its quartiles are the median
    assert m["latency_ms_q25"] == m["latency_ms"] == m["latency_ms_q75"]
    # MACs per image (one guidance pass, as the paper counts them) = NFE x one forward pass's
    model, _ = load_model(describe(cfg).model, device)
    linear, attention_products = _dit_macs_per_evaluation(model.args)
    assert (linear, attention_products) == (102_711_296, 8_388_608)  # DiT-toy: 8 blocks of 64 tokens x 128
    assert m["macs_g"] == m["macs_uncached_g"] == pytest.approx(2 * linear / 1e9, rel=1e-9)
    assert m["macs_all_g"] == pytest.approx(2 * (linear + attention_products) / 1e9, rel=1e-9)
    assert m["macs_speedup"] == 1.0

    # the samples: sample i has seed 0 + i and label i mod 10; regenerated here, they are the grid
    # (torchvision's: 2 px padding, 8 per row) and give the row's quality numbers
    images = generate(model, labels=[i % 10 for i in range(4)], seeds=list(range(4)), steps=2, sampler="ddim",
                      guidance_scale=1.5, decode=True).images.float().cpu()
    grid = torch.from_numpy(np.array(Image.open(tmp_path / row["run_id"] / "samples.png"))).permute(2, 0, 1)
    assert grid.shape == (3, 2 + 34, 2 + 4 * 34)
    for i, image in enumerate(images):
        expected = ((image + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)
        assert torch.equal(grid[:, 2:34, 2 + 34 * i:34 + 34 * i], expected), i
    features, logits = ToyNet().embed(images)
    assert m["on_class_rate"] == on_class_rate(logits, np.arange(4) % 10)
    reference = reference_set(ToyNet(), scale="toy", num_images=40, reference=None, cache_dir=tmp_path / "_reference")
    assert reference.features.shape == (40, 128)  # metrics.reference_samples
    assert m["fid"] == pytest.approx(fid_from_statistics(*feature_statistics(features), reference.mu, reference.sigma),
                                     rel=1e-9)
    assert m["kid"] == pytest.approx(kid(features, reference.features), rel=1e-9)
    assert [m["precision"], m["recall"]] == list(precision_recall(features, reference.features, k=3))

    in_git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode == 0
    assert len(stored["provenance.git_sha"] or "") == (40 if in_git else 0)  # CI runs in a clone: a SHA
    for key in ("torch", "hydra", "wandb", "hostname", "device_name", "start_time", "end_time"):
        assert stored[f"provenance.{key}"], key
    assert not list(tmp_path.rglob("*.tmp"))


def test_rerun_is_skipped_unless_forced(tmp_path):
    first = run_point(config(tmp_path, "tracker=none"))
    stored = tmp_path / first["run_id"] / "result.json"
    written = stored.stat().st_mtime_ns
    again = run_point(config(tmp_path, "tracker=none"))
    assert again == read_row(tmp_path, first["run_id"]) and stored.stat().st_mtime_ns == written  # not rerun
    forced = run_point(config(tmp_path, "tracker=none", "force=true"))
    assert forced["run_id"] == first["run_id"] and stored.stat().st_mtime_ns > written  # rerun, row rewritten
    assert forced["metrics.latency_ms"] != first["metrics.latency_ms"]  # timed again
    assert len(load_results(tmp_path)) == 1


def test_failed_run_writes_a_failed_row_naming_the_key(tmp_path):
    row = run_point(config(tmp_path, "tracker=none", "model.checkpoint=/nonexistent/ckpt.pt"))
    assert row["status"] == "failed"
    assert "/nonexistent/ckpt.pt" in row["error"] and "model.checkpoint" in row["error"]
    assert read_row(tmp_path, row["run_id"])["status"] == "failed"
    bad = run_point(config(tmp_path, "tracker=none", "model=uvit", "steps=3"))
    assert bad["status"] == "failed" and "odd" in bad["error"]


def test_single_failed_run_exits_non_zero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "l2c_bench.run", f"results_dir={tmp_path}", "tracker=none",
                           "model.checkpoint=/nonexistent.pt", *FAST], capture_output=True, text=True)
    assert proc.returncode == 1
    assert load_results(tmp_path).status.tolist() == ["failed"]


def test_wandb_offline_run_holds_the_metrics(tmp_path):
    row = run_point(config(tmp_path, "tracker=wandb", "tracker.group=g1"))
    assert row["status"] == "ok"
    wandb_dir = row["provenance.wandb_dir"]
    assert wandb_dir and os.path.isdir(wandb_dir)
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "wandb"), "leet", "inspect",
                          "--summary", "--json", wandb_dir], capture_output=True, text=True, timeout=120)
    summary = json.loads(out.stdout)
    assert summary["state"] == "finished" and summary["name"] == row["run_id"]
    assert summary["summary"]["latency_ms"] == pytest.approx(row["metrics.latency_ms"])
    assert summary["summary"]["on_class_rate"] == pytest.approx(row["metrics.on_class_rate"])
    assert summary["summary"]["samples"]["_type"] == "image-file"
    assert summary["config"]["model.arch"] == "DiT-toy" and summary["config"]["steps"] == 2


def test_wandb_failure_never_loses_the_local_row(tmp_path, caplog):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    row = run_point(config(tmp_path / "res", "tracker=wandb", f"tracker.dir={blocker}"))
    assert row["status"] == "ok"
    assert read_row(tmp_path / "res", row["run_id"])["status"] == "ok"
    assert any("W&B" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_multirun_of_two_toy_points(tmp_path):
    cmd = [sys.executable, "-m", "l2c_bench.run", "-m", "model=dit,uvit", f"results_dir={tmp_path}",
           "tracker=none", *FAST]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = load_results(tmp_path)
    assert sorted(rows["config.model.family"]) == ["dit", "uvit"]
    assert rows.status.tolist() == ["ok", "ok"]
    assert set(rows["metrics.sampler"]) == {"ddim", "dpm_solver2"}


def test_dry_run_prints_the_config_without_running(tmp_path):
    """Hydra's `--cfg job`: the composed config (overrides applied) as YAML, and nothing else happens:
    no row, no samples, no Hydra output folder (FAST keeps an accidental run short)."""
    import yaml
    from omegaconf import OmegaConf

    overrides = [*FAST, "model=uvit", "seed=7"]
    proc = subprocess.run([sys.executable, "-m", "l2c_bench.run", "--cfg", "job", f"results_dir={tmp_path}",
                           *overrides], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert yaml.safe_load(proc.stdout) == OmegaConf.to_container(compose_config(tmp_path, *overrides))
    assert "arch: U-ViT-toy" in proc.stdout and "seed: 7" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_no_partial_row(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_row(tmp_path, "r1", {"status": "ok"})
    assert not list(tmp_path.rglob("*")) or not list(tmp_path.rglob("result.json"))
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_paper_scale_with_random_weights_runs_the_real_vae_path(tmp_path):
    """`model.checkpoint=random` at paper scale: real architecture code (shrunk here for CI),
    random SD VAE decoding, quality marked not applicable, speed still measured."""
    row = run_point(config(tmp_path, "tracker=none", "scale=paper", "model.checkpoint=random",
                           "metrics.num_samples=1", "metrics.timing_batch=1", "metrics.fid=false",
                           "+model.overrides.depth=1", "+model.overrides.hidden_size=64",
                           "+model.overrides.num_heads=4"))
    assert row["status"] == "ok", row.get("error")
    assert row["config.model.arch"] == "DiT-XL/2" and row["config.model.vae"] == "sd"
    assert row["metrics.quality_note"].startswith("no image metrics: random weights")
    assert "metrics.fid" not in row and row["metrics.latency_ms"] > 0


def test_paper_scale_missing_checkpoint_names_file_key_and_source(tmp_path):
    row = run_point(config(tmp_path, "tracker=none", "scale=paper", "model=uvit",
                           f"model.checkpoint={tmp_path}/imagenet256_uvit_huge.pth"))
    assert row["status"] == "failed"
    assert "imagenet256_uvit_huge.pth" in row["error"] and "model.checkpoint" in row["error"]
    assert "U-ViT README" in row["error"]


@pytest.mark.slow
def test_bf16_autocast_run_is_recorded_and_close_to_fp32(tmp_path):
    common = ["tracker=none", "cache=fora", "steps=4", "metrics.num_samples=4", "metrics.batch_size=4",
              "metrics.timing_batch=1", "metrics.timing_repeats=1", "metrics.fid=false"]
    # one reference store each, so each holds its own uncached twin (`<store>/uncached/`)
    fp32 = run_point(config(tmp_path / "fp32", *common, f"reference_dir={tmp_path / 'fp32' / 'refs'}"))
    bf16 = run_point(config(tmp_path / "bf16", *common, "dtype=bf16", f"reference_dir={tmp_path / 'bf16' / 'refs'}"))
    assert fp32["status"] == bf16["status"] == "ok", bf16.get("error")
    assert fp32["run_id"] != bf16["run_id"]  # numerics are part of a run's identity (the directory is not)
    assert (fp32["metrics.dtype"], bf16["metrics.dtype"]) == ("fp32", "bf16") and bf16["metrics.tf32"] is False
    assert fp32["metrics.cuda_graph"] is False and fp32["metrics.graph_captures"] is None
    assert fp32["metrics.fused_kernels"] is bf16["metrics.fused_kernels"] is False  # CUDA autocast only
    # bf16: linear/conv weights stored cast once (models.layers.cast_weights_), after router work
    assert (fp32["metrics.weights_dtype"], bf16["metrics.weights_dtype"]) == ("fp32", "bf16")
    assert fp32["metrics.cpu_heap_retained"] is (platform.libc_ver()[0] == "glibc")  # devices.retain_cpu_heap
    # What bf16 gives on this toy point (CPU, measured over seeds 0-6; seed 0 in brackets): the
    # uncached latents move by 5.7-6.4% [6.4%] (relative L2: bf16 keeps 8 mantissa bits, a 2^-9
    # rounding per product, compounded over 8 blocks x 4 steps), a squared error 2.0-3.4% [2.9%] of
    # FORA's caching error; that caching error, measured against an uncached reference in the same
    # numerics, is 0.90-0.92x [0.92x] fp32's. The windows leave about 25% around those: they exclude
    # a "bf16" run that computed in fp32 (no change, ratio 1) and a bf16 residual stream (9.2%).
    uncached = {name: torch.stack([latents for _, latents, _ in stored_references(tmp_path / name / "refs", "uncached")])
                for name in ("fp32", "bf16")}
    change = uncached["bf16"] - uncached["fp32"]
    assert 0.045 < float(change.norm() / uncached["fp32"].norm()) < 0.08
    assert float(change.pow(2).mean()) < 0.045 * fp32["metrics.paired_latent_mse"]
    assert 0.86 < bf16["metrics.paired_latent_mse"] / fp32["metrics.paired_latent_mse"] < 0.96
    # what runs the model in float32 still works under bf16: the greedy heuristic measures branch
    # changes while planning, metrics.layer_error in prepare(), both before the weights are cast
    greedy = run_point(config(tmp_path / "bf16", *common[:1], "cache=heuristic", "cache.strategy=greedy", *common[2:],
                              "dtype=bf16"))
    layer_error = run_point(config(tmp_path / "bf16", *common, "dtype=bf16", "metrics.layer_error=true"))
    assert greedy["status"] == layer_error["status"] == "ok", (greedy.get("error"), layer_error.get("error"))
    assert greedy["metrics.weights_dtype"] == layer_error["metrics.weights_dtype"] == "bf16"
    assert len(layer_error["metrics.branch_change"]) == 4
    bad = run_point(config(tmp_path / "bf16", *common, "dtype=fp8"))
    assert bad["status"] == "failed" and "dtype='fp8'" in bad["error"]


def test_a_row_says_where_its_time_went_and_the_sweep_adds_it_up(tmp_path):
    """Each row's phases (seconds): the method's samples, its uncached twin, the converged reference
    (off here: 0), timing, scoring and intervals; the sweep summary prints their totals."""
    from l2c_bench.runs.summary import PHASES, phase_totals, reuse_totals

    shared = f"reference_dir={tmp_path / 'refs'}"
    row = run_point(config(tmp_path, "tracker=none", "cache=fora", "metrics.timing_repeats=2", shared))
    assert row["status"] == "ok", row.get("error")
    phases = {name: row[f"metrics.phase_{name}_s"] for name in PHASES}
    assert phases["reference"] < 0.01 and phases["intervals"] == row["metrics.intervals_s"]  # nothing to sample
    assert all(phases[name] > 0 for name in ("sampling", "twin", "timing", "scoring")), phases
    line = phase_totals([row, row])
    assert line.startswith("Time in its points: sampling ") and "twin " in line and "(total " in line
    assert phase_totals([{"run_id": "old"}]) == ""  # rows written before phases: no line
    # the twin's 4 samples were sampled into the shared store; a run in another folder reads them
    assert (row["metrics.uncached_samples_read"], row["metrics.uncached_samples_sampled"]) == (0, 4)
    again = run_point(config(tmp_path / "elsewhere", "tracker=none", "cache=fora", "metrics.timing_repeats=2", shared))
    assert (again["metrics.uncached_samples_read"], again["metrics.uncached_samples_sampled"]) == (4, 0)
    assert again["metrics.phase_twin_s"] < row["metrics.phase_twin_s"]
    assert reuse_totals([row, again]) == "Reference samples: uncached twins 4 read, 4 sampled (shared store: reference_dir)"
    assert reuse_totals([{"run_id": "old"}]) == ""
