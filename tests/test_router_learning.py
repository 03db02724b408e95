"""L2C router learning: the objective, the frozen model, resume, artifacts, lookup by key, errors."""

import subprocess
import sys

import pytest
import torch
from conftest import REFERENCE, compose_config

from l2c_bench.caching import l2c_plan, load_router, make_cache, save_router
from l2c_bench.caching.methods.l2c.learning import (
    Recipe,
    initial_logits,
    iteration_loss,
    make_pairs,
    train,
)
from l2c_bench.caching.methods.l2c.learning.data import (
    RouterDataError,
    ToyData,
    make_data,
    step_generator,
)
from l2c_bench.caching.methods.l2c.learning.job import (
    learn,
    name_for,
    recipe_from,
    resolve_auto,
    training_command,
)
from l2c_bench.caching.methods.l2c.learning.runners import Blender, Recorder
from l2c_bench.caching.methods.l2c.learning.store import SHIPPED_DIR, find_router, read_metadata
from l2c_bench.engine.core import _Runner
from l2c_bench.models.loading import RunConfigError, load_model
from l2c_bench.run import run_point
from l2c_bench.runs.prepare import describe

CPU = torch.device("cpu")


def config(tmp_path, *overrides):
    return compose_config(tmp_path, "tracker=none", *overrides)


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory):
    out = {}
    for family in ("dit", "uvit"):
        cfg = config(tmp_path_factory.mktemp(family), f"model={family}")
        out[family] = load_model(describe(cfg).model, CPU)[0]
    return out


def _loss(model, family, logits, seed=0, lam=1e-3, batch=4):
    sampler = "ddim" if family == "dit" else "dpm_solver2"
    pairs = make_pairs(family, sampler, 10, CPU)
    x0, labels = next(ToyData(seed).batches(0, batch, 0, 1))
    return iteration_loss(model, pairs, logits, x0, labels, generator=step_generator(seed, 0, 2), lam=lam,
                          loss="mean" if family == "dit" else "sum", label_dropout=0.1)


@pytest.mark.parametrize("family", ["dit", "uvit"])
def test_gradients_reach_only_the_logits_of_the_drawn_cache_step(toy_models, family):
    model = toy_models[family]
    logits = torch.nn.Parameter(initial_logits(10, model.num_blocks, 1.0, 0))
    out = _loss(model, family, logits)
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    grad = logits.grad
    assert grad[out.row].abs().min() > 0, "every branch of the trained step gets a gradient"
    others = torch.cat([grad[:out.row], grad[out.row + 1:]])
    assert torch.count_nonzero(others) == 0
    assert out.data_loss > 0 and out.l1 == pytest.approx(torch.sigmoid(logits[out.row]).sum().item(), rel=1e-6)


def test_blended_student_matches_the_inference_engine_at_binary_weights(toy_models):
    """w in {0, 1} turns training's blend into inference's reuse: same output from the same cache."""
    model = toy_models["dit"]
    x = torch.randn(2, 3, 32, 32)
    t, y = torch.tensor([500, 500]), torch.tensor([1, 2])
    recorder = Recorder()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32), torch.tensor([550, 550]), y, recorder)
        mask = torch.rand(model.num_blocks, 2, generator=torch.Generator().manual_seed(1)) > 0.5
        mask[0] = True
        student = model(x, t, y, Blender(recorder.store, mask.float()))
        engine = model(x, t, y, _Runner(row=mask.tolist(), store=dict(recorder.store)))
        teacher = model(x, t, y, None)
        all_fresh = model(x, t, y, Blender(recorder.store, torch.ones(model.num_blocks, 2)))
    torch.testing.assert_close(student, engine, rtol=0, atol=1e-5)
    torch.testing.assert_close(all_fresh, teacher, rtol=0, atol=1e-5)
    assert (student - teacher).abs().max() > 1e-3  # reuse changes the output: the test can fail


