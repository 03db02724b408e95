"""L2C with longer cycles (`cache.interval=k`): schedule, refresh rule, training pairs, identity."""

import pytest
import torch

from l2c_bench.caching import CacheConfigError, l2c_plan, make_cache
from l2c_bench.caching.methods.l2c.learning.pairs import DiTDDIMPairs
from l2c_bench.caching.methods.l2c.learning.store import router_name
from l2c_bench.caching.methods.l2c.learning.trainer import Recipe
from l2c_bench.caching.methods.l2c.pairing import l2c_cache_steps, l2c_cycle
from l2c_bench.engine.core import CacheRun, Plan, UnsupportedCombination
from l2c_bench.engine.rules import REUSE, Refresh
from l2c_bench.records.store import run_key


@pytest.mark.parametrize("nfe", [4, 5, 9, 10, 20, 21, 50])
def test_interval_2_is_the_papers_pairing_exactly(nfe):
    # official DiT code: respaced index i even (i < N-1) is a cache step with router row i
    paper = [(n, nfe - 1 - n) for n in range(1, nfe) if (nfe - 1 - n) % 2 == 0]
    assert l2c_cache_steps("dit", "ddim", nfe) == l2c_cache_steps("dit", "ddim", nfe, interval=2) == paper
    assert all(d == 1 for *_, d in l2c_cycle("dit", "ddim", nfe))
    logits = torch.randn(nfe, 8, generator=torch.Generator().manual_seed(nfe))
    plan = l2c_plan(logits, 0.5, "dit", "ddim", nfe, 4, interval=2)
    assert plan.rule == REUSE and plan.cache_steps == tuple(n for n, _ in paper)
    recompute = (torch.sigmoid(logits) > 0.5).view(nfe, 4, 2)
    for n in range(nfe):
        expected = recompute[nfe - 1 - n] if n in plan.cache_steps else torch.ones(4, 2, dtype=torch.bool)
        assert torch.equal(plan.mask()[n], expected)


def test_interval_3_and_4_cycles_by_hand():
    # NFE 10, indices 9..0: k=3 full at 9 (first) and i % 3 == 1 (7, 4, 1)
    assert l2c_cycle("dit", "ddim", 10, interval=3) == [(1, 8, 1), (3, 6, 1), (4, 5, 2), (6, 3, 1), (7, 2, 2), (9, 0, 1)]
    # k=4: full at 9, 5, 1; three cache steps after each full step
    assert l2c_cycle("dit", "ddim", 10, interval=4) == [(1, 8, 1), (2, 7, 2), (3, 6, 3), (5, 4, 1), (6, 3, 2),
                                                         (7, 2, 3), (9, 0, 1)]
    plan = l2c_plan(torch.full((10, 2), -9.0), 0.5, "dit", "ddim", 10, 1, interval=4)  # reuse everything
    assert plan.rule == Refresh((True, False, False, False, True, False, False, False, True, False))
    assert plan.reused_ratio_all == 7 / 10  # past the paper's 50% ceiling


def test_cache_steps_of_a_cycle_reuse_the_full_step_not_a_recomputed_branch():
    # one block; evaluation 0 full, 1 and 2 cache steps; evaluation 1 recomputes the attention branch
    compute = (((True, True),), ((True, False),), ((False, False),))
    outputs = []
    for rule in (REUSE, Refresh((True, False, False))):
        run, seen = CacheRun(Plan(compute, (1, 2), rule=rule)), []
        for n in range(3):
            runner = run.begin_evaluation(1)[0]
            seen.append(runner(0, 0, lambda n=n: torch.tensor(float(n))).item())
        outputs.append(seen)
    assert outputs[0] == [0.0, 1.0, 1.0]  # every evaluation refreshes: step 2 reuses step 1's branch
    assert outputs[1] == [0.0, 1.0, 0.0]  # refresh only at full steps: step 2 reuses the full step


def test_training_pairs_start_at_the_full_step_distance_away():
    calls = []

    def model(x, t, labels, runner):
        calls.append((int(t[0]), runner))
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    pairs = DiTDDIMPairs(10, torch.device("cpu"), interval=4)
    assert pairs.pairs == [(n, row) for n, row, _ in l2c_cycle("dit", "ddim", 10, interval=4)]
    x0, noise, marker = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), object()
    x, t = pairs.prepare(model, x0, torch.zeros(2, dtype=torch.long), noise, 6, marker)  # row 6: d = 3
    tmap = pairs.tables.timestep_map
    assert [c[0] for c in calls] == [int(tmap[9]), int(tmap[8]), int(tmap[7])]  # full step 9, then 8 and 7
    assert [c[1] is marker for c in calls] == [True, False, False]  # only the full step fills the cache
    assert int(t[0]) == int(tmap[6])


