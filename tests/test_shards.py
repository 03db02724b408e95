"""Sharded generation: whole-batch shards, identical metrics for any split, lost shards redone alone."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import compose_config, stored_references

from l2c_bench.records import read_row
from l2c_bench.run import run_point
from l2c_bench.runs.prepare import prepare
from l2c_bench.runs.sample import sample_part
from l2c_bench.runs.shards import Shard, join_parts, load_shards, sample_range, shard_path

SMALL = ["tracker=none", "metrics.converged_nfe=0", "cache=fora", "steps=4", "metrics.num_samples=12", "metrics.batch_size=4",
         "metrics.timing_batch=2", "metrics.timing_repeats=1", "metrics.timing_warmup=0",
         "metrics.reference_samples=40", "metrics.grid_samples=6"]
SCORES = ("fid", "kid", "is", "is_std", "precision", "recall", "on_class_rate", "on_class_rate_per_class",
          "class_flip_rate", "paired_latent_mse", "paired_latent_psnr_db", "paired_image_mse", "paired_image_psnr_db",
          "cached_ratio", "macs_g", "num_samples")


def config(results_dir, *overrides):
    return compose_config(results_dir, *SMALL, *overrides)


def test_shards_are_whole_contiguous_batches():
    assert [sample_range(10, 4, Shard(k, 3)) for k in range(3)] == [range(0, 4), range(4, 8), range(8, 10)]
    assert [sample_range(20, 4, Shard(k, 2)) for k in range(2)] == [range(0, 8), range(8, 20)]
    for n, b, c in [(100, 7, 5), (12, 4, 3), (5, 5, 1)]:
        parts = [sample_range(n, b, Shard(k, c)) for k in range(c)]
        assert [i for r in parts for i in r] == list(range(n))
        assert all(r.start % b == 0 for r in parts)
    with pytest.raises(ValueError, match="exceeds the run's 3 batches"):
        sample_range(12, 4, Shard(0, 4))
    with pytest.raises(ValueError, match="shard.index=3"):
        Shard(3, 3)


@pytest.mark.slow
def test_three_shards_give_the_unsharded_features_and_metrics(tmp_path):
    whole = run_point(config(tmp_path / "one"))
    assert whole["status"] == "ok", whole.get("error")
    outcomes = [run_point(config(tmp_path / "three", f"shard.index={k}", "shard.count=3")) for k in range(3)]
    assert [o["status"] for o in outcomes[:2]] == ["shard", "shard"]  # waiting for the others
    sharded = outcomes[2]
    assert sharded["status"] == "ok", sharded.get("error")
    assert sharded["run_id"] == whole["run_id"]  # the split is not part of the run's identity
    assert sharded["metrics.shards"] == 3 and whole["metrics.shards"] == 1
    for key in SCORES:
        assert sharded[f"metrics.{key}"] == whole[f"metrics.{key}"], key
    assert 0 < whole["metrics.paired_latent_mse"] and whole["metrics.fid"] > 0 and 1 <= whole["metrics.is"] <= 10
    assert 0 <= whole["metrics.precision"] <= 1 and 0 <= whole["metrics.recall"] <= 1 and whole["metrics.sfid"] is None
    # the per-sample statistics themselves, bit for bit
    point = prepare(config(tmp_path / "one"))
    full = sample_part(point, range(12), progress=False)
    joined = join_parts(load_shards(tmp_path / "three" / whole["run_id"], 3))
    for key in ("index", "labels", "features", "logits", "reference_logits", "latent_se", "image_se", "grid"):
        assert torch.equal(full[key], joined[key]), key


@pytest.mark.slow
def test_a_lost_shard_is_recomputed_alone(tmp_path):
    for k in range(3):
        run_point(config(tmp_path, f"shard.index={k}", "shard.count=3"))
    run_id = run_point(config(tmp_path, "shard.index=0", "shard.count=3"))["run_id"]  # ok row: skipped
    first = read_row(tmp_path, run_id)
    run_dir = tmp_path / run_id
    (run_dir / "result.json").unlink()
    shard_path(run_dir, Shard(1, 3)).unlink()
    kept = {k: shard_path(run_dir, Shard(k, 3)).stat().st_mtime_ns for k in (0, 2)}
    # relaunching the sweep: shard 0's job finds its file and waits; shard 1's job redoes shard 1, then scores
    assert run_point(config(tmp_path, "shard.index=0", "shard.count=3"))["status"] == "shard"
    again = run_point(config(tmp_path, "shard.index=1", "shard.count=3"))
    assert again["status"] == "ok", again.get("error")
    assert {k: shard_path(run_dir, Shard(k, 3)).stat().st_mtime_ns for k in (0, 2)} == kept
    for key in SCORES:
        assert again[f"metrics.{key}"] == first[f"metrics.{key}"], key


@pytest.mark.slow
def test_torchrun_ranks_each_generate_one_shard(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run([*torchrun, "-m", "l2c_bench.run", f"results_dir={tmp_path}", "device=cpu", *SMALL],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(tmp_path.glob("*/result.json"))
    assert len(rows) == 1
    run_dir = rows[0].parent
    assert sorted(p.name for p in (run_dir / "shards").glob("*.pt")) == ["000-of-002.pt", "001-of-002.pt"]
    row = read_row(tmp_path, run_dir.name)
    assert row["status"] == "ok" and row["metrics.shards"] == 2
    whole = run_point(config(tmp_path / "one"))
    for key in SCORES:
        assert row[f"metrics.{key}"] == whole[f"metrics.{key}"], key


@pytest.mark.slow
def test_uncached_reference_is_sampled_once_per_batch_and_reused(tmp_path):
    shared = f"reference_dir={tmp_path / 'refs'}"
    first = run_point(config(tmp_path, shared))  # fora: samples the uncached reference, 3 batches of 4
    stored = [path for _, _, path in stored_references(tmp_path / "refs", "uncached")]
    assert len(stored) == 12  # one file per sample
    mtimes = [p.stat().st_mtime_ns for p in stored]
    again = run_point(config(tmp_path / "elsewhere", shared, "force=true"))  # read back in a new folder, images decoded again
    for key in ("paired_latent_mse", "paired_image_mse", "class_flip_rate", "fid"):
        assert again[f"metrics.{key}"] == first[f"metrics.{key}"], key
    other = run_point(config(tmp_path, shared, "cache=heuristic", "cache.ratio=0.25"))  # another method, same seeds
    assert other["status"] == "ok" and other["metrics.paired_latent_mse"] > 0
    assert [path for _, _, path in stored_references(tmp_path / "refs", "uncached")] == stored
    assert [p.stat().st_mtime_ns for p in stored] == mtimes
    run_point(config(tmp_path, shared, "cache=heuristic", "cache.ratio=0.25", "steps=6"))  # other NFE: its own reference
    assert len(stored_references(tmp_path / "refs", "uncached")) == 24
