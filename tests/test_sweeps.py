"""Every sweep file composes and runs at toy scale with a tiny sample count."""

import numbers
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from analysis.labels import SAMPLER_NAMES, paper_frame
from analysis.paper import TABLES, load_paper
from l2c_bench.config import register_configs
from l2c_bench.records import flatten, load_results, run_id_for

register_configs()  # the typed schema (base_config) the compose API needs, as `l2c_bench.run` registers it

SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
TINY = ["scale=toy", "metrics.converged_nfe=0", "tracker=none", "metrics.num_samples=2", "metrics.batch_size=2", "metrics.timing_batch=1",
        "metrics.timing_repeats=1", "metrics.timing_warmup=0", "metrics.fid=false", "metrics.grid_samples=2",
        "router.iterations=2", "router.batch_size=2"]  # routers learned on demand (cache.router=auto): tiny


# paper table (analysis/paper_numbers/<table>.csv) -> the sweeps whose points reproduce its rows
PAPER_SWEEPS = {
    "table1_dit": ("table1_dit", "table1_step_reduction"),
    "table2_uvit": ("table2_uvit",),
    "table3_uvit_cache_methods": ("table3_uvit_cache_methods",),
    "table4_cacheable_ratio": ("table4_cacheable_ratio", "table4_cacheable_ratio_uvit"),
    "table5_7_layer_dropout": ("table5_7_layer_dropout", "table9_lambda"),  # its L2C row is Table 9's lambda 1e-6
    "table6_shifted_cache": ("table6_shifted_cache",),
    "table9_lambda": ("table9_lambda",),
}
_XL, _L, _UVIT = "DiT-XL/2", "DiT-L/2", "U-ViT-H/2"
# paper rows no sweep reproduces, and why; the test fails when one of them gets a sweep (update this list)
NOT_SWEPT = {
    **{("table1_dit", (_XL, 256, method, 250)): "the 250-step references: not swept"
       for method in ("DDPM", "DDIM")},
    ("table1_dit", (_XL, 256, "L2C", 10)): "the L2C release has no NFE-10 router",
    **{("table1_dit", (_XL, 512, method, nfe)): "512 px: table1_dit with +model.overrides.input_size=64 "
       "and the 512 checkpoint" for method, nfe in (("DDIM", 50), ("DDIM", 30), ("L2C", 50))},
    **{("table1_dit", (_L, 256, method, nfe)): "DiT-L/2: no sweep, no official router"
       for method, nfe in (("DDIM", 50), ("DDIM", 40), ("L2C", 50), ("DDIM", 20), ("DDIM", 16), ("L2C", 20))},
    **{("table2_uvit", (_UVIT, 256, "DPM-Solver-2", nfe)): "U-ViT step reduction: no sweep yet" for nfe in (30, 16)},
    ("table5_7_layer_dropout", (_XL, 256, 20, "Learning-to-Drop")): "no learned-dropout method in the harness",
}
PAPER_DIR = ROOT / "analysis" / "paper_numbers"


def _normalised(values) -> tuple:
    """A row key comparable across sources (int or float, numpy or not)."""
    return tuple(round(float(v), 12) if isinstance(v, numbers.Real) else v for v in values)


def _points(name: str) -> pd.DataFrame:
    """Every point of a sweep file, composed with Hydra's compose API, as the tables see its row
    (analysis.labels.paper_frame: model, resolution, method label, NFE, lambda, threshold)."""
    rows = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for combo in _combos(name):
            config = OmegaConf.to_container(compose("config", overrides=[*combo, f"+sweep={name}"]), resolve=True)
            rows.append({"run_id": run_id_for(config), "status": "ok", **flatten({"config": config})})
    frame = paper_frame(pd.DataFrame(rows))  # one row per point (points equal but for ignored keys: one)
    by_id = {r["run_id"]: r for r in rows}
    picked = [by_id[run_id] for run_id in frame["run_id"]]
    return frame.assign(sampler=[r["config.sampler.name"] or r["config.model.default_sampler"] for r in picked],
                        num_samples=[r["config.metrics.num_samples"] for r in picked],
                        ratio=[r.get("config.cache.ratio") for r in picked])  # a method without `ratio`: None


