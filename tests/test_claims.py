"""The claims checker on hand-made rows and per-sample records: each verdict (holds, does not
hold, undetermined, not checked), paired against marginal comparisons, the equivalence margin,
step reduction interpolated at L2C's measured latency (never a verdict on an unmatched pair), the
commands for missing rows (composed back), robust input, and the command line."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from analysis import claims
from l2c_bench.records.samples import SampleRecord

KEEPS = "L2C keeps the uncached quality and is faster"
STEPS = "L2C beats step reduction at equal measured latency"


def row(arch="DiT-toy", cache="none", steps=20, q=None, latency=None, speedup=None, cached_ratio=None, **config):
    """One ok row. q / latency / speedup: (value, low, high); the quality axis is converged PSNR (higher better)."""
    out = {"status": "ok", "run_id": f"{arch}-{cache}-{steps}-{len(config)}-{sorted(config.items())}",
           "config.model.arch": arch, "config.model.family": "dit" if arch.startswith("DiT") else "uvit",
           "config.model.default_sampler": "ddim" if arch.startswith("DiT") else "dpm_solver2",
           "config.sampler.name": None, "config.cache.name": cache, "config.steps": steps,
           "metrics.primary_quality": "converged_latent_psnr_db", "metrics.num_samples": 64}
    out.update({f"config.cache.{k}": v for k, v in config.items()})
    for key, triple in (("converged_latent_psnr_db", q), ("latency_ms", latency), ("speedup", speedup)):
        if triple is not None:
            out[f"metrics.{key}"], out[f"metrics.{key}_ci_low"], out[f"metrics.{key}_ci_high"] = triple
    if cached_ratio is not None:
        out["metrics.cached_ratio"] = cached_ratio
    return out


def frame(*rows):
    return pd.DataFrame(list(rows))


def only(checks: pd.DataFrame, claim: str) -> pd.DataFrame:
    return checks[(checks["claim"] == claim) & (checks["verdict"] != "not checked")]


def with_samples(r: dict, mse: np.ndarray, peak: float = 10.0) -> dict:
    """The row with a per-sample record of latent MSEs on seeds 0..n-1, its PSNR the record's."""
    record = SampleRecord({"seed": np.arange(len(mse)), "converged_latent_mse": np.asarray(mse, np.float64)},
                          {"format": 1, "peak_to_peak": {"converged": peak}, "jackknife": {}})
    psnr = 10 * math.log10(peak**2 / float(np.mean(mse)))
    return {**r, "metrics.converged_latent_psnr_db": psnr, "samples": record}


@pytest.mark.parametrize("l2c_q, speedup, verdict", [
    ((30.2, 29.9, 30.5), (1.6, 1.5, 1.7), "holds"),  # difference -0.3 [-0.72, +0.12] marginal: inside the 1 dB margin
    ((30, 29, 31), (1.6, 1.5, 1.7), "undetermined"),  # overlapping intervals, difference crossing -margin
    ((20, 19, 21), (1.6, 1.5, 1.7), "does not hold"),  # clearly worse than uncached
    ((30.2, 29.9, 30.5), (1.05, 0.9, 1.2), "undetermined"),  # speedup interval includes 1
    ((30.2, 29.9, 30.5), (0.8, 0.7, 0.9), "does not hold"),  # slower
])
def test_keeping_the_quality_is_an_equivalence_test_not_an_overlap(l2c_q, speedup, verdict):
    rows = frame(row(cache="none", steps=20, q=(30.5, 30.2, 30.8), latency=(100, 95, 105)),
                 row(cache="l2c", steps=20, q=l2c_q, latency=(60, 58, 62), speedup=speedup))
    checks = only(claims.check_all(rows, margins={"converged_latent_psnr_db": 1.0}), KEEPS)
    assert list(checks["verdict"]) == [verdict]
    assert "NFE 20" in checks.iloc[0]["setting"] and "DDIM-20" in checks.iloc[0]["paper"]
    assert checks.iloc[0]["comparison"].startswith("marginal")  # no per-sample records
    if verdict == "undetermined" and speedup[1] > 1:
        assert checks.iloc[0]["decide_at"].startswith("~")  # how many samples would decide it


