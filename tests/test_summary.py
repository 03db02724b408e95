"""What a run prints: one line per point, and the end-of-sweep table (l2c_bench/runs/summary.py)."""

import subprocess
import sys

import pytest
from conftest import ROOT

from l2c_bench.records import load_results, write_row
from l2c_bench.runs.summary import point_line, sweep_rows, sweep_table, write_run_id


def row(run_id, method="l2c", steps=20, arch="DiT-toy", status="ok", error=None, **metrics):
    base = {"run_id": run_id, "status": status, "error": error, "config.model.arch": arch, "config.steps": steps,
            "config.cache.name": method, "provenance.end_time": "2026-12-05T10:00:00+00:00"}
    return {**base, **{f"metrics.{k}": v for k, v in metrics.items()}}


L2C = row("dit-l2c-20", speedup=1.42, speedup_ci_low=1.3, speedup_ci_high=1.55, macs_speedup=1.48, latency_ms=120.0,
          latency_ms_ci_low=110.0, latency_ms_ci_high=131.0, primary_quality="converged_image_psnr_db",
          converged_image_psnr_db=30.1, converged_image_psnr_db_ci_low=29.4, converged_image_psnr_db_ci_high=30.8)
BASE = row("dit-none-20", method="none", latency_ms=171.0, latency_ms_ci_low=160.0, latency_ms_ci_high=180.0,
           primary_quality="converged_image_psnr_db", converged_image_psnr_db=27.5)
UVIT = row("uvit-l2c-20", arch="U-ViT-toy", speedup=2.0, macs_speedup=1.9, primary_quality="fid", fid=6.1,
           fid_ci_low=4.2, fid_ci_high=8.0)
FAILED = row("dit-fora-3", method="fora", steps=3, status="failed",
             error="RunConfigError: cache.interval=1 caches nothing\n  use cache.interval=2")


def test_point_line_reads_speed_macs_and_primary_quality_with_intervals():
    line = point_line(L2C)
    assert line.startswith("ok ") and "DiT-toy NFE 20 l2c" in line
    assert "speedup 1.42x [1.30, 1.55] (MACs 1.48x)" in line
    assert "image PSNR vs converged 30.1 dB [29.4, 30.8]" in line and line.endswith("(dit-l2c-20)")
    # the uncached row: its latency; a missing interval reads [?], never an invented one
    assert "latency 171 ms [160, 180]" in point_line(BASE) and "27.5 dB [?]" in point_line(BASE)
    assert point_line(UVIT).count("[?]") == 1 and "FID 6.1 [4.2, 8]" in point_line(UVIT)


def test_rows_of_one_method_tell_apart_by_the_parameters_they_change():
    from l2c_bench.runs.summary import method_label

    heuristic = {"config.cache.name": "heuristic", "config.cache.strategy": "random", "config.cache.ratio": 0.625,
                 "config.cache.seed": 0, "config.cache.shifted": True}
    assert method_label(heuristic) == "heuristic ratio=0.625 strategy=random"  # seed 0: conf/cache's default
    assert method_label({"config.cache.name": "l2c", "config.cache.router": "auto", "config.cache.interval": 2}) == "l2c"
    assert method_label({"config.cache.name": "l2c", "config.cache.interval": 3}) == "l2c interval=3"
    assert method_label({"config.cache.name": "none"}) == "uncached"


def test_a_failed_point_gives_its_one_line_reason():
    assert point_line(FAILED) == ("failed      DiT-toy NFE 3 fora: RunConfigError: cache.interval=1 caches nothing"
                                  "  (dit-fora-3)")


def test_sweep_table_groups_by_model_puts_the_baseline_first_and_lists_failures():
    text = sweep_table([UVIT, FAILED, L2C, BASE], results_dir="res", wandb_offline=True, missing=["7"],
                       started="2026-12-05T11:00:00+00:00")
    lines = text.splitlines()
    assert lines[0] == "Sweep summary: 3 ok (3 skipped: an ok row existed), 1 not ok, 1 without a row"
    dit = lines.index("DiT-toy")
    assert lines[dit + 1].split()[:3] == ["method", "NFE", "speedup"]
    assert lines[dit + 2].split()[:2] == ["uncached", "20"] and "1 (reference)" in lines[dit + 2]  # baseline first
    assert lines[dit + 3].split()[:3] == ["l2c", "20", "1.42x"] and "1.48x" in lines[dit + 3]
    assert lines.index("U-ViT-toy") > dit
    failures = lines.index("Not ok:")
    assert "failed" in lines[failures + 1] and "caches nothing" in lines[failures + 1]
    assert lines[failures + 2] == "        use cache.interval=2"  # a multi-line reason, in full
    assert "no row for job 7" in lines[failures + 3]
    assert "python -m analysis.report --results res" in text and "wandb sync res/wandb/offline-run-*" in text
    # a fresh sweep: nothing skipped, no W&B line without W&B
    fresh = sweep_table([L2C], results_dir="res", started="2026-12-05T09:00:00+00:00")
    assert fresh.splitlines()[0] == "Sweep summary: 1 ok, 0 not ok" and "wandb sync" not in fresh