def test_identities_keep_the_paper_cycle_and_separate_longer_ones():
    recipe = Recipe(lam=1e-4)
    kw = dict(arch="DiT-toy", sampler="ddim", nfe=20, recipe=recipe, model_sha256="abc", data="toy")
    assert router_name(**kw) == router_name(**kw, interval=2)
    assert "-k3-" in router_name(**kw, interval=3) and router_name(**kw, interval=3) != router_name(**kw, interval=4)
    cfg = {"model": {"family": "dit"}, "steps": 20, "cache": {"name": "l2c", "router": "x.pt", "threshold": 0.1}}
    with_2 = {**cfg, "cache": {**cfg["cache"], "interval": 2}}
    with_3 = {**cfg, "cache": {**cfg["cache"], "interval": 3}}
    assert run_key(cfg) == run_key(with_2) != run_key(with_3)


def test_interval_errors_are_clear():
    with pytest.raises(UnsupportedCombination, match="midpoint"):
        l2c_cycle("uvit", "dpm_solver2", 20, interval=3)
    for bad in (1, 0, 2.5):  # a wrong value: the run fails (a sweep records "failed", not "unsupported")
        with pytest.raises(CacheConfigError, match=">= 2") as error:
            l2c_cycle("dit", "ddim", 20, interval=bad)
        assert not isinstance(error.value, UnsupportedCombination)

    class Toy:
        family, num_blocks = "dit", 28

    with pytest.raises(CacheConfigError, match="interval 2"):
        make_cache("l2c", router="official", interval=3).plan(model=Toy(), sampler="ddim", nfe=20)


def test_a_run_with_a_longer_cycle_learns_its_own_router_and_saves_more(tmp_path):
    from test_router_learning import config

    from l2c_bench.caching.methods.l2c.learning.store import read_metadata
    from l2c_bench.run import run_point

    tiny = ["steps=8", "router.iterations=3", "router.batch_size=2", "metrics.num_samples=2", "metrics.batch_size=2",
            "metrics.timing_batch=1", "metrics.timing_repeats=1", "metrics.fid=false", "metrics.grid_samples=2",
            "cache.threshold=0.99", "metrics.converged_nfe=0"]  # a threshold no fresh router passes: every cache step reuses everything
    rows = {k: run_point(config(tmp_path, *tiny, f"cache.interval={k}")) for k in (2, 4)}
    assert all(row["status"] == "ok" for row in rows.values()), [r.get("error") for r in rows.values()]
    assert rows[2]["metrics.router_file"] != rows[4]["metrics.router_file"]
    meta = read_metadata(tmp_path / "_routers" / rows[4]["metrics.router_file"])
    assert meta["interval"] == 4 and meta["cache_rows"] == [row for _, row in l2c_cache_steps("dit", "ddim", 8, interval=4)]
    # NFE 8, all reused: k=2 computes 4 of 8 evaluations, k=4 computes 3 (indices 7, 5, 1)
    assert rows[2]["metrics.reused_ratio_all"] == pytest.approx(4 / 8)
    assert rows[4]["metrics.reused_ratio_all"] == pytest.approx(5 / 8)
    assert rows[4]["metrics.macs_speedup"] > rows[2]["metrics.macs_speedup"]


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded: the wrong value was not caught before any compute")


@pytest.mark.parametrize("router", ["auto", "official", "file"])
def test_a_run_with_a_wrong_interval_fails_before_loading_the_model(tmp_path, monkeypatch, router):
    """`cache=l2c cache.interval=1` is a failed row naming the key and why, for every kind of router,
    raised before the model is loaded; U-ViT at interval 3 stays an `unsupported` combination."""
    from conftest import REFERENCE
    from test_router_learning import config

    import l2c_bench.run as run
    from l2c_bench.runs import prepare as prepare_step

    monkeypatch.setattr(prepare_step, "load_model", _no_model)
    router = str(REFERENCE / "l2c_routers" / "DDIM20_router.pt") if router == "file" else router
    row = run.run_point(config(tmp_path, "cache.interval=1", f"cache.router={router}"))
    assert row["status"] == "failed", row["error"]
    assert row["error"].startswith("CacheConfigError: cache.interval=1: an L2C cycle") and "integer >= 2" in row["error"]
    uvit = run.run_point(config(tmp_path, "model=uvit", "cache.interval=3", f"cache.router={router}"))
    assert uvit["status"] == "unsupported" and "cache.interval=3" in uvit["error"]


def test_router_training_checks_the_cycle_before_loading_the_model(tmp_path, monkeypatch):
    from test_router_learning import config

    import l2c_bench.caching.methods.l2c.learning.job as job
    from l2c_bench.train_router import train_router

    monkeypatch.setattr(job, "load_model", _no_model)
    with pytest.raises(CacheConfigError, match=r"cache.interval=1\b.*integer >= 2") as error:
        train_router(config(tmp_path, "cache.interval=1"))
    assert not isinstance(error.value, UnsupportedCombination)
    with pytest.raises(UnsupportedCombination, match="cache.interval=3"):
        train_router(config(tmp_path, "model=uvit", "cache.interval=3"))