def test_paired_records_decide_what_overlapping_intervals_leave_open():
    """The U-ViT case of the probe: L2C's per-sample error is the uncached twin's plus a bit on
    every seed (correlated 0.9+). The marginal intervals overlap; the paired difference is wholly
    below -margin: L2C does not keep the quality."""
    rng = np.random.default_rng(0)
    base = np.exp(rng.standard_normal(64))  # per-sample latent MSE of the uncached twin
    l2c = base * 1.9 * np.exp(0.3 * rng.standard_normal(64))  # ~2.8 dB worse, sample by sample
    a = with_samples(row(cache="l2c", steps=20, latency=(60, 58, 62), speedup=(1.6, 1.5, 1.7)), l2c)
    b = with_samples(row(cache="none", steps=20, latency=(100, 95, 105)), base)
    for r in (a, b):  # marginal intervals about as wide as the probe's (+-1.4-1.5 dB at 64 samples)
        r["metrics.converged_latent_psnr_db_ci_low"] = r["metrics.converged_latent_psnr_db"] - 2.0
        r["metrics.converged_latent_psnr_db_ci_high"] = r["metrics.converged_latent_psnr_db"] + 2.0
    assert a["metrics.converged_latent_psnr_db_ci_high"] > b["metrics.converged_latent_psnr_db_ci_low"]  # overlap
    check = only(claims.check_all(frame(a, b)), KEEPS).iloc[0]
    assert check["verdict"] == "does not hold" and check["comparison"].startswith("paired: 64 shared seeds")
    correlation = float(re.search(r"per-sample correlation ([0-9.]+)", check["ours"]).group(1))
    assert 0.85 < correlation < 1
    marginal = only(claims.check_all(frame(*({k: v for k, v in r.items() if k != "samples"} for r in (a, b)))),
                    KEEPS).iloc[0]
    assert marginal["verdict"] == "undetermined" and marginal["comparison"].startswith("marginal")


def test_step_reduction_is_interpolated_at_l2c_latency():
    """Uncached NFE 10-20 at 5 ms per NFE; L2C at 61 ms lies between NFE 12 (60 ms) and 14 (70 ms):
    t = 0.1, and step reduction's quality there is 0.9 q(12) + 0.1 q(14)."""
    ladder = [row(cache="none", steps=n, q=(10 + n, 9.5 + n, 10.5 + n), latency=(5.0 * n, 4.99 * n, 5.01 * n))
              for n in (10, 12, 14, 16, 20)]
    l2c = row(cache="l2c", steps=20, q=(40, 39, 41), latency=(61, 60.9, 61.1), speedup=(1.6, 1.5, 1.7))
    rows = frame(*ladder, l2c)
    bracket = claims.step_reduction_bracket(rows.iloc[-1], rows[rows["config.cache.name"] == "none"])
    assert (int(bracket.below["config.steps"]), int(bracket.above["config.steps"])) == (12, 14)
    assert bracket.t == pytest.approx(0.1) and bracket.t_low < 0.1 < bracket.t_high
    # t at the ends of L2C's and the two points' latency intervals: (60.9 - 60 * 1.002) / (70 * 0.998 - 60 * 1.002)
    assert bracket.t_low == pytest.approx((60.9 - 59.88 - 0.24) / (69.86 - 60.12 + 0.0), abs=0.02)
    check = only(claims.check_all(rows), STEPS).iloc[0]
    assert "uncached NFE 12-14" in check["setting"] and check["verdict"] == "holds"
    assert "t = 0.10" in check["ours"] and "+17.8" in check["ours"]  # 40 - (0.9 * 22 + 0.1 * 24)
    # a slower L2C is matched by more steps: the measurement decides, not a table
    slower = frame(*ladder, {**l2c, "metrics.latency_ms": 79.0, "metrics.latency_ms_ci_low": 78.9,
                             "metrics.latency_ms_ci_high": 79.1})
    assert "uncached NFE 14-16" in only(claims.check_all(slower), STEPS).iloc[0]["setting"]


