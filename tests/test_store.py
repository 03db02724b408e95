"""The results store under faults: corrupt rows, and relaunching over failed or unsupported rows."""

import json
import logging

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

import l2c_bench.run as run
from l2c_bench.caching import UnsupportedCombination
from l2c_bench.records import load_results, read_row, run_id_for, write_row
from l2c_bench.records.store import CorruptRow

FAST = ["tracker=none", "metrics.converged_nfe=0", "cache=none", "steps=2", "metrics.num_samples=4", "metrics.batch_size=4",
        "metrics.timing_batch=2", "metrics.timing_repeats=1", "metrics.timing_warmup=0", "metrics.fid=false",
        "metrics.grid_samples=4"]
CORRUPTIONS = {"truncated": b'{"run_id": "r", "status": "o', "empty": b"", "not an object": b"[1, 2]",
               "not text": b"\xff\xfe\x00garbage"}


def config(results_dir, *overrides):
    return compose_config(results_dir, *FAST, *overrides)


def run_id_of(cfg) -> str:
    return run_id_for(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("content", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_corrupt_row_is_an_error_naming_its_file(tmp_path, content):
    """Analysis never silently drops a point: load_results names the bad file and how to repair it."""
    write_row(tmp_path, "good-a", {"run_id": "good-a", "status": "ok", "metrics.fid": 1.5})
    write_row(tmp_path, "good-b", {"run_id": "good-b", "status": "failed"})
    bad = tmp_path / "bad" / "result.json"
    bad.parent.mkdir()
    bad.write_bytes(content)
    with pytest.raises(CorruptRow, match="relaunching its point replaces it") as info:
        load_results(tmp_path)
    assert str(bad) in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(CorruptRow, match=str(bad)):
        read_row(tmp_path, "bad")
    bad.unlink()
    rows = load_results(tmp_path)  # the good rows, untouched
    assert sorted(rows.run_id) == ["good-a", "good-b"] and rows.set_index("run_id").loc["good-a", "metrics.fid"] == 1.5


def test_relaunch_over_a_corrupt_row_warns_naming_it_and_replaces_it(tmp_path, caplog):
    cfg = config(tmp_path)
    stored = tmp_path / run_id_of(cfg) / "result.json"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(CORRUPTIONS["truncated"])
    with caplog.at_level(logging.WARNING, logger="l2c_bench.run"):
        row = run.run_point(cfg)
    assert row["status"] == "ok", row.get("error")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(stored) in w and "corrupt result row" in w for w in warnings), warnings
    assert json.loads(stored.read_text()) == json.loads(json.dumps(row, default=str))  # replaced by the new row
    assert load_results(tmp_path).status.tolist() == ["ok"] and row["metrics.latency_ms"] > 0


@pytest.mark.parametrize("fault,status", [(RuntimeError("CUDA out of memory (simulated)"), "failed"),
                                          (UnsupportedCombination("not defined (simulated)"), "unsupported")])
def test_relaunch_retries_a_failed_or_unsupported_row_and_skips_an_ok_one(tmp_path, monkeypatch, fault, status):
    cfg = config(tmp_path)
    real_prepare = run.prepare

    def broken(_cfg):
        raise fault

    monkeypatch.setattr(run, "prepare", broken)
    first = run.run_point(cfg)
    assert first["status"] == status and "(simulated)" in first["error"]
    assert read_row(tmp_path, first["run_id"])["status"] == status
    monkeypatch.setattr(run, "prepare", real_prepare)  # the cause is gone (memory freed, method extended)

    retried = run.run_point(cfg)  # the same point: not skipped
    assert retried["run_id"] == first["run_id"] and retried["status"] == "ok", retried.get("error")
    stored = read_row(tmp_path, first["run_id"])
    assert stored["status"] == "ok" and stored["error"] is None and stored["metrics.latency_ms"] > 0
    assert "traceback" not in stored  # the failed row's fields are gone, not merged
    assert len(load_results(tmp_path)) == 1

    row_file = tmp_path / first["run_id"] / "result.json"
    written = row_file.stat().st_mtime_ns
    monkeypatch.setattr(run, "prepare", broken)  # an ok row is never rerun: prepare is not even reached
    assert run.run_point(cfg) == stored and row_file.stat().st_mtime_ns == written
