"""The harness end to end at toy scale: rows, multirun, W&B read-back, failures, skipping."""

import json
import os
import platform
import subprocess
import sys

import pytest
from conftest import ROOT, compose_config

from l2c_bench.records import load_results, read_row, write_row
from l2c_bench.run import run_point

FAST = ["cache=none", "steps=2", "metrics.num_samples=4", "metrics.batch_size=4", "metrics.timing_batch=2",
        "metrics.timing_repeats=1", "metrics.reference_samples=40", "metrics.grid_samples=4"]


def config(tmp_path, *overrides):
    return compose_config(tmp_path, *FAST, *overrides)


def test_single_run_writes_an_ok_row_with_provenance_and_grid(tmp_path):
    row = run_point(config(tmp_path, "tracker=none"))
    assert row["status"] == "ok", row.get("error")
    stored = read_row(tmp_path, row["run_id"])
    assert stored == json.loads(json.dumps(row, default=str))
    assert stored["config.model.arch"] == "DiT-toy" and stored["metrics.nfe"] == 2
    assert stored["metrics.latency_ms"] > 0 and stored["metrics.latency_ms_q25"] <= stored["metrics.latency_ms_q75"]
    assert 0.0 <= stored["metrics.on_class_rate"] <= 1.0 and stored["metrics.fid"] >= 0
    in_git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode == 0
    assert len(stored["provenance.git_sha"] or "") == (40 if in_git else 0)  # CI runs in a clone: a SHA
    for key in ("torch", "hydra", "wandb", "hostname", "device_name", "start_time", "end_time"):
        assert stored[f"provenance.{key}"], key
    assert (tmp_path / row["run_id"] / "samples.png").stat().st_size > 100
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
    proc = subprocess.run([sys.executable, "-m", "l2c_bench.run", "--cfg", "job", f"results_dir={tmp_path}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "arch: DiT-toy" in proc.stdout
    assert not (tmp_path).exists() or not list(tmp_path.rglob("result.json"))


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
    assert row["metrics.quality_note"].startswith("random weights")
    assert "metrics.fid" not in row and row["metrics.latency_ms"] > 0


def test_paper_scale_missing_checkpoint_names_file_key_and_source(tmp_path):
    row = run_point(config(tmp_path, "tracker=none", "scale=paper", "model=uvit",
                           f"model.checkpoint={tmp_path}/imagenet256_uvit_huge.pth"))
    assert row["status"] == "failed"
    assert "imagenet256_uvit_huge.pth" in row["error"] and "model.checkpoint" in row["error"]
    assert "U-ViT README" in row["error"]


def test_bf16_autocast_run_is_recorded_and_close_to_fp32(tmp_path):
    common = ["tracker=none", "cache=fora", "steps=4", "metrics.num_samples=4", "metrics.batch_size=4",
              "metrics.timing_batch=1", "metrics.timing_repeats=1", "metrics.fid=false"]
    fp32 = run_point(config(tmp_path, *common))
    bf16 = run_point(config(tmp_path, *common, "dtype=bf16"))
    assert fp32["status"] == bf16["status"] == "ok", bf16.get("error")
    assert fp32["run_id"] != bf16["run_id"]  # numerics are part of a run's identity
    assert (fp32["metrics.dtype"], bf16["metrics.dtype"]) == ("fp32", "bf16") and bf16["metrics.tf32"] is False
    assert fp32["metrics.cuda_graph"] is False and fp32["metrics.graph_captures"] is None
    assert fp32["metrics.fused_kernels"] is bf16["metrics.fused_kernels"] is False  # CUDA autocast only
    # bf16: linear/conv weights stored cast once (models.layers.cast_weights_), after router work
    assert (fp32["metrics.weights_dtype"], bf16["metrics.weights_dtype"]) == ("fp32", "bf16")
    assert fp32["metrics.cpu_heap_retained"] is (platform.libc_ver()[0] == "glibc")  # devices.retain_cpu_heap
    # caching error measured against an uncached reference in the same numerics: same order of magnitude
    assert 0.2 < bf16["metrics.paired_latent_mse"] / fp32["metrics.paired_latent_mse"] < 5
    # what runs the model in float32 still works under bf16: the greedy heuristic measures branch
    # changes while planning, metrics.layer_error in prepare(), both before the weights are cast
    greedy = run_point(config(tmp_path, *common[:1], "cache=heuristic", "cache.strategy=greedy", *common[2:],
                              "dtype=bf16"))
    layer_error = run_point(config(tmp_path, *common, "dtype=bf16", "metrics.layer_error=true"))
    assert greedy["status"] == layer_error["status"] == "ok", (greedy.get("error"), layer_error.get("error"))
    assert greedy["metrics.weights_dtype"] == layer_error["metrics.weights_dtype"] == "bf16"
    assert len(layer_error["metrics.branch_change"]) == 4
    bad = run_point(config(tmp_path, *common, "dtype=fp8"))
    assert bad["status"] == "failed" and "dtype='fp8'" in bad["error"]
