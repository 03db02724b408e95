"""One reader of the config: the composed Hydra config is read in `runs/prepare.py` (and by the
entry points that hand it there); everything else is given a frozen, typed description."""

import dataclasses
import re

import pytest
from conftest import ROOT, compose_config

from l2c_bench.description import ModelSpec, RunDescription, schema
from l2c_bench.runs.prepare import describe

# Modules that may hold a Hydra config, each with its reason.
CONFIG_READERS = {
    "l2c_bench/runs/prepare.py": "the one reader: describe() makes the run's description",
    "l2c_bench/run.py": "entry point: hands the config to prepare, and identifies the run from it",
    "l2c_bench/calibrate.py": "entry point",
    "l2c_bench/train_router.py": "entry point",
    "l2c_bench/runs/summary.py": "Hydra callback: Hydra hands it the sweep's config (its sweeper's parameters)",
}


def test_only_the_reader_and_the_entry_points_hold_the_hydra_config():
    holders = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "l2c_bench").rglob("*.py")
                     if re.search(r"DictConfig|\bcfg(\.|\[)", p.read_text()))
    assert holders == sorted(CONFIG_READERS)


def test_a_description_mirrors_the_schema_and_is_frozen(tmp_path):
    assert [f.name for f in dataclasses.fields(ModelSpec)] == \
        ["scale", *(f.name for f in dataclasses.fields(schema.ModelConfig))]
    run = describe(compose_config(tmp_path, "model=uvit", "steps=10", "+model.overrides.depth=3", "cache=fora"))
    assert isinstance(run, RunDescription)
    assert (run.model.family, run.model.scale, run.sampler.name, run.steps) == ("uvit", "toy", "dpm_solver2", 10)
    assert run.cache.name == "fora" and run.cache.interval == 2  # the method, built with its own defaults
    assert run.model.overrides == {"depth": 3} and run.metrics.converged_nfe == 250  # conf/scale/toy.yaml
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.steps = 20
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.metrics.num_samples = 1
    with pytest.raises(TypeError):
        run.model.overrides["depth"] = 4
    assert describe(compose_config(tmp_path, "cache=none")).cache is None
