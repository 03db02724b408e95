"""Faults a sweep meets: no CUDA where device=cuda, stale or corrupt shard files, two jobs learning one router."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import ROOT, compose_config

from l2c_bench.caching.methods.l2c.learning.store import read_metadata
from l2c_bench.records import load_results, read_row
from l2c_bench.run import run_point
from l2c_bench.runs.shards import Shard, shard_path

SHARDED = ["tracker=none", "metrics.converged_nfe=0", "cache=fora", "steps=4", "metrics.num_samples=8", "metrics.batch_size=4",
           "metrics.timing_batch=1", "metrics.timing_repeats=1", "metrics.timing_warmup=0",
           "metrics.reference_samples=40", "metrics.grid_samples=2", "shard.count=2"]
SCORES = ("fid", "kid", "on_class_rate", "class_flip_rate", "paired_latent_mse", "paired_image_mse", "cached_ratio")


def sharded(results_dir, index, *overrides):
    return compose_config(results_dir, *SHARDED, f"shard.index={index}", *overrides)


def test_cuda_requested_without_cuda_is_a_failed_row_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine that has a GPU
    row = run_point(compose_config(tmp_path, "tracker=none", "cache=none", "steps=2", "device=cuda"))
    assert row["status"] == "failed"
    assert row["error"] == "ValueError: device='cuda' but CUDA is not available; use device=cpu or auto"
    stored = read_row(tmp_path, row["run_id"])
    assert stored["status"] == "failed" and stored["config.device"] == "cuda"
    assert not any(k.startswith("metrics.") for k in stored)  # nothing was measured
    assert not (tmp_path / row["run_id"] / "samples.png").exists()


@pytest.mark.parametrize("model, method, evaluation", [("dit", "none", 2), ("uvit", "fora", 2)])
def test_non_finite_samples_fail_the_point_naming_the_evaluation_method_and_dtype(tmp_path, model, method, evaluation):
    """A huge guidance scale overflows the latents by the second evaluation: the row is
    failed with where and under what it happened, and no metric is computed from the samples."""
    row = run_point(compose_config(tmp_path, "tracker=none", f"model={model}", f"cache={method}", "steps=4",
                                   "model.guidance_scale=1e38", "metrics.num_samples=4", "metrics.batch_size=2",
                                   "metrics.converged_nfe=0", "metrics.grid_samples=2"))
    assert row["status"] == "failed"
    sampler = {"dit": "ddim", "uvit": "dpm_solver2"}[model]
    assert row["error"].startswith(f"NonFiniteSamples: non-finite latents at evaluation {evaluation} of 4 "
                                   f"({sampler}, {'uncached' if method == 'none' else 'cache=fora'}, float32 weights; "
                                   "samples 0..1, guidance_scale=1e+38)"), row["error"]
    stored = read_row(tmp_path, row["run_id"])
    assert not any(k.startswith("metrics.") for k in stored)  # nothing was computed from them
    assert not (tmp_path / row["run_id"] / "samples.png").exists()


def test_a_fault_in_a_later_evaluation_is_located(monkeypatch):
    """The evaluation named is the first non-finite one, not always the first (NaN injected at 3 of 5)."""
    from l2c_bench import generate
    from l2c_bench.models import build_model
    from l2c_bench.pipeline import NonFiniteSamples
    from l2c_bench.sampling import guidance

    model = build_model("DiT-toy", device="cpu").eval()
    calls = {"n": 0}
    original = guidance.GuidedDenoiser.__call__

    def poisoned(self, x, t):
        calls["n"] += 1
        out = original(self, x, t)
        return out * float("nan") if calls["n"] % 5 == 3 else out  # evaluation 3 of each 5-step pass

    monkeypatch.setattr(guidance.GuidedDenoiser, "__call__", poisoned)
    with pytest.raises(NonFiniteSamples, match=r"at evaluation 3 of 5 \(ddim, uncached, float32 weights"):
        generate(model, labels=[0, 1], seeds=[0, 1], steps=5, sampler="ddim", guidance_scale=1.5)


@pytest.mark.parametrize("timeout", ["0", "-5"])
def test_a_wait_wandb_cannot_honour_fails_before_any_compute_naming_the_key(tmp_path, monkeypatch, timeout):
    from l2c_bench import run

    monkeypatch.setattr(run, "prepare", lambda cfg: pytest.fail("computed before checking tracker.init_timeout_s"))
    with pytest.raises(ValueError, match=rf"tracker.init_timeout_s must be > 0 seconds .*got {float(timeout)}"):
        run_point(compose_config(tmp_path, "tracker=wandb", f"tracker.init_timeout_s={timeout}", "cache=none"))
    assert not list(tmp_path.rglob("result.json"))


@pytest.mark.slow
def test_unreachable_wandb_costs_one_bounded_wait_then_the_sweep_logs_offline(tmp_path):
    """tracker.mode=online against a server that accepts connections and never answers (a compute
    node's firewall): the first point waits tracker.init_timeout_s, the second does not wait at
    all, both rows are written and both runs are kept offline for `wandb sync`."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
    env = {**os.environ, "WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{server.getsockname()[1]}"}
    cmd = [sys.executable, "-m", "l2c_bench.run", "-m", "seed=0,1", f"results_dir={tmp_path}", "tracker=wandb",
           "tracker.mode=online", "tracker.init_timeout_s=3", "cache=none", "steps=2", "metrics.num_samples=2",
           "metrics.batch_size=2", "metrics.timing_batch=1", "metrics.timing_repeats=1", "metrics.timing_warmup=0",
           "metrics.fid=false", "metrics.converged_nfe=0", "metrics.grid_samples=2"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    finally:
        server.close()
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert output.count("W&B unreachable (") == 1 and output.count("W&B was unreachable earlier in this sweep") == 1
    rows = load_results(tmp_path)
    assert rows.status.tolist() == ["ok", "ok"]
    assert all("offline-run" in d for d in rows["provenance.wandb_dir"]), rows["provenance.wandb_dir"].tolist()
    assert len(list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))) == 2  # kept for a later upload
    assert f"wandb sync {tmp_path}/wandb/offline-run-*" in output
    assert elapsed < 120, elapsed  # unbounded, two points waited W&B's 90 s each