def test_uvit_full_step_caches_the_midpoint_evaluation(toy_models):
    model = toy_models["uvit"]
    pairs = make_pairs("uvit", "dpm_solver2", 10, CPU)
    assert [p for p in pairs.pairs] == [(2, 1), (4, 2), (6, 3), (8, 4)]
    calls = []
    recorder = Recorder()

    def spy(x, t, y, runner):
        calls.append((x.clone(), t.clone()))
        return model(x, t, y, runner)

    x0, labels = next(ToyData(0).batches(0, 2, 0, 1))
    x_m, t_m = pairs.prepare(spy, x0, labels, torch.randn_like(x0), 2, recorder)
    grid = pairs.grid * 1000
    (_, t_s), (x_mid, t_mid) = calls
    assert t_s[0].item() == pytest.approx(grid[1].item()) and grid[2] < t_mid[0] < grid[1]  # s, then the midpoint
    assert t_m[0].item() == pytest.approx(grid[2].item())
    midpoint = Recorder()
    with torch.no_grad():
        model(x_mid, t_mid, labels, midpoint)
    for key, value in midpoint.store.items():
        assert torch.equal(value, recorder.store[key])


def _recipe(**kw):
    return Recipe(**{"lam": 1e-3, "lr": 0.05, "iterations": 6, "batch_size": 4, **kw})


def test_resume_continues_exactly_from_the_checkpoint(toy_models, tmp_path):
    model, pairs = toy_models["dit"], make_pairs("dit", "ddim", 10, CPU)
    straight = train(model, pairs, ToyData(0), _recipe(), nfe=10, work_dir=tmp_path / "a", progress=False)
    first = train(model, pairs, ToyData(0), _recipe(), nfe=10, work_dir=tmp_path / "b", checkpoint_every=3,
                  progress=False, stop_after=3)  # "killed" after iteration 3 (checkpoint written at 3)
    assert first.step == 3
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 3 and saved["optimizer"]["state"][0]["step"] == 3
    resumed = train(model, pairs, ToyData(0), _recipe(), nfe=10, work_dir=tmp_path / "b", checkpoint_every=3,
                    progress=False)
    assert resumed.resumed_from == 3 and resumed.step == 6
    assert torch.equal(resumed.logits, straight.logits)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert not torch.equal(straight.logits, initial_logits(10, model.num_blocks, 1.0, 0))
    with pytest.raises(ValueError, match="different recipe"):
        train(model, pairs, ToyData(0), _recipe(lam=2e-3), nfe=10, work_dir=tmp_path / "b", progress=False)


def test_a_tiny_run_lowers_the_loss(toy_models):
    model, pairs = toy_models["dit"], make_pairs("dit", "ddim", 10, CPU)
    recipe = _recipe(iterations=40, batch_size=8, lr=0.1)
    trained = train(model, pairs, ToyData(0), recipe, nfe=10, progress=False)
    start = initial_logits(10, model.num_blocks, 1.0, 0)

    def held_out(logits):  # the same 5 batches (each a fixed cache step) for both
        return sum(_loss(model, "dit", logits, seed=100 + s, lam=recipe.lam, batch=8).loss.item() for s in range(5))

    before, after = held_out(start), held_out(trained.logits)
    assert after < 0.8 * before, (before, after)


def test_router_artifact_round_trips_through_the_official_format(tmp_path):
    official = load_router(REFERENCE / "l2c_routers" / "DDIM20_router.pt")
    save_router(official, tmp_path / "ours.pt", {"note": "converted"})
    again = load_router(tmp_path / "ours.pt")
    assert torch.equal(again, official)
    for thr in (0.05, 0.1, 0.5):
        a = l2c_plan(official, thr, "dit", "ddim", 20, 28)
        b = l2c_plan(again, thr, "dit", "ddim", 20, 28)
        assert a == b
    assert l2c_plan(again, 0.1, "dit", "ddim", 20, 28).reused_in_cache_steps == (248, 560)
    # and a learned one, written as an official file (bare `routers` dict, what the release's loader reads)
    shipped = sorted(SHIPPED_DIR.glob("*.pt"))[0]
    logits = load_router(shipped)
    official_style = {f"{i}.prob": row for i, row in enumerate(logits)}
    torch.save(official_style, tmp_path / "bare.pth")
    assert torch.equal(load_router(tmp_path / "bare.pth"), logits)


