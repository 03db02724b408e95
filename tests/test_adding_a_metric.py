"""docs/adding_a_metric.md is real: its code blocks, put where their titles say (in scratch copies),
make a metric that registers, is recorded by a run (row, interval, per-sample column) and passes
its own tests."""

import re
import sys

import numpy as np
import pytest
from conftest import ROOT
from docpages import load_module, page_blocks, run_page_tests
from hydra import compose, initialize_config_dir

from l2c_bench.metrics import registry

PAGE = ROOT / "docs" / "adding_a_metric.md"




@pytest.fixture
def documented_metric(tmp_path):
    """The page's metric registered as its steps say (its module loaded from a scratch copy)."""
    blocks = page_blocks(PAGE)
    assert set(blocks) == {"l2c_bench/metrics/paired_l1.py", "registry", "tests/test_paired_l1.py"}
    module_name = re.fullmatch(r'\s*"([\w.]+)",\s*', blocks["registry"]).group(1)  # the METRIC_MODULES line
    assert module_name == "l2c_bench.metrics.paired_l1" and module_name not in registry.METRIC_MODULES
    module_file = tmp_path / "paired_l1.py"
    module_file.write_text(blocks["l2c_bench/metrics/paired_l1.py"])
    try:
        yield load_module(module_file, "paired_l1_example"), blocks
    finally:
        registry.METRICS.pop("paired_image_l1", None)
        sys.modules.pop("paired_l1_example", None)
        sys.modules.pop("test_paired_l1_example", None)


def test_the_documented_tests_pass(documented_metric, tmp_path):
    _, blocks = documented_metric
    assert len(run_page_tests(blocks["tests/test_paired_l1.py"], tmp_path / "test_paired_l1.py", "test_paired_l1_example")) == 2


def test_the_documented_metric_is_recorded_by_a_run(documented_metric, tmp_path):
    from l2c_bench.records import read_row
    from l2c_bench.records.samples import read_samples
    from l2c_bench.run import run_point

    assert registry.higher_is_better("metrics.paired_image_l1") is False
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfgs = {cache: compose("config", overrides=[
            f"cache={cache}", "steps=4", f"results_dir={tmp_path / 'results'}", "tracker=none",
            "metrics.converged_nfe=0", "metrics.num_samples=4", "metrics.batch_size=2", "metrics.timing_batch=1",
            "metrics.timing_repeats=6", "metrics.timing_warmup=0", "metrics.fid=false", "metrics.grid_samples=4",
            "metrics.interval_resamples=50"]) for cache in ("fora", "none")}
    rows = {}
    for cache, cfg in cfgs.items():
        row = run_point(cfg)
        assert row["status"] == "ok", row.get("error")
        rows[cache] = read_row(tmp_path / "results", row["run_id"])
    cached = rows["fora"]
    value = cached["metrics.paired_image_l1"]
    assert 0 < value < 2 and cached["metrics.paired_image_l1_ci_low"] <= value <= cached["metrics.paired_image_l1_ci_high"]
    record = read_samples(tmp_path / "results" / cached["run_id"])
    assert record.columns["paired_image_l1"].mean() == pytest.approx(value)
    assert np.all(record.columns["paired_image_l1"] >= 0)
    assert "metrics.paired_image_l1" not in rows["none"]  # no twin: no value
