"""Quality against the converged sampler (l2c_bench/metrics/converged.py): the reference scores itself
perfectly, is sampled once per sweep, gives the same numbers for any shard split, and bad values
of metrics.converged_nfe fail before compute naming the key."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from conftest import compose_config, stored_references

from l2c_bench.metrics.converged import TOY_PRIMARY_QUALITY
from l2c_bench.metrics.quality import kid, paired_kid
from l2c_bench.models.loading import RunConfigError
from l2c_bench.records import read_row
from l2c_bench.run import run_point
from l2c_bench.runs.prepare import describe, validate
from l2c_bench.runs.sample import REFERENCE_FORMAT
from l2c_bench.studies.quality_axis import separated

CONVERGED_NFE = 8  # tiny: the reference costs CONVERGED_NFE evaluations per sample
FAST = ["tracker=none", "cache=none", "metrics.num_samples=8", "metrics.batch_size=4", "metrics.timing_batch=2",
        "metrics.timing_repeats=1", "metrics.timing_warmup=0", "metrics.reference_samples=40",
        "metrics.grid_samples=4", f"metrics.converged_nfe={CONVERGED_NFE}"]
SCORES = ("converged_latent_mse", "converged_latent_psnr_db", "converged_latent_peak_to_peak", "converged_image_mse",
          "converged_image_psnr_db", "fid_vs_converged", "kid_vs_converged")


def config(results_dir, *overrides):
    return compose_config(results_dir, *FAST, *overrides)


def test_on_by_default_at_toy_scale_only():
    assert compose_config("results").metrics.converged_nfe == 250
    assert compose_config("results", "model=uvit").metrics.converged_nfe == 250  # DPM-Solver-2 takes an even NFE
    assert compose_config("results", "scale=paper").metrics.converged_nfe == 0
    assert compose_config("results", "scale=paper", "metrics.converged_nfe=100").metrics.converged_nfe == 100


@pytest.mark.parametrize("overrides,message", [
    (["model=uvit", "steps=10", "metrics.converged_nfe=251"], "metrics.converged_nfe=251: .*odd"),
    (["steps=20", "metrics.converged_nfe=10"], "metrics.converged_nfe=10 is below steps=20"),
    (["metrics.converged_nfe=-1"], "metrics.converged_nfe must be >= 0"),
    (["metrics.converged_nfe=1001"], "metrics.converged_nfe=1001: .*1000 training timesteps"),
])
def test_a_bad_converged_nfe_fails_before_compute_naming_the_key(overrides, message):
    with pytest.raises(RunConfigError, match=message):
        validate(compose_config("results", "tracker=none", "cache=none", *overrides))
    validate(compose_config("results", "tracker=none", "cache=none", "metrics.converged_nfe=0", *overrides[:-1]))


def test_paired_kid_is_zero_on_identical_sets_where_kid_is_biased_low():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16))
    assert paired_kid(x, x) == 0.0
    assert kid(x, x) < -1e-3  # clean-fid's estimator keeps the paired cross terms k(x_i, x_i)
    y = rng.normal(size=(64, 16)) + 1.0  # unpaired, shifted: both estimators agree
    assert paired_kid(x, y) == pytest.approx(kid(x, y), rel=0.05) and paired_kid(x, y) > 0.1
    assert 0 < paired_kid(x, x + 0.1 * rng.normal(size=x.shape)) < paired_kid(x, x + 0.5 * rng.normal(size=x.shape))


def test_separated_means_pairwise_disjoint():
    assert separated([(3, 4), (0, 1), (1.5, 2)])
    assert not separated([(0, 1), (0.9, 2), (3, 4)])
    assert not separated([(0, 1), (None, None), (3, 4)])  # an unknown interval separates nothing


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dit", "uvit"])
def test_the_reference_at_its_own_nfe_scores_itself_perfectly(tmp_path, model):
    same = run_point(config(tmp_path, f"model={model}", f"steps={CONVERGED_NFE}"))
    assert same["status"] == "ok", same.get("error")
    assert same["metrics.converged_nfe"] == CONVERGED_NFE
    assert same["metrics.converged_sampler"] == {"dit": "ddim", "uvit": "dpm_solver2"}[model]
    assert same["metrics.converged_latent_mse"] == 0 and same["metrics.converged_image_mse"] == 0
    assert same["metrics.converged_latent_psnr_db"] == math.inf == same["metrics.converged_image_psnr_db"]
    assert abs(same["metrics.fid_vs_converged"]) < 1e-3 and abs(same["metrics.kid_vs_converged"]) < 1e-9
    fewer = run_point(config(tmp_path, f"model={model}", "steps=4"))
    assert fewer["status"] == "ok", fewer.get("error")
    assert 0 < fewer["metrics.converged_latent_mse"] and math.isfinite(fewer["metrics.converged_latent_psnr_db"])
    assert fewer["metrics.fid_vs_converged"] > 1e-3 and fewer["metrics.primary_quality"] == TOY_PRIMARY_QUALITY
    for key in SCORES[:2] + SCORES[3:]:  # 95% intervals (metrics/intervals.py) around each score
        assert fewer[f"metrics.{key}_ci_low"] <= fewer[f"metrics.{key}"] <= fewer[f"metrics.{key}_ci_high"], key
    stored = read_row(tmp_path, same["run_id"])  # JSON: inf is written as null
    assert {f"metrics.{k}" for k in (*SCORES, "converged_nfe", "primary_quality")} <= set(stored)
    assert stored["metrics.converged_latent_psnr_db"] is None and stored["metrics.converged_latent_mse"] == 0


@pytest.mark.slow
def test_the_reference_is_sampled_once_for_every_point_and_method_of_a_sweep(tmp_path, monkeypatch):
    calls = []  # NFE of every sampling call the runs make
    from l2c_bench.runs import prepare as prepare_step  # the step that samples (Point.sample)

    original = prepare_step.generate
    monkeypatch.setattr(prepare_step, "generate", lambda model, **kw: calls.append(kw["steps"]) or original(model, **kw))
    shared = f"reference_dir={tmp_path / 'refs'}"
    rows = [run_point(config(tmp_path, shared, *point)) for point in (["steps=4"], ["steps=6"], ["steps=4", "cache=fora"])]
    assert [r["status"] for r in rows] == ["ok"] * 3, [r.get("error") for r in rows]
    assert calls.count(CONVERGED_NFE) == 2  # the two batches of the first point; then read back
    stored = stored_references(tmp_path / "refs", "converged")
    assert [identity["seed"] for identity, _, _ in stored] == list(range(8))  # one file per sample
    # cached or not, the same samples: the same reference files, each run's own distance to them
    assert rows[2]["metrics.converged_latent_peak_to_peak"] == rows[0]["metrics.converged_latent_peak_to_peak"]
    assert 0 < rows[1]["metrics.converged_latent_mse"] < rows[0]["metrics.converged_latent_mse"]
    assert rows[2]["metrics.converged_latent_mse"] != rows[0]["metrics.converged_latent_mse"]
    # each stored sample lives under the hash of what determines it (a twin: also its batch's size)
    cfg = config(tmp_path, "steps=4", "cache=fora")
    twins = stored_references(tmp_path / "refs", "uncached")
    assert len(twins) == 8
    for seed in range(8):
        identity = {"format": REFERENCE_FORMAT, "model": _toy_sha(cfg),
                    "arch": "DiT-toy", "overrides": {}, "sampler": "ddim", "nfe": 4,
                    "guidance": [cfg.model.guidance_scale, cfg.model.guidance_channels], "eta": 0.0,
                    "seed": seed, "label": seed % 10, "batch": 4,
                    "device": "cpu", "dtype": "fp32", "tf32": False, "compile": False}
        key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
        assert (tmp_path / "refs" / "uncached" / key[:2] / f"{key}.pt").is_file()
    # a second sweep into a new results folder, with another batch size: nothing sampled at the
    # converged NFE (shared across folders and batch sizes); the twins, keyed by batch size, again
    calls.clear()
    again = run_point(config(tmp_path / "second", shared, "steps=4", "cache=fora", "metrics.batch_size=8"))
    assert again["status"] == "ok" and CONVERGED_NFE not in calls and calls.count(4) >= 1
    assert again["metrics.converged_latent_mse"] == pytest.approx(rows[2]["metrics.converged_latent_mse"], rel=1e-6)
    assert len(stored_references(tmp_path / "refs", "converged")) == 8


def _toy_sha(cfg) -> str:
    from l2c_bench.models.loading import checkpoint_path, file_sha256

    return file_sha256(checkpoint_path(describe(cfg).model))


@pytest.mark.slow
def test_shards_give_the_unsharded_numbers(tmp_path):
    whole = run_point(config(tmp_path / "one", "steps=4", "cache=fora"))
    outcomes = [run_point(config(tmp_path / "two", "steps=4", "cache=fora", f"shard.index={k}", "shard.count=2"))
                for k in range(2)]
    assert whole["status"] == "ok" and outcomes[1]["status"] == "ok", (whole.get("error"), outcomes[1].get("error"))
    for key in (*SCORES, "primary_quality", *(f"{k}_ci_{end}" for k in SCORES[:2] + SCORES[3:] for end in ("low", "high"))):
        assert outcomes[1][f"metrics.{key}"] == whole[f"metrics.{key}"], key


@pytest.mark.slow
def test_off_leaves_only_the_switch_and_a_stochastic_sampler_gets_no_paired_scores(tmp_path):
    off = run_point(config(tmp_path, "steps=4", "metrics.converged_nfe=0", f"reference_dir={tmp_path / 'refs'}"))
    assert off["status"] == "ok", off.get("error")
    assert off["metrics.converged_nfe"] == 0 and off["metrics.primary_quality"] == "fid"
    assert not any(f"metrics.{k}" in off for k in SCORES)
    assert not (tmp_path / "refs" / "converged").exists()
    ddpm = run_point(config(tmp_path, "steps=4", "sampler=ddpm"))
    assert ddpm["status"] == "ok", ddpm.get("error")
    assert ddpm["metrics.converged_latent_psnr_db"] is None and "stochastic" in ddpm["metrics.converged_note"]
    assert ddpm["metrics.fid_vs_converged"] > 0 and ddpm["metrics.primary_quality"] == "fid_vs_converged"
    assert ddpm.get("metrics.converged_latent_psnr_db_ci_low") is None
    torch.testing.assert_close(ddpm["metrics.converged_latent_peak_to_peak"],
                               run_point(config(tmp_path, "steps=4"))["metrics.converged_latent_peak_to_peak"])