@pytest.mark.parametrize("family", ["dit", "uvit"])
@pytest.mark.parametrize("nfe", [10, 20, 50])
def test_shipped_toy_routers_are_found_by_key(tmp_path, family, nfe):
    cfg = config(tmp_path, f"model={family}", f"steps={nfe}")
    path = resolve_auto(describe(cfg))
    assert path is not None and path.parent == SHIPPED_DIR, name_for(describe(cfg))
    meta = read_metadata(path)
    assert meta["nfe"] == nfe and meta["recipe"]["lam"] == cfg.router.lam and meta["iterations_done"] == cfg.router.iterations
    assert load_router(path).shape == (nfe, 16 if family == "dit" else 18)


def test_default_run_uses_l2c_with_the_shipped_router(tmp_path):
    row = run_point(config(tmp_path, "metrics.num_samples=4", "metrics.batch_size=4", "metrics.timing_batch=2",
                           "metrics.timing_repeats=1", "metrics.reference_samples=40", "metrics.grid_samples=4"))
    assert row["status"] == "ok", row.get("error")
    assert row["config.cache.name"] == "l2c" and row["config.cache.router"] == "auto"
    assert row["metrics.router_file"] == find_router(tmp_path, name_for(describe(config(tmp_path)))).name
    assert 0 < row["metrics.cached_ratio"] < 1 and row["metrics.macs_speedup"] > 1
    assert not (tmp_path / "_routers").exists()  # nothing trained


def test_missing_router_is_trained_at_toy_scale_and_then_reused(tmp_path):
    tiny = ["steps=6", "router.iterations=4", "router.batch_size=4", "metrics.num_samples=2", "metrics.batch_size=2",
            "metrics.timing_batch=1", "metrics.timing_repeats=1", "metrics.fid=false", "metrics.grid_samples=2",
            "metrics.converged_nfe=0"]
    row = run_point(config(tmp_path, *tiny))
    assert row["status"] == "ok", row.get("error")
    stored = sorted((tmp_path / "_routers").glob("*.pt"))
    assert [p.name for p in stored] == [row["metrics.router_file"]]
    meta = read_metadata(stored[0])
    assert meta["iterations_done"] == 4 and len(meta["history"]) == 4 and not list((tmp_path / "_routers").glob("*.work"))
    mtime = stored[0].stat().st_mtime_ns
    again = run_point(config(tmp_path, *tiny, "cache.threshold=0.5"))
    assert again["status"] == "ok" and again["metrics.router_file"] == stored[0].name
    assert stored[0].stat().st_mtime_ns == mtime  # reused, not retrained


def test_paper_scale_missing_router_fails_before_compute_printing_the_command(tmp_path):
    ckpt = tmp_path / "DiT-XL-2-256x256.pt"
    ckpt.write_bytes(b"not a real checkpoint: only hashed")
    cfg = config(tmp_path, "scale=paper", "model=dit", f"model.checkpoint={ckpt}")
    with pytest.raises(RunConfigError, match="python -m l2c_bench.train_router") as info:
        resolve_auto(describe(cfg))
    command = training_command(describe(cfg))
    assert command in str(info.value) and "router.lam=5e-06" in command and "router.data=None" not in command
    overrides = command.split(" ", 3)[3].split(" ")
    assert name_for(describe(config(tmp_path, *overrides))) == name_for(describe(cfg))  # the command trains that very router
    row = run_point(config(tmp_path, "scale=paper", "model=dit", f"model.checkpoint={ckpt}"))
    assert row["status"] == "failed" and "train_router" in row["error"]
    # at NFE 50 the recipe is Table 8's (lam 1e-6), and the command and the router's name say so
    cfg50 = config(tmp_path, "scale=paper", "model=dit", f"model.checkpoint={ckpt}", "steps=50")
    assert "router.lam=1e-06" in training_command(describe(cfg50)) and "-lam1e-06-" in name_for(describe(cfg50))


