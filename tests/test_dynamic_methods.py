"""Dynamic caching (fbcache, teacache): decisions by hand, the engine's realised schedule,
TeaCache's calibration artifact, and runs that record what they decided."""

import json

import pytest
import torch
from test_caching import perturbed
from test_router_learning import config

from l2c_bench import generate
from l2c_bench.caching import CacheConfigError, make_cache
from l2c_bench.caching.methods.fbcache import FirstBlockPolicy
from l2c_bench.caching.methods.teacache import TeaCachePolicy
from l2c_bench.caching.methods.teacache.calibration import calibrate
from l2c_bench.caching.methods.teacache.coefficients import load_coefficients
from l2c_bench.metrics.macs import macs
from l2c_bench.run import run_point


def decide_all(policy, values, allowed=True):
    state, out = policy.start(), []
    for n, v in enumerate(values):
        out.append(policy.decide(state, lambda kind, v=v: torch.full((2, 3), float(v)), allowed, n, len(values)))
    return [d for d, _ in out], [None if c is None else round(c, 6) for _, c in out]


def test_first_block_policy_by_hand():
    # residual 1.0 (reference), 1.05 (5% < 8%: reuse, reference kept), 1.1 (10% from 1.0: run,
    # new reference), 1.1 (0%: reuse), 1.3 (18%: run)
    decisions, changes = decide_all(FirstBlockPolicy(0.08), [1.0, 1.05, 1.1, 1.1, 1.3])
    assert decisions == [False, True, False, True, False]
    assert changes == [None, 0.05, 0.1, 0.0, round(0.2 / 1.1, 6)]
    assert decide_all(FirstBlockPolicy(0.08), [1.0, 1.0, 1.0], allowed=False)[0] == [False] * 3


def test_teacache_policy_by_hand():
    # modulated input grows 10% per evaluation; identity rescaling; threshold 0.25: the sum is
    # 0.1 (reuse), 0.2 (reuse), 0.3 (run, reset), 0.1 (reuse), then the last evaluation runs
    values = [1.0, 1.1, 1.21, 1.331, 1.4641, 1.61051]
    decisions, changes = decide_all(TeaCachePolicy(0.25, (1.0, 0.0)), values)
    assert decisions == [False, True, True, False, True, False]
    assert changes[1:] == pytest.approx([0.1] * 5)
    # the rescaling polynomial applies before accumulating: 2x makes every step 0.2
    assert decide_all(TeaCachePolicy(0.25, (2.0, 0.0)), values)[0] == [False, True, False, True, False, False]


@pytest.mark.parametrize("name,sampler,scale,span", [("DiT-toy", "ddim", 1.5, (1, 8)),
                                                      ("U-ViT-toy", "dpm_solver2", 0.4, (1, 8))])
def test_fbcache_records_what_it_decided(name, sampler, scale, span):
    model = perturbed(name)
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=10, sampler=sampler, guidance_scale=scale)
    plain = generate(model, **kw)
    never = generate(model, cache=make_cache("fbcache", threshold=0.0), **kw)
    assert torch.equal(never.latents, plain.latents) and never.schedule.all()  # threshold 0: always runs
    always = generate(model, cache=make_cache("fbcache", threshold=1e9), **kw)
    decisions = always.realised[0]["decisions"]
    assert decisions == [False] + [True] * 9  # the first evaluation fills the cache; all others reuse it
    for n, reused in enumerate(decisions):
        row = always.schedule[n]
        assert row[span[0]:span[1]].any() != reused and row[: span[0]].all() and row[span[1]:].all()
    assert always.cached_ratio == pytest.approx(sum(decisions) * (span[1] - span[0]) / (9 * 9 if name == "U-ViT-toy" else 9 * 8))
    assert macs(model, always.schedule) < macs(model, None, nfe=10)
    assert not torch.equal(always.latents, plain.latents)


def test_teacache_reuses_the_whole_stack_and_always_runs_the_last_evaluation():
    model = perturbed("DiT-toy")
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=10, sampler="ddim", guidance_scale=1.5)
    out = generate(model, cache=make_cache("teacache", threshold=1e9, coefficients=[1.0, 0.0]), **kw)
    decisions = out.realised[0]["decisions"]
    assert decisions == [False] + [True] * 8 + [False]
    assert not out.schedule[1:9].any() and out.schedule[0].all() and out.schedule[9].all()
    with pytest.raises(CacheConfigError, match="resolved by"):
        generate(model, cache=make_cache("teacache"), **kw)