@pytest.mark.slow
def test_there_is_a_sweep_per_paper_table():
    """Each paper table's rows are the points of its sweeps (in the tables' own row keys), or are
    listed in NOT_SWEPT; the points use the paper's settings (Table 8, FID over 50,000 samples)."""
    tables = sorted(p.stem for p in PAPER_DIR.glob("table*.csv") if p.stem != "table8_hyperparams")
    assert sorted(PAPER_SWEEPS) == tables
    # every sweep file is a paper table's, a paper figure's, the claims checker's, the matched-quality
    # table's, the diffusers zoos' (diffusers_zoo, zoo_2026), or says it goes beyond the paper
    swept = {s for names in PAPER_SWEEPS.values() for s in names}
    assert set(SWEEPS) - swept - {"fig4_speed_quality", "fig6_threshold", "claims", "matched_quality",
                                  "diffusers_zoo", "zoo_2026"} == {
        s for s in SWEEPS if s.startswith("beyond_")}
    points = {name: _points(name) for name in sorted(swept | {"fig4_speed_quality", "fig6_threshold"})}
    specs = {spec.name: spec for spec in TABLES}
    for table, sweeps in PAPER_SWEEPS.items():
        spec, paper = specs[table], pd.read_csv(PAPER_DIR / f"{table}.csv")
        ours = pd.concat([points[name] for name in sweeps])
        covered = {_normalised(row) for row in ours[list(spec.keys)].itertuples(index=False)}
        for index, row in load_paper(spec).iterrows():
            key = _normalised(row[list(spec.keys)])
            original = tuple(paper.loc[index, list(spec.keys)].tolist())  # NOT_SWEPT names rows as the paper does
            if (table, original) in NOT_SWEPT:
                assert key not in covered, f"{table} {original} has a sweep now: drop it from NOT_SWEPT"
            else:
                assert key in covered, f"{table}: no point of {sweeps} for the paper's row {original}"
        if "fid" in paper:  # the paper's FID is over 50,000 samples
            assert set(ours["num_samples"]) == {50_000}, table
    assert {table for table, _ in NOT_SWEPT} <= set(PAPER_SWEEPS)

    # L2C with the official routers: Table 8's sampler and threshold for the model and NFE
    table8 = pd.read_csv(PAPER_DIR / "table8_hyperparams.csv").set_index(["model", "nfe", "resolution"])
    for name in ("table1_dit", "table2_uvit", "table3_uvit_cache_methods", "table4_cacheable_ratio",
                 "table4_cacheable_ratio_uvit", "table9_lambda"):
        for _, point in points[name][points[name]["cache"] == "l2c"].iterrows():
            setting = table8.loc[(point["model"], point["nfe"], point["resolution"])]
            assert point["threshold"] == setting["threshold"], (name, point["nfe"])
            assert SAMPLER_NAMES[point["sampler"]] == setting["sampler"], name
    # Tables 5/7: random drop of 60 and 170 of DiT-XL/2's 560 cache-step branches at DDIM-20
    # (28 blocks x 2 branches in each of the 10 cache steps: every other evaluation)
    dropout = pd.read_csv(PAPER_DIR / "table5_7_layer_dropout.csv")
    drops = points["table5_7_layer_dropout"].query("cache == 'layer_drop'")
    random_drop = dropout[dropout["method"] == "Random Drop"]
    assert sorted(round(r * 2 * 28) * 10 for r in drops["ratio"]) == sorted(random_drop["removed"])
    assert set(dropout["total"]) == {2 * 28 * 10}
    # ... and their cached rows reuse the same number of branches (the comparison Table 5 makes)
    cached = points["table5_7_layer_dropout"].query("cache == 'heuristic'")
    assert sorted(cached["ratio"]) == sorted(drops["ratio"])
    # their Learning-to-Cache row is Table 9's lambda = 1e-6 router (same branches removed, same FID)
    table9 = pd.read_csv(PAPER_DIR / "table9_lambda.csv").set_index("lambda")
    l2c_row = dropout[dropout["method"] == "Learning-to-Cache"].iloc[0]
    assert (l2c_row["removed"], l2c_row["fid"]) == (table9.loc[1e-6, "removed"], table9.loc[1e-6, "fid"])
    # Figure 4: the heuristics (bottom, top, random) at NFE 20; Figure 6: thresholds around Table 8's 0.1
    fig4 = points["fig4_speed_quality"]
    assert set(fig4["model"]) == {_XL} and set(fig4["nfe"]) == {20} and set(fig4["sampler"]) == {"ddim"}
    assert {"Heuristic (bottom)", "Heuristic (top)", "Heuristic (random)"} <= set(fig4["series"])
    fig6 = points["fig6_threshold"]
    assert set(fig6["method"]) == {"L2C"} and set(fig6["nfe"]) == {20} and set(fig6["model"]) == {_XL}
    assert fig6["threshold"].min() < 0.1 < fig6["threshold"].max() and 0.1 in set(fig6["threshold"])


