"""A result row records its own method's cache parameters only; run ids and the analysis of
older rows (which hold every method's keys) are unchanged."""

from dataclasses import fields

import pandas as pd
import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from l2c_bench.caching import CACHE_METHODS
from l2c_bench.config import register_configs
from l2c_bench.records import load_results, run_id_for, write_row
from l2c_bench.records.store import SCHEMA_VERSION

register_configs()


# The cache keys every row carried while the schema was one union of all methods' parameters
# (before the per-method schemas), at that union's defaults.
OLD_UNION = {"router": "auto", "threshold": None, "train_if_missing": False, "interval": 2, "depth": 1,
             "key_steps": None, "strategy": "bottom", "ratio": 0.5, "seed": 0, "shifted": True, "blocks": None,
             "boundary": None, "order": 1, "coefficients": "auto"}


def own_keys(name: str) -> set[str]:
    return {"name"} | {f.name for f in fields(CACHE_METHODS[name])}


@pytest.mark.parametrize("name", sorted(CACHE_METHODS))
def test_the_row_config_keeps_only_the_methods_own_cache_keys_and_the_run_id(tmp_path, name):
    from l2c_bench.records import row_config

    composed = OmegaConf.to_container(compose_config(tmp_path, f"cache={name}"), resolve=True)
    if name != "none":
        assert set(composed["cache"]) == own_keys(name)  # the method's schema composes nothing else
    # a config as the older union schema made it: every method's keys, one of them set elsewhere
    full = {**composed, "cache": OLD_UNION | {"depth": 3} | {k: v for k, v in composed["cache"].items()
                                                              if k in own_keys(name)}}
    row = row_config(full)
    assert row["cache"] == {k: composed["cache"][k] for k in own_keys(name)}
    assert {k: v for k, v in row.items() if k != "cache"} == {k: v for k, v in full.items() if k != "cache"}
    assert run_id_for(row) == run_id_for(full) == run_id_for(composed)  # ids of rows already in a store stay valid


def test_a_written_row_holds_only_its_methods_cache_keys(tmp_path):
    """Through the runner (a row that fails at loading: no compute, the same row config as an ok one)."""
    from l2c_bench.run import run_point

    cfg = compose_config(tmp_path, "tracker=none", "cache=fora", "model.checkpoint=/nonexistent.pt")
    row = run_point(cfg)
    assert row["status"] == "failed" and "model.checkpoint" in row["error"]
    assert row["schema_version"] == SCHEMA_VERSION == 3
    stored = load_results(tmp_path).iloc[0]
    cache_columns = {c.removeprefix("config.cache.") for c in stored.index if c.startswith("config.cache.")}
    assert cache_columns == own_keys("fora") == {"name", "interval"}
    assert stored["config.cache.interval"] == 2
    assert row["run_id"] == run_id_for(OmegaConf.to_container(cfg, resolve=True))  # as before: the full config's id


def _row(run_id, cache, steps, macs_g, fid, **config):
    row = {"run_id": run_id, "status": "ok", "config.scale.name": "toy", "config.scale.features": "toy",
           "config.model.arch": "DiT-toy", "config.model.vae": "none", "config.model.default_sampler": "ddim",
           "config.sampler.name": None, "config.steps": steps, "config.cache.name": cache,
           "config.router.lam": 1e-4, "metrics.features": "toy", "metrics.macs_g": macs_g, "metrics.fid": fid,
           "metrics.speedup": 20 * 0.1 / macs_g, "metrics.latency_ms": 10.0 * macs_g}
    row.update({f"config.cache.{k}": v for k, v in config.items()})
    return row


def _every_key(name, **own):
    """An older row: every method's cache keys, at the old union's defaults."""
    return OLD_UNION | own


def test_older_rows_with_every_key_and_newer_rows_analyse_together(tmp_path):
    from analysis.frontier import frontier_tables
    from analysis.labels import paper_frame
    from analysis.tables import build_all

    rows = [_row("none20", "none", 20, 0.2, 3.0), _row("none10", "none", 10, 0.1, 3.5),
            _row("fora3-old", "fora", 20, 0.08, 3.2, **_every_key("fora", interval=3)),  # older: every key
            _row("l2c-k3", "l2c", 20, 0.09, 3.1, router="auto", threshold=None, train_if_missing=False, interval=3),
            _row("fb", "fbcache", 20, 0.15, 3.05, threshold=0.1)]  # newer: no interval, ratio, ... columns
    for r in rows:
        write_row(tmp_path, r["run_id"], r)
    results = load_results(tmp_path)
    assert results.set_index("run_id").loc["fora3-old", "config.cache.ratio"] == 0.5  # older rows load as they are
    assert set(results["schema_version"]) == {1}  # written without the field: the first format
    frame = paper_frame(results).set_index("run_id")
    assert frame["method"].to_dict() == {"none20": "DDIM", "none10": "DDIM", "fora3-old": "FORA",
                                         "l2c-k3": "L2C (k=3)", "fb": "FBCache"}
    assert frame.loc["l2c-k3", "threshold"] == 0.1 and pd.isna(frame.loc["fb", "threshold"])
    table = frontier_tables(results)["frontier_toy_toy_DiT-toy_32_nfe20"]
    lines = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| interval=3 |" in lines["FORA"]  # the method's own keys only, older row or not
    assert "| interval=3, lam=0.0001 |" in lines["L2C"] and "| threshold=0.1 |" in lines["FBCache"]
    assert build_all(results)
    # a store whose rows lack a column entirely (no method there has `interval`)
    only_new = tmp_path / "new"
    for r in (rows[0], rows[4]):
        write_row(only_new, r["run_id"], r)
    newer = load_results(only_new)
    assert "config.cache.interval" not in newer
    assert paper_frame(newer)["method"].tolist() == ["FBCache", "DDIM"]
    assert set(frontier_tables(newer)) == {"frontier_toy_toy_DiT-toy_32_nfe20"}