def test_an_unmatched_latency_is_never_decided():
    """L2C at 1280 ms with uncached points only at 840 and 900 ms: no bracket, no verdict, and the
    table says what to run."""
    rows = frame(row(cache="none", steps=14, q=(20, 19, 21), latency=(840, 830, 850)),
                 row(cache="none", steps=16, q=(21, 20, 22), latency=(900, 890, 910)),
                 row(cache="l2c", steps=20, q=(40, 39, 41), latency=(1280, 1270, 1290), speedup=(1.1, 1.05, 1.15)))
    check = only(claims.check_all(rows), STEPS).iloc[0]
    assert check["verdict"] == "undetermined" and "no uncached step counts bracket" in check["why"]
    assert "never a verdict on an unmatched pair: `python -m l2c_bench.run -m model=dit +claim=uncached_10," \
        "uncached_12,uncached_20 metrics.num_samples=64`" in check["why"]  # the ladder's missing presets
    full = frame(*rows.to_dict("records"), *(row(cache="none", steps=n, q=(22, 21, 23), latency=(lat, lat - 9, lat + 9))
                                             for n, lat in ((10, 600), (12, 700), (20, 1000))))
    assert "slower than uncached at its own NFE 20" in only(claims.check_all(full), STEPS).iloc[0]["why"]


def test_a_latency_interval_reaching_past_the_bracket_is_never_decided():
    """L2C at 69 [60, 80] ms on a ladder at 60 / 70 / 80 ms: its interval covers NFE 16's 40 dB at
    80 ms, so the interpolated comparison must carry that: here it can no longer hold."""
    ladder = [row(cache="none", steps=n, q=(q, q - 0.1, q + 0.1), latency=(lat, lat - 0.5, lat + 0.5))
              for n, q, lat in ((12, 22, 60), (14, 24, 70), (16, 40, 80))]
    l2c = row(cache="l2c", steps=16, q=(30, 29.9, 30.1), latency=(69, 60, 80), speedup=(1.2, 1.1, 1.3))
    rows = frame(*ladder, l2c)
    bracket = claims.step_reduction_bracket(rows.iloc[-1], rows[rows["config.cache.name"] == "none"])
    assert {(int(a["config.steps"]), int(b["config.steps"])) for a, b, _ in bracket.alternatives} == {(12, 14), (14, 16)}
    c, at_t = claims.interpolated_difference(rows.iloc[-1], bracket, "converged_latent_psnr_db")
    assert c.low < 30 - 40 < c.high and at_t.low > 0  # at t alone it would hold; the latency's range undoes it
    assert claims.better_verdict(c, True, rows.iloc[-1], spread=at_t)[0] == "undetermined"
    # past the ladder's ends, or without a latency interval: no match at all
    wide = {**l2c, "metrics.latency_ms_ci_high": 85.0}
    assert isinstance(claims.step_reduction_bracket(pd.Series(wide), rows[rows["config.cache.name"] == "none"]), str)
    bare = {**l2c, "metrics.latency_ms_ci_low": None, "metrics.latency_ms_ci_high": None}
    assert "no latency interval" in claims.step_reduction_bracket(pd.Series(bare), rows[rows["config.cache.name"] == "none"])