def _combos(name: str) -> list[tuple[str, ...]]:
    from l2c_bench.catalog import sweep_points

    return sweep_points(name)


def _is_group(override: str) -> bool:
    """Whether an override picks a config group option (`cache=fora`, `+zoo2026=x`) rather than
    setting a value (`steps=20`, `model.diffusers_class=X`): its key names a folder of conf/."""
    key = override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
    return (ROOT / "conf" / key).is_dir()


def _toy_configs(name: str, results_dir, check_every: int = 0) -> list[dict]:
    """Every point of the sweep at toy scale with a tiny sample count, composed as `run -m` composes it.

    Hydra's order: the sweeper's params, then the command line (a later appended config's defaults
    override an earlier one's). Composing is most of this test's time (0.2 s a point; zoo_2026 has
    180), and Hydra builds the defaults tree from the group overrides only, then applies the value
    overrides in their order: points with the same group overrides share one composition, and their
    values are applied to a copy with Hydra's own function. With `check_every` = k, every k-th point
    is also composed in full and must be equal."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    bases: dict[tuple[str, ...], object] = {}
    configs = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for i, combo in enumerate(_combos(name)):
            overrides = [*combo, f"+sweep={name}", f"results_dir={results_dir}", *TINY]
            groups = tuple(o for o in overrides if _is_group(o))
            if groups not in bases:
                bases[groups] = compose("config", overrides=list(groups))
            config = bases[groups].copy()
            ConfigLoaderImpl._apply_overrides_to_config(
                parser.parse_overrides([o for o in overrides if not _is_group(o)]), config)
            if check_every and i % check_every == 0:
                assert config == compose("config", overrides=overrides), combo
            configs.append(config)
    return configs


def _expected_status(config) -> str:
    """What a toy-scale run of the point must record: the official routers fit only the paper's
    models (a failed row naming cache.router); every other point runs or is `unsupported`."""
    if config.cache.name == "l2c" and config.cache.router == "official":
        return "failed"
    return "ok or unsupported"


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_point_composes_validates_and_has_its_own_run_id(name, tmp_path):
    """The fast stand-in for running every sweep: each point composes, passes (or fails as expected)
    the checks a run makes before any compute, and points with different identities get different
    run ids, equal identities one (one row)."""
    from l2c_bench.caching import CacheConfigError, UnsupportedCombination
    from l2c_bench.models.loading import RunConfigError
    from l2c_bench.records.store import run_key
    from l2c_bench.runs.prepare import validate

    configs = _toy_configs(name, tmp_path, check_every=25)  # the shared compositions checked against Hydra's
    assert len(configs) == len(_combos(name)) > 0
    ids: dict[str, str] = {}
    for config in configs:
        expected = _expected_status(config)
        try:
            validate(config)
            outcome = "ok or unsupported"
        except UnsupportedCombination:
            outcome = "ok or unsupported"
        except (CacheConfigError, RunConfigError) as error:
            outcome = "failed"
            assert expected == "failed", f"{name}: {error}"
            assert "cache.router" in str(error), error
        assert outcome == expected, (name, OmegaConf.to_container(config.cache))
        resolved = OmegaConf.to_container(config, resolve=True)
        run_id = run_id_for(resolved)
        assert run_id.startswith(f"{config.model.family}-") and f"-{config.cache.name}-nfe{config.steps}-" in run_id
        ids.setdefault(run_id, run_key(resolved))
        assert ids[run_id] == run_key(resolved)  # one id, one identity
    # distinct identities, distinct ids (a 12-hex-digit key: a collision here is a bug, not chance)
    assert len(set(ids.values())) == len(ids)
    if len(configs) > 1:
        assert len(ids) > 1, f"{name}: every point is the same run"


# One sweep end to end at toy scale (the fast test above checks every sweep's points): Table 6,
# U-ViT's shifted vs unshifted cache step, with the uncached point, through `python -m l2c_bench.run -m`.
END_TO_END_SWEEP = "table6_shifted_cache"


@pytest.mark.slow
def test_a_sweep_runs_end_to_end_at_toy_scale(tmp_path):
    name = END_TO_END_SWEEP
    configs = _toy_configs(name, tmp_path)
    expected = {run_id_for(OmegaConf.to_container(c, resolve=True)): _expected_status(c) for c in configs}
    proc = subprocess.run([sys.executable, "-m", "l2c_bench.run", "-m", f"+sweep={name}", f"results_dir={tmp_path}",
                           *TINY], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = load_results(tmp_path).set_index("run_id")
    assert set(rows.index) == set(expected)  # points that differ only in a key the method ignores: one row
    for run_id, row in rows.iterrows():
        assert row.status in expected[run_id], (run_id, row.status, row.error)
    assert (rows.status == "ok").any()


def test_the_claims_sweep_holds_what_each_claim_needs(tmp_path):
    """sweeps/claims.yaml at toy scale: per model, a step-reduction ladder around L2C's NFE 20 and 50,
    L2C at both, each heuristic strategy within the checker's ratio tolerance of L2C's cached ratio,
    drop and cache of the same random branches, and both cache steps of Table 6."""
    from analysis.claims import BRACKETS, RATIO_TOLERANCE
    from l2c_bench.models import build_model
    from l2c_bench.runs.prepare import validate

    points = {}
    for config in _toy_configs("claims", tmp_path):
        points.setdefault(config.model.family, []).append(config)
    assert set(points) == {"dit", "uvit"}
    for family, configs in points.items():
        def steps(cache, configs=configs):
            return sorted(c.steps for c in configs if c.cache.name == cache)

        assert steps("l2c") == [20, 50]
        ladder = steps("none")
        assert 20 in ladder and 50 in ladder
        assert sum(n < 20 for n in ladder) >= 2 and sum(20 < n < 50 for n in ladder) >= 3  # room to match latency
        for presets in BRACKETS.values():  # the ladders the checker suggests are the sweep's
            assert {int(p.split("_")[1]) for p in presets} <= set(ladder)
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):  # the shipped router's recipe
            run, l2c = validate(compose("config", overrides=[
                "+sweep=claims", f"model={family}", "+claim=l2c_20", f"results_dir={tmp_path}"]))
        model_config = configs[0].model
        model = build_model(model_config.arch, device="meta", **model_config.overrides)
        sampler = run.sampler.name
        l2c_ratio = l2c.plan(model=model, sampler=sampler, nfe=20).cached_ratio
        for strategy in ("bottom", "top", "random"):
            ratios = []
            for c in configs:
                if c.cache.name == "heuristic" and c.cache.strategy == strategy and c.cache.ratio < 1:
                    ratios.append(validate(c)[1].plan(model=model, sampler=sampler, nfe=20).cached_ratio)
            assert min(abs(r - l2c_ratio) for r in ratios) <= RATIO_TOLERANCE, (family, strategy, l2c_ratio, ratios)
        drop = [(c.cache.strategy, c.cache.ratio, c.cache.seed) for c in configs if c.cache.name == "layer_drop"]
        cached = {(c.cache.strategy, c.cache.ratio, c.cache.seed) for c in configs if c.cache.name == "heuristic"}
        assert drop and set(drop) <= cached
        assert {c.cache.shifted for c in configs if c.cache.name == "heuristic" and c.cache.ratio == 1.0} == {True, False}