def test_a_results_dir_that_cannot_hold_rows_fails_before_any_compute(tmp_path, monkeypatch):
    from l2c_bench import run
    from l2c_bench.records.store import ResultsDirError

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the results folder should be")
    monkeypatch.setattr(run, "prepare", lambda cfg: pytest.fail("computed before checking results_dir"))
    with pytest.raises(ResultsDirError, match=r"results_dir='.*not_a_folder/results' cannot hold result rows "
                                              r"\(NotADirectoryError: Not a directory\)"):
        run_point(compose_config(blocker / "results", "tracker=none", "cache=none", "steps=2"))


def test_a_full_disk_during_the_row_write_leaves_no_partial_row(tmp_path, monkeypatch):
    """ENOSPC while the row is written: the point fails loudly, no result.json and no temp file."""
    import errno
    import pathlib

    real_write_text = pathlib.Path.write_text

    def full(self, data, *args, **kwargs):
        if self.name.startswith(".result.json."):
            real_write_text(self, data[: len(data) // 2])  # half written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(OSError, match="No space left on device"):
        run_point(compose_config(tmp_path, "tracker=none", "cache=none", "steps=2", "metrics.num_samples=2",
                                 "metrics.batch_size=2", "metrics.fid=false", "metrics.converged_nfe=0",
                                 "metrics.timing_batch=1", "metrics.timing_repeats=1", "metrics.grid_samples=2"))
    assert not list(tmp_path.rglob("result.json")) and not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                                   MemoryError()])