def test_heuristics_are_compared_at_the_nearest_ratio_within_tolerance():
    l2c = row(cache="l2c", steps=20, q=(30, 29, 31), cached_ratio=0.44)
    near = row(cache="heuristic", steps=20, q=(25, 24, 26), cached_ratio=0.40, strategy="bottom")
    far = row(cache="heuristic", steps=20, q=(25, 24, 26), cached_ratio=0.20, strategy="top")
    tied = row(cache="heuristic", steps=20, q=(30.5, 29.5, 31.5), cached_ratio=0.46, strategy="random")
    checks = only(claims.check_all(frame(l2c, near, far, tied)),
                  "L2C beats a heuristic layer choice at equal cached ratio")
    verdicts = {s.split(", ")[2]: v for s, v in zip(checks["setting"], checks["verdict"], strict=True)}
    assert verdicts == {"bottom": "holds", "top": "undetermined", "random": "undetermined"}
    assert "within 0.05" in checks[checks["setting"].str.contains("top")].iloc[0]["why"]


def test_caching_against_dropping_the_same_branches():
    cached = row(cache="heuristic", steps=20, q=(28, 27, 29), strategy="random", ratio=0.3, seed=0)
    dropped = row(cache="layer_drop", steps=20, q=(12, 11, 13), strategy="random", ratio=0.3, seed=0)
    other = row(cache="heuristic", steps=20, q=(5, 4, 6), strategy="random", ratio=0.1, seed=0)
    checks = only(claims.check_all(frame(cached, dropped, other)), "caching a branch beats dropping it")
    assert list(checks["verdict"]) == ["holds"]  # against the 0.3 heuristic, not the 0.1 one
    assert "random drop 60/560: FID 112.93" in checks.iloc[0]["paper"]
    flipped = frame({**cached, "metrics.converged_latent_psnr_db": 5, "metrics.converged_latent_psnr_db_ci_low": 4,
                     "metrics.converged_latent_psnr_db_ci_high": 6}, dropped)
    assert list(only(claims.check_all(flipped), "caching a branch beats dropping it")["verdict"]) == ["does not hold"]


def test_shifted_against_non_shifted_cache_step():
    shifted = row("U-ViT-toy", cache="heuristic", steps=20, q=(26, 25, 27), ratio=1.0, shifted=True)
    plain = row("U-ViT-toy", cache="heuristic", steps=20, q=(22, 21, 23), ratio=1.0, shifted=False)
    check = only(claims.check_all(frame(shifted, plain)), "the shifted cache step beats the non-shifted one").iloc[0]
    assert check["verdict"] == "holds" and "shifted 2.8 vs non-shifted 5.3" in check["paper"]


def test_every_claim_appears_and_missing_rows_say_what_to_run(tmp_path):
    """An L2C row alone: every claim is in the table; the ones without rows are `not checked` with a
    command that composes back into the points they need."""
    from conftest import compose_config

    from l2c_bench.config import register_configs

    register_configs()
    checks = claims.check_all(frame(row(cache="l2c", steps=20, q=(30, 29, 31), speedup=(1.6, 1.5, 1.7))))
    assert set(checks["claim"]) == set(claims.CLAIMS)
    missing = checks[checks["verdict"] == "not checked"]
    keeps = missing[missing["claim"] == KEEPS].iloc[0]
    command = keeps["why"].split("`")[1]
    assert command == "python -m l2c_bench.run -m model=dit +claim=l2c_20,uncached_20 metrics.num_samples=64"
    overrides = command.split(" -m ", 2)[2].split()
    for preset in ("l2c_20", "uncached_20"):
        point = [o.replace("+claim=l2c_20,uncached_20", f"+claim={preset}") for o in overrides]
        cfg = compose_config(tmp_path, *point)
        assert (cfg.model.family, cfg.steps, cfg.metrics.num_samples) == ("dit", 20, 64)
        assert cfg.cache.name == ("l2c" if preset == "l2c_20" else "none")
    empty = claims.check_all(pd.DataFrame())
    assert set(empty["verdict"]) == {"not checked"} and len(empty) == len(claims.CLAIMS)
    assert all("python -m l2c_bench.run -m +sweep=claims" in why for why in empty["why"])


