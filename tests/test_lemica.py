"""LeMiCa: the lexicographic minimax path by hand and against brute force, the calibrated
schedule in the engine on both toy families, and a run's row."""

import itertools
import random

import pytest
import torch
from conftest import ROW_ONLY, compose_config
from test_caching import perturbed

from l2c_bench import generate
from l2c_bench.caching import CacheConfigError, make_cache
from l2c_bench.caching.methods.lemica.calibration import schedule_plan, segment_errors, segments
from l2c_bench.caching.methods.lemica.search import lexminimax_path
from l2c_bench.engine import FixedPlan
from l2c_bench.run import run_point


def test_lexminimax_path_by_hand():
    # 5 evaluations, 3 computed: 0-1-4 costs {0, .25}, 0-2-4 {.2, .2}, 0-3-4 {.25, 0}. The smallest
    # worst segment wins (0-2-4), though its sum (.4) is the largest
    edges = {(1, 4): 0.25, (0, 2): 0.2, (2, 4): 0.2, (0, 3): 0.25}
    assert lexminimax_path(edges, 5, 3) == (0, 2, 4)
    # worst segments tied at .25: the second worst decides, 0-1-4 ({.25, .1}) loses to 0-3-4 ({.25, 0})
    edges = {(1, 4): 0.25, (0, 1): 0.1, (0, 2): 0.3, (2, 4): 0.0, (0, 3): 0.25}
    assert lexminimax_path(edges, 5, 3) == (0, 3, 4)
    assert lexminimax_path({}, 4, 4) == (0, 1, 2, 3)  # every evaluation computes
    with pytest.raises(ValueError, match="no schedule"):
        lexminimax_path({(0, 2): 0.1}, 5, 2)  # 0 -> 4 in one segment is not an edge


@pytest.mark.parametrize("seed", range(5))
def test_lexminimax_path_is_the_brute_force_optimum(seed):
    rng = random.Random(seed)
    nfe, budget, reuse = 9, 4, 3
    edges = {e: rng.choice([0.1, 0.2, 0.3, 0.4, 0.5]) for e in segments(nfe, reuse)}  # ties on purpose
    cost = {(i, i + 1): 0.0 for i in range(nfe - 1)} | edges

    def key(path):
        return sorted((cost[(a, b)] for a, b in zip(path, path[1:], strict=False)), reverse=True)

    paths = [(0, *m, nfe - 1) for m in itertools.combinations(range(1, nfe - 1), budget - 2)]
    feasible = [p for p in paths if all((a, b) in cost for a, b in zip(p, p[1:], strict=False))]
    best = min(key(p) for p in feasible)
    assert key(lexminimax_path(edges, nfe, budget)) == best


@pytest.mark.parametrize("name,sampler,scale", [("DiT-toy", "ddim", 1.5), ("U-ViT-toy", "dpm_solver2", 0.4)])
def test_lemica_schedule_in_the_engine(name, sampler, scale):
    model = perturbed(name)
    kw = dict(labels=[0, 1], seeds=[0, 1], steps=6, sampler=sampler, guidance_scale=1.0)
    errors = segment_errors(model, sampler=sampler, nfe=6, max_reuse=2)
    assert sorted(errors) == segments(6, 2) and all(e > 0 for e in errors.values())
    # a segment's error is what reusing it alone does to the final latents (checked for one)
    alone = generate(model, cache=FixedPlan(schedule_plan(6, model.num_blocks, [0, 1, 4, 5]), "x"), **kw).latents
    plain = generate(model, **kw).latents
    assert errors[(1, 4)] == pytest.approx(float((alone.double() - plain.double()).abs().mean()
                                                 / plain.double().abs().mean()), rel=1e-6)
    method = make_cache("lemica", budget=4, max_reuse=2).calibrated(model, sampler, 6, errors)
    path = lexminimax_path(errors, 6, 4)
    out = generate(model, cache=method, **{**kw, "guidance_scale": scale})
    assert out.schedule[:, 0, 0].tolist() == [n in path for n in range(6)] and len(path) == 4
    assert (out.schedule == out.schedule[:, :1, :1]).all()  # whole evaluations reuse
    assert not torch.equal(out.latents, generate(model, **{**kw, "guidance_scale": scale}).latents)
    full = make_cache("lemica", budget=6, max_reuse=2).calibrated(model, sampler, 6, errors)
    assert generate(model, cache=full, **kw).schedule.all()  # its budget computes every step: a valid plan
    with pytest.raises(CacheConfigError, match="cache.budget"):
        make_cache("lemica", budget=1)


@pytest.mark.slow
@pytest.mark.parametrize("model", [("model=dit",), ("model=diffusers", "model.diffusers_class=DiTTransformer2DModel")],
                         ids=["dit-toy", "dit-zoo"])
def test_lemica_runs_write_ok_rows(model, tmp_path):
    # 6 evaluations, budget 3 (half), at most 2 reused in a row: 9 calibration segments, paths 0-2-5 and 0-3-5
    row = run_point(compose_config(tmp_path, *ROW_ONLY, "steps=6", *model, "cache=lemica", "cache.max_reuse=2"))
    assert row["status"] == "ok", row.get("error")
    schedule = row["metrics.lemica_schedule"]
    assert len(schedule) == 3 and schedule[0] == 0 and schedule[-1] == 5  # half of 6, first and last
    assert row["metrics.reused_ratio_all"] == pytest.approx(0.5) and row["metrics.macs_speedup"] > 1