def test_out_of_memory_is_a_failed_row_naming_the_batch_size_to_lower(tmp_path, monkeypatch, error):
    from l2c_bench.runs import prepare as prepare_step  # the step that samples (Point.sample)

    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(prepare_step, "generate", exhausted)
    row = run_point(compose_config(tmp_path, "tracker=none", "cache=none", "steps=2", "metrics.batch_size=16",
                                   "metrics.timing_batch=4"))
    assert row["status"] == "failed"
    assert row["error"].startswith(f"{type(error).__name__}: out of memory at metrics.batch_size=16 "
                                   "(timing: metrics.timing_batch=4); peak ")
    assert "MB resident; lower metrics.batch_size" in row["error"]
    assert ("Tried to allocate 20.00 GiB" in row["error"]) == isinstance(error, torch.cuda.OutOfMemoryError)
    assert read_row(tmp_path, row["run_id"])["status"] == "failed"  # the row is written; a sweep goes on


@pytest.mark.slow
def test_sigterm_stops_the_point_cleanly_and_a_relaunch_finishes_it(tmp_path):
    """SIGTERM mid-sampling (what a preemption sends first): the command exits 143 within
    seconds, leaves no row and no temp file, and the same command then writes one ok row."""
    import signal

    # uncached: the relaunch samples once (a cached point also samples its uncached twin)
    cmd = [sys.executable, "-m", "l2c_bench.run", f"results_dir={tmp_path}", "tracker=none", "cache=none",
           "steps=50", "metrics.num_samples=40", "metrics.batch_size=8", "metrics.converged_nfe=0",
           "metrics.timing_batch=1", "metrics.timing_repeats=1", "metrics.fid=false", "metrics.grid_samples=2",
           "metrics.interval_resamples=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for _ in range(600):  # Hydra makes its output folder once the config is composed; then the model loads
        if (tmp_path / "_hydra").exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    time.sleep(4)  # into sampling (40 samples x 50 NFE take about 10 s here)
    assert proc.poll() is None, "the point finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    start = time.perf_counter()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and time.perf_counter() - start < 10, err[-2000:]
    assert "SIGTERM: stopping" in out + err  # Hydra's log goes to stdout
    assert not list(tmp_path.rglob("result.json")) and not list(tmp_path.rglob("*.tmp"))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_results(tmp_path).status.tolist() == ["ok"]


def _shard_tensors(run_dir) -> list[dict]:
    return [torch.load(shard_path(run_dir, Shard(k, 2)), weights_only=True) for k in range(2)]


@pytest.mark.slow
def test_force_regenerates_old_shard_files_instead_of_rescoring_them(tmp_path):
    assert run_point(sharded(tmp_path, 0))["status"] == "shard"
    first = run_point(sharded(tmp_path, 1))
    assert first["status"] == "ok", first.get("error")
    run_dir = tmp_path / first["run_id"]
    stored = read_row(tmp_path, first["run_id"])
    fresh = _shard_tensors(run_dir)
    # shards from an earlier version of the code: other features and errors than today's code makes
    for k, part in enumerate(fresh):
        torch.save({**part, "features": part["features"] * 2, "latent_se": part["latent_se"] + 1},
                   shard_path(run_dir, Shard(k, 2)))
    assert run_point(sharded(tmp_path, 0)) == stored  # without force: the ok row stands, nothing is read
    assert run_point(sharded(tmp_path, 0, "force=true"))["status"] == "ok"  # scored with shard 1 still old
    forced = run_point(sharded(tmp_path, 1, "force=true"))  # the last forced job scores only new shards
    assert forced["status"] == "ok", forced.get("error")
    for key in SCORES:
        assert forced[f"metrics.{key}"] == first[f"metrics.{key}"], key
    for old, new in zip(fresh, _shard_tensors(run_dir), strict=True):  # regenerated: today's values again
        for key in ("features", "latent_se", "logits", "labels"):
            assert torch.equal(old[key], new[key]), key
    assert read_row(tmp_path, first["run_id"]) == json.loads(json.dumps(forced, default=str))


@pytest.mark.slow
def test_a_corrupt_shard_fails_the_row_naming_the_file_and_force_repairs_it(tmp_path):
    waiting = run_point(sharded(tmp_path, 0))
    assert waiting["status"] == "shard"
    broken = shard_path(tmp_path / waiting["run_id"], Shard(0, 2))
    original = torch.load(broken, weights_only=True)
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # a copy cut short
    failed = run_point(sharded(tmp_path, 1))  # the job completing the set cannot read shard 0
    assert failed["status"] == "failed"
    assert str(broken) in failed["error"] and "shard.index=0 shard.count=2 force=true" in failed["error"]
    assert read_row(tmp_path, failed["run_id"])["status"] == "failed"
    repaired = run_point(sharded(tmp_path, 0, "force=true"))  # what the message says to run
    assert repaired["status"] == "ok", repaired.get("error")
    assert repaired["metrics.num_samples"] == 8 and repaired["metrics.fid"] > 0
    again = torch.load(broken, weights_only=True)
    for key in ("index", "features", "logits", "latent_se", "image_se"):
        assert torch.equal(original[key], again[key]), key
    assert load_results(tmp_path).status.tolist() == ["ok"]


# Runs one L2C point with cache.router=auto in its own process. `_learn` (the training itself) is
# wrapped to record that it ran and, in the first process, to hold the router's lock until the
# second process has asked for the same router; `learn` is wrapped to time the asking and the answer.
RACER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from hydra import compose, initialize_config_dir
    import l2c_bench.caching.methods.l2c.learning.job as job
    import l2c_bench.caching.methods.l2c.method as l2c_method
    from l2c_bench.run import run_point

    signals, name, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    events = {}
    real_learn, real_train = job.learn, job._learn

    def learn(*args, **kwargs):
        events["asked"] = time.time()
        (signals / f"{name}.asked").touch()
        path = real_learn(*args, **kwargs)
        events["answered"] = time.time()
        return path

    def train(*args, **kwargs):
        events["trained"] = True
        (signals / f"{name}.training").touch()
        deadline = time.time() + 120
        while not [p for p in signals.glob("*.asked") if p.name != f"{name}.asked"] and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the other process is now blocked on the lock
        path = real_train(*args, **kwargs)
        events["saved"] = time.time()
        return path

    l2c_method.learn, job._learn = learn, train  # where L2C.prepare calls it, and the training
    with initialize_config_dir(config_dir=str(Path.cwd() / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    row = run_point(cfg)
    print(json.dumps({"events": events, "status": row["status"], "error": row.get("error"),
                      "router_file": row.get("metrics.router_file")}))
""")


@pytest.mark.slow
def test_two_processes_needing_one_router_train_it_once(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    signals = tmp_path / "signals"
    signals.mkdir()
    common = [f"results_dir={tmp_path / 'results'}", "tracker=none", "cache=l2c", "cache.router=auto", "steps=6",
              "router.iterations=4", "router.batch_size=4", "metrics.num_samples=2", "metrics.batch_size=2",
              "metrics.timing_batch=1", "metrics.timing_repeats=1", "metrics.timing_warmup=0", "metrics.fid=false",
              "metrics.grid_samples=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start(name, *overrides):
        return subprocess.Popen([sys.executable, str(script), str(signals), name, *common, *overrides], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start("first")
    deadline = time.time() + 300
    while not (signals / "first.training").exists():  # the first process holds the lock and trains
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert time.time() < deadline, "the first process never started training"
        time.sleep(0.1)
    second = start("second", "cache.threshold=0.5")  # another point needing the same router
    outcomes = {}
    for name, proc in (("first", first), ("second", second)):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        outcomes[name] = json.loads(out.strip().splitlines()[-1])
    one, two = outcomes["first"], outcomes["second"]
    assert one["status"] == two["status"] == "ok", (one["error"], two["error"])
    assert one["events"].get("trained") and not two["events"].get("trained")  # trained once
    # the second asked while the first was training, and got its answer only once the router was saved
    assert two["events"]["asked"] < one["events"]["saved"] <= two["events"]["answered"]
    routers = sorted((tmp_path / "results" / "_routers").glob("*.pt"))
    assert [p.name for p in routers] == [one["router_file"]] == [two["router_file"]]
    assert read_metadata(routers[0])["iterations_done"] == 4
    rows = load_results(tmp_path / "results")
    assert len(rows) == 2 and rows.status.tolist() == ["ok", "ok"]
    assert set(rows["metrics.router_file"]) == {routers[0].name}