def test_bad_inputs_fail_clearly(tmp_path, toy_models):
    with pytest.raises(ValueError, match="router.lam=-1"):
        recipe_from(describe(config(tmp_path, "router.lam=-1")).router)
    row = run_point(config(tmp_path, "router.lam=-1", "metrics.num_samples=2"))
    assert row["status"] == "failed" and "router.lam" in row["error"]
    with pytest.raises(RouterDataError, match="no such file"):
        make_data(str(tmp_path / "missing"), seed=0, model=toy_models["dit"])
    with pytest.raises(RouterDataError, match="not set"):
        make_data(None, seed=0, model=toy_models["dit"])
    router = find_router(tmp_path, name_for(describe(config(tmp_path))))  # trained for NFE 20
    with pytest.raises(ValueError, match="trained for one model and NFE"):
        make_cache("l2c", router=str(router)).plan(model=toy_models["dit"], sampler="ddim", nfe=10)
    proc = subprocess.run([sys.executable, "-m", "l2c_bench.train_router", f"results_dir={tmp_path}", "tracker=none",
                           "router.data=/nonexistent/imagenet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "/nonexistent/imagenet" in proc.stderr


def test_train_router_command_writes_an_artifact_with_its_provenance(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "l2c_bench.train_router", f"results_dir={tmp_path}", "tracker=none",
                           "model=uvit", "steps=6", "router.iterations=3", "router.batch_size=2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = tmp_path / "_routers" / proc.stdout.strip().splitlines()[-1].rsplit("/", 1)[-1]
    meta = read_metadata(path)
    assert meta["family"] == "uvit" and meta["sampler"] == "dpm_solver2" and meta["recipe"]["loss"] == "sum"
    assert meta["cache_rows"] == [1, 2] and len(meta["model_sha256"]) == 64 and meta["iterations_done"] == 3
    assert path.with_suffix(".json").is_file()
    learned = learn(describe(config(tmp_path, "model=uvit", "steps=6", "router.iterations=3", "router.batch_size=2")),
                    device=CPU)
    assert learned == path  # found by key, not retrained


@pytest.mark.slow
def test_data_parallel_training_with_torchrun(tmp_path):
    """Two CPU ranks (gloo): rank-specific data, one averaged gradient, ranks agree, one artifact."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = ["-m", "l2c_bench.train_router", f"results_dir={tmp_path}", "tracker=none", "device=cpu", "steps=6",
            "router.iterations=3", "router.batch_size=4"]
    proc = subprocess.run([*torchrun, *args], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    stored = list((tmp_path / "_routers").glob("*.pt"))
    assert len(stored) == 1
    meta = read_metadata(stored[0])
    assert meta["world_size"] == 2 and meta["iterations_done"] == 3
    single = learn(describe(config(tmp_path / "single", "steps=6", "router.iterations=3", "router.batch_size=4")),
                   device=CPU, progress=False)
    assert single.name == stored[0].name  # the recipe names it, not the number of ranks
    # two ranks of 2 see exactly the global batch of 4 one process sees: the same router
    torch.testing.assert_close(load_router(stored[0]), load_router(single), rtol=0, atol=1e-5)
    assert not torch.equal(load_router(single), initial_logits(6, 8, 1.0, 0))


def test_router_tradeoff_study_compares_at_equal_cached_ratio(tmp_path, capsys):
    """The lambda study reuses the shipped toy router (no training) and scores every heuristic at
    the router's own cached ratio, writing one CSV row per method."""
    import csv

    from l2c_bench.studies import router_tradeoff

    out = tmp_path / "tradeoff.csv"
    router_tradeoff.main(["--model", "dit", "--lams", "1e-4", "--samples", "4", "--results-dir", str(tmp_path),
                          "--out", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert [r["method"] for r in rows] == ["l2c", "heuristic-bottom", "heuristic-top", "heuristic-random",
                                          "heuristic-greedy"]
    assert not (tmp_path / "_routers").exists()  # the shipped router, found by key: nothing trained
    l2c = float(rows[0]["cached_ratio"])
    assert 0 < l2c < 1
    for row in rows[1:]:  # the same share of branches in the same cache steps (to one branch)
        assert abs(float(row["cached_ratio"]) - l2c) <= 1 / (2 * 8)
        assert float(row["latent_mse"]) > 0 and float(row["psnr_db"]) > 0
    assert "heuristic-greedy" in capsys.readouterr().out