def test_failed_rows_and_missing_intervals_never_decide():
    rows = frame(row(cache="none", steps=20, q=(30, None, None)),
                 row(cache="l2c", steps=20, q=(10, None, None), speedup=(2, 1.9, 2.1)),
                 {**row(cache="none", steps=50, q=(1, 0, 2)), "status": "failed"})
    checks = only(claims.check_all(rows), KEEPS)
    assert list(checks["verdict"]) == ["undetermined"] and "missing" in checks.iloc[0]["why"]
    assert set(claims.check_all(rows[rows["status"] == "failed"])["verdict"]) == {"not checked"}


def test_a_non_numeric_row_is_named_and_skipped_and_the_rest_still_checked():
    good = [row(cache="none", steps=20, q=(30.5, 30.2, 30.8)),
            row(cache="l2c", steps=20, q=(30.2, 29.9, 30.5), speedup=(1.6, 1.5, 1.7))]
    bad = {**row(cache="heuristic", steps=20, q=(25, 24, 26), strategy="bottom"), "metrics.cached_ratio": "n/a",
           "run_id": "dit-ddim-heuristic-nfe20-bad"}
    with pytest.warns(UserWarning, match="dit-ddim-heuristic-nfe20-bad: metrics.cached_ratio = 'n/a'"):
        checks = claims.check_all(frame(*good, bad), margins={"converged_latent_psnr_db": 1.0})
    assert list(only(checks, KEEPS)["verdict"]) == ["holds"]


