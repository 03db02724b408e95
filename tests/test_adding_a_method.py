"""docs/adding_a_method.md is real: its code blocks, put where their titles say (in scratch copies),
make a method that composes, runs through the run's code path, and passes its own tests."""

import re
import shutil
import sys

import pytest
from conftest import ROOT
from docpages import load_module, page_blocks, run_page_tests
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException

from l2c_bench import catalog
from l2c_bench.caching import CACHE_METHODS
from l2c_bench.config import register_configs

PAGE = ROOT / "docs" / "adding_a_method.md"




@pytest.fixture
def documented_method(tmp_path, monkeypatch):
    """The page's method registered as its steps say, with conf/ copied and its yaml added."""
    blocks = page_blocks(PAGE)
    assert set(blocks) == {"l2c_bench/caching/methods/skip_mlp.py", "registry", "conf/cache/skip_mlp.yaml",
                           "tests/test_skip_mlp.py"}
    module_file = tmp_path / "skip_mlp.py"
    module_file.write_text(blocks["l2c_bench/caching/methods/skip_mlp.py"])
    module = load_module(module_file, "skip_mlp_example")
    name, cls = re.fullmatch(r'\s*"(\w+)": (\w+),\s*', blocks["registry"]).groups()  # the registry line
    monkeypatch.setitem(CACHE_METHODS, name, getattr(module, cls))
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, symlinks=True)
    (conf / "cache" / "skip_mlp.yaml").write_text(blocks["conf/cache/skip_mlp.yaml"])
    register_configs()  # what l2c_bench.run does at import, now with the method registered
    monkeypatch.setattr(catalog, "CONF", conf)
    yield module, conf, blocks
    monkeypatch.undo()  # the registry without the method, then the schemas as they were
    ConfigStore.instance().repo["cache"].pop("skip_mlp_schema.yaml", None)
    register_configs()  # `none`'s schema (every method's keys) without skip_mlp's
    sys.modules.pop("skip_mlp_example", None)
    sys.modules.pop("test_skip_mlp_example", None)


def test_the_documented_method_composes_runs_and_is_listed(documented_method, tmp_path):
    from l2c_bench.records import read_row
    from l2c_bench.run import run_point

    module, conf, _ = documented_method
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="cache.order"):
            compose("config", overrides=["cache=skip_mlp", "cache.order=2"])  # a key it does not have
        cfg = compose("config", overrides=[
            "cache=skip_mlp", "steps=4", f"results_dir={tmp_path / 'results'}", "tracker=none",
            "metrics.converged_nfe=0", "metrics.num_samples=4", "metrics.batch_size=4", "metrics.timing_batch=1",
            "metrics.timing_repeats=6", "metrics.timing_warmup=0", "metrics.fid=false", "metrics.grid_samples=4",
            "metrics.interval_resamples=50"])
    row = run_point(cfg)
    assert row["status"] == "ok", row.get("error")
    stored = read_row(tmp_path / "results", row["run_id"])
    assert stored["config.cache.name"] == "skip_mlp" and stored["config.cache.interval"] == 2
    assert {k for k in stored if k.startswith("config.cache.")} == {"config.cache.name", "config.cache.interval"}
    assert stored["metrics.cached_ratio"] == 0.5 and stored["metrics.reused_ratio_all"] == 0.25
    assert 1.0 < stored["metrics.macs_speedup"] < 2.0  # half the MLP work at half the evaluations
    assert stored["metrics.paired_image_psnr_db"] > 10 and stored["metrics.speedup_ci_low"] is not None
    assert "skip_mlp" in catalog.caches() and "Skip-MLP (example)" in catalog.caches()
    assert "skip_mlp" in catalog.sweep_values("cache=glob(*,exclude=[*_schema,heuristic,layer_drop,faster_diffusion])")

    from analysis.labels import method
    assert method({"config.cache.name": "skip_mlp"}) == "Skip-MLP"
    # the docs' method tables are written from the registry: its rows appear, nothing else moves
    docs = tmp_path / "docs_root"
    (docs / "docs").mkdir(parents=True)
    for doc in ("README.md", "docs/caching.md"):
        shutil.copy(ROOT / doc, docs / doc)
    assert catalog.write_docs(docs) == ["README.md", "docs/caching.md"]
    assert "| `skip_mlp` | attention every evaluation, each MLP every `interval`-th (an example) |" in \
        (docs / "README.md").read_text()
    assert "| `skip_mlp` | `interval` (2) | attention at every evaluation;" in (docs / "docs" / "caching.md").read_text()
    assert catalog.write_docs(docs) == []


def test_the_documented_tests_pass(documented_method, tmp_path):
    _, _, blocks = documented_method
    assert len(run_page_tests(blocks["tests/test_skip_mlp.py"], tmp_path / "test_skip_mlp.py", "test_skip_mlp_example")) == 2