def test_sweep_rows_finds_each_jobs_row_and_the_jobs_without_one(tmp_path):
    results, sweep = tmp_path / "results", tmp_path / "sweep"
    for job, r in (("0", L2C), ("1", BASE)):
        write_row(results, r["run_id"], r)
        write_run_id(sweep / job, r["run_id"])
    (sweep / "2").mkdir()  # a job that died before writing its row
    (sweep / ".submitit").mkdir()  # launcher folders are not jobs
    rows, missing = sweep_rows(sweep, results)
    assert [r["run_id"] for r in rows] == ["dit-l2c-20", "dit-none-20"] and missing == ["2"]


@pytest.mark.parametrize("task, size", [(["+sweep=claims", "results_dir=x"], 42), (["model=dit", "+sweep=claims"], 21),
                                        (["model=dit,uvit", "steps=10,20,50"], 6), (["steps=20"], 1)])
def test_sweep_size_counts_the_sweep_files_points_and_the_command_line_wins(task, size):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from l2c_bench.config import register_configs
    from l2c_bench.runs.summary import sweep_size

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[o for o in task if o.startswith("+sweep")], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = task
    assert sweep_size(cfg) == size


@pytest.mark.slow
def test_a_local_sweep_prints_one_line_per_point_and_the_summary_with_its_failure(tmp_path):
    """The local launcher end to end: two toy points and one that fails (U-ViT at an odd NFE)."""
    cmd = [sys.executable, "-m", "l2c_bench.run", "-m", "model=dit,uvit", "steps=2,3", "cache=none",
           f"results_dir={tmp_path}", "tracker=none", "metrics.num_samples=4", "metrics.batch_size=4",
           "metrics.timing_batch=1", "metrics.timing_repeats=6", "metrics.timing_warmup=0",
           "metrics.reference_samples=40", "metrics.grid_samples=2", "metrics.converged_nfe=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = load_results(tmp_path)
    assert sorted(rows.status) == ["failed", "ok", "ok", "ok"]
    summary = proc.stdout[proc.stdout.index("Sweep summary:"):]
    assert summary.splitlines()[0] == "Sweep summary: 3 ok, 1 not ok"
    assert "U-ViT-toy NFE 3 uncached: " in summary and "odd" in summary  # the failure and its reason
    for run_id in rows.run_id:
        assert run_id in summary
    assert summary.index("DiT-toy") < summary.index("U-ViT-toy") < summary.index("Not ok:")
    assert "image PSNR vs converged" in summary and "ms [" in summary  # quality and latency with intervals
    # the per-point lines (log, stderr), not raw dicts
    output = proc.stdout + proc.stderr
    assert output.count("DiT-toy NFE") == 2 and "{'nfe'" not in output
    assert "point 1/4, " in output and "point 4/4, " in output and " left" in output  # progress across the sweep
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert "3 ok (3 skipped: an ok row existed), 1 not ok" in again.stdout


def test_the_estimate_left_ignores_points_skipped_as_done(monkeypatch, caplog):
    """Two skipped points (0.1 s) then one that ran 60 s: 3 points left at 60 s each."""
    import logging
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from l2c_bench.runs import summary

    clock = iter([0.0, 0.0, 0.1, 0.2, 60.2])  # multirun start, then each job's start
    monkeypatch.setattr(summary, "time", SimpleNamespace(time=lambda: next(clock)))  # this module's clock only
    callback = summary.SweepSummary()
    monkeypatch.setattr(summary, "sweep_size", lambda config: 6)
    callback.on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": "d"}}}))
    with caplog.at_level(logging.INFO, logger="l2c_bench.runs.summary"):
        for num in range(4):
            callback.on_job_start(OmegaConf.create({"hydra": {"job": {"num": num}}}))
    assert [r.getMessage() for r in caplog.records] == [
        "point 1/6, 0s elapsed", "point 2/6, 0s elapsed", "point 3/6, 0s elapsed",
        "point 4/6, 1m00s elapsed, about 3m00s left"]