def test_command_prints_writes_and_survives_bad_input(tmp_path, capsys):
    from l2c_bench.records.store import write_row

    for r in (row(cache="none", steps=20, q=(30, 29.9, 30.1), latency=(100, 99, 101)),
              row(cache="l2c", steps=20, q=(29.9, 29.8, 30), latency=(60, 59, 61), speedup=(1.6, 1.5, 1.7))):
        write_row(tmp_path / "results", r["run_id"].replace("/", "_"), r)
    corrupt = tmp_path / "results" / "broken" / "result.json"
    corrupt.parent.mkdir()
    corrupt.write_text("{not json")
    claims.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert f"warning: skipped: corrupt result row {corrupt}" in captured.err  # named, then left out
    assert "| L2C keeps the uncached quality and is faster |" in captured.out and "**holds**" in captured.out
    table = pd.read_csv(tmp_path / "out" / "claims.csv")
    assert list(table.loc[table["claim"] == KEEPS, "verdict"]) == ["holds", "not checked"]  # NFE 20, NFE 50
    assert set(table["claim"]) == set(claims.CLAIMS)
    with pytest.raises(SystemExit) as exit_info:
        claims.main(["--results", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 1 and f"--results {tmp_path / 'nonexistent'}: no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        claims.main(["--results", str(tmp_path / "results"), "--margin", "psnr"])


def test_seeds_are_pooled_into_one_point_with_a_t_interval():
    """Three seeds of each point: one check, on the seeds' mean and its t-interval (not a seed's own)."""
    rows = []
    for seed, (base, l2c) in enumerate([(30.0, 29.0), (31.0, 30.0), (32.0, 31.0)]):
        rows.append({**row(cache="none", steps=20, q=(base, base - 5, base + 5)), "config.seed": seed,
                     "schema_version": 3})
        rows.append({**row(cache="l2c", steps=20, q=(l2c, l2c - 5, l2c + 5), speedup=(1.6, 1.5, 1.7)),
                     "config.seed": seed, "schema_version": 3})
    checks = only(claims.check_all(frame(*rows)), KEEPS)
    assert len(checks) == 1
    # mean 30 (L2C), 31 (uncached); t(0.975, 2) * 1 / sqrt(3) = 2.484: [27.52, 32.48] and [28.52, 33.48]
    assert "L2C 30 [27.52, 32.48]" in checks.iloc[0]["ours"] and "uncached 31 [28.52, 33.48]" in checks.iloc[0]["ours"]
    assert checks.iloc[0]["verdict"] == "undetermined"  # a tie is not equivalence: -1 [-4.5, +2.5] crosses -0.5
    # rows sampled before seeds drew disjoint noise: a nonzero seed is not an independent repeat
    legacy = [{**r, "schema_version": 2} for r in rows]
    with pytest.warns(UserWarning, match="not pooled"):
        pooled = only(claims.check_all(frame(*legacy)), KEEPS)
    assert "L2C 29 [24, 34]" in pooled.iloc[0]["ours"]  # seed 0's own row and interval
    unversioned = [{k: v for k, v in r.items() if k != "schema_version"} for r in rows]  # a store from before: 1
    with pytest.warns(UserWarning, match="not pooled"):
        assert "L2C 29 [24, 34]" in only(claims.check_all(frame(*unversioned)), KEEPS).iloc[0]["ours"]


@pytest.mark.parametrize("arch, extra, family", [
    ("DiT-toy", {}, "dit"), ("U-ViT-toy", {}, "uvit"),
    ("DiT-toy", {"config.model.diffusers_class": "PixArtTransformer2DModel", "config.sampler.name": "ddim"}, "dit")])
def test_printed_commands_compose_for_every_family(arch, extra, family, tmp_path):
    """The commands a check prints (missing presets; more step counts) compose into the points they name."""
    from conftest import compose_config

    from l2c_bench.config import register_configs

    register_configs()
    l2c = pd.Series({**row(arch, cache="l2c", steps=20, latency=(100, 99, 101)), **extra})
    uncached = frame(*(row(arch, cache="none", steps=n, latency=(400 + n, 399 + n, 401 + n)) for n in (10, 12, 14, 16, 20)))
    commands = [claims.claim_command(["uncached_14", "l2c_20"], l2c), claims._more_steps(l2c, uncached).strip("`")]
    assert "steps=6,8" in commands[1]  # L2C faster than every uncached point: fewer steps
    for command in commands:
        overrides = command.split(" -m ", 2)[2].split()
        first = [o.split(",")[0] if o.startswith(("+claim=", "steps=")) else o for o in overrides]
        cfg = compose_config(tmp_path, *first)
        assert cfg.model.family == family and cfg.metrics.num_samples == 64
        assert cfg.model.get("diffusers_class") == extra.get("config.model.diffusers_class")


def test_the_command_for_missing_rows_names_the_rows_model_and_keys():
    dit = pd.Series({**row(), "config.model.family": float("nan"), "config.results_dir": "/data/results"})
    assert claims.claim_command(["l2c_20"], dit) == ("python -m l2c_bench.run -m model=dit results_dir=/data/results "
                                                     "+claim=l2c_20 metrics.num_samples=64")
    pixart = pd.Series({**row("PixArt-toy"), "config.model.diffusers_class": "PixArtTransformer2DModel",
                        "config.scale.name": "paper", "config.model.pretrained": "/ckpt/pixart",
                        "config.sampler.name": "flow_euler", "metrics.num_samples": 5000})
    assert claims.claim_command(["uncached_20"], pixart) == (
        "python -m l2c_bench.run -m model=diffusers scale=paper model.diffusers_class=PixArtTransformer2DModel "
        "model.pretrained=/ckpt/pixart sampler.name=flow_euler +claim=uncached_20 metrics.num_samples=5000")


@pytest.mark.parametrize("arch, sampler, nfe, expected", [
    ("DiT-XL/2", "ddim", 50, "vs DDIM-40 2.39 (1.24x)"), ("DiT-XL/2", "ddim", 20, "vs DDIM-16 4.68 (1.25x)"),
    ("U-ViT-H/2", "dpm_solver2", 50, "vs DPM-Solver-2-30 2.4644 (1.68x)")])
def test_the_papers_own_step_reduction_pairing_stays_in_its_block(arch, sampler, nfe, expected):
    """Table 1 pairs L2C-50 with DDIM-40 (the closest speedup overall would be DDIM-16's, 20 NFE's block)."""
    from analysis.claims import _paper_step_reduction

    assert _paper_step_reduction(arch, sampler, nfe).endswith(expected)