def test_calibration_fits_the_output_change_and_round_trips(tmp_path):
    model = perturbed("DiT-toy")
    content = calibrate(model, sampler="ddim", nfe=8, guidance_scale=1.5, samples=2, degree=2)
    assert len(content["x"]) == len(content["y"]) == 7 and len(content["coefficients"]) == 3
    fit = [sum(c * x ** (2 - i) for i, c in enumerate(content["coefficients"])) for x in content["x"]]
    rmse = (sum((f - y) ** 2 for f, y in zip(fit, content["y"], strict=True)) / 7) ** 0.5
    assert rmse == pytest.approx(content["rmse"], rel=1e-6)
    # least squares: no other quadratic through these points does better (perturb each coefficient)
    for i in range(3):
        bumped = list(content["coefficients"])
        bumped[i] += 1e-3
        worse = [sum(c * x ** (2 - j) for j, c in enumerate(bumped)) for x in content["x"]]
        assert sum((f - y) ** 2 for f, y in zip(worse, content["y"], strict=True)) > rmse ** 2 * 7
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(content))
    assert load_coefficients(path, model=model, sampler="ddim", nfe=8) == tuple(content["coefficients"])
    with pytest.raises(CacheConfigError, match="calibrated for"):
        load_coefficients(path, model=model, sampler="ddim", nfe=10)


TINY = ["steps=8", "metrics.converged_nfe=0", "metrics.num_samples=4", "metrics.batch_size=2", "metrics.timing_batch=2",
        "metrics.timing_repeats=1", "metrics.fid=false", "metrics.grid_samples=2", "calibration.samples=2"]


@pytest.mark.slow
def test_teacache_run_calibrates_once_and_records_its_decisions(tmp_path):
    row = run_point(config(tmp_path, *TINY, "cache=teacache", "cache.threshold=0.3"))
    assert row["status"] == "ok", row.get("error")
    stored = list((tmp_path / "_calibration").glob("*.json"))
    assert [p.name for p in stored] == [row["metrics.calibration_file"]]
    assert row["metrics.host_sync_per_evaluation"] is True
    assert 0 < row["metrics.reused_ratio_all"] < 1 and row["metrics.macs_speedup"] > 1
    saved = torch.load(tmp_path / row["run_id"] / row["metrics.schedule_file"], weights_only=True)
    assert saved["dynamic"] and saved["per_sample"].shape == (4, 8, 8, 2)  # samples, NFE, blocks, branches
    assert 1 - saved["per_sample"].double().mean().item() == pytest.approx(row["metrics.reused_ratio_all"])
    mtime = stored[0].stat().st_mtime_ns
    again = run_point(config(tmp_path, *TINY, "cache=teacache", "cache.threshold=0.5"))
    assert again["status"] == "ok" and again["metrics.calibration_file"] == stored[0].name
    assert stored[0].stat().st_mtime_ns == mtime and again["metrics.reused_ratio_all"] >= row["metrics.reused_ratio_all"]


@pytest.mark.slow
def test_paper_scale_teacache_without_calibration_prints_the_command(tmp_path):
    row = run_point(config(tmp_path, "scale=paper", "model.checkpoint=random", "cache=teacache", "metrics.fid=false",
                           "metrics.num_samples=1", "metrics.batch_size=1"))
    assert row["status"] == "failed" and "python -m l2c_bench.calibrate" in row["error"]


@pytest.mark.slow
def test_calibrate_command_writes_the_artifact_runs_find(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run([sys.executable, "-m", "l2c_bench.calibrate", "steps=8", "calibration.samples=2",
                           f"results_dir={tmp_path}", "tracker=none"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = tmp_path / "_calibration" / proc.stdout.strip().splitlines()[-1].rsplit("/", 1)[-1]
    content = json.loads(path.read_text())
    assert content["nfe"] == 8 and content["samples"] == 2 and len(content["coefficients"]) == 5
    mtime = path.stat().st_mtime_ns
    row = run_point(config(tmp_path, *TINY, "cache=teacache"))
    assert row["status"] == "ok" and row["metrics.calibration_file"] == path.name and path.stat().st_mtime_ns == mtime
