"""`python -m l2c_bench.catalog` lists every option from the registries and config files."""

import dataclasses
import subprocess
import sys

from conftest import ROOT

from l2c_bench.caching import CACHE_METHODS
from l2c_bench.catalog import main
from l2c_bench.sampling import SAMPLERS


def test_every_method_sampler_and_sweep_is_listed_with_its_description(capsys):
    main([])
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name, cls in CACHE_METHODS.items():
        row = next(i for i, line in enumerate(lines) if line.startswith(f"  {name} "))
        described = lines[row].split(maxsplit=1)[1]
        assert len(described) > 20, f"{name} has no description"
        for field in dataclasses.fields(cls):
            if field.default is not dataclasses.MISSING:
                assert f"{field.name}={field.default!r}" in out
    for name in SAMPLERS:
        assert any(line.startswith(f"  {name} ") for line in lines)
    for path in (ROOT / "sweeps").glob("*.yaml"):
        assert any(line.startswith(f"  {path.stem} ") for line in lines), path.stem
    assert "hydra/launcher=  slurm, submitit_local" in out


def test_the_defaults_shown_are_the_defaults_a_run_uses(tmp_path, capsys):
    """For every method, each `parameter=value` the catalog prints is what `cache=<name>` composes
    to (one place declares each default: the method's dataclass)."""
    import ast

    from conftest import compose_config
    from omegaconf import OmegaConf

    from l2c_bench.config import register_configs

    register_configs()
    main(["cache"])
    lines = capsys.readouterr().out.splitlines()
    for name in CACHE_METHODS:
        row = next(i for i, line in enumerate(lines) if line.startswith(f"  {name} "))
        end = next((i for i in range(row + 1, len(lines)) if not lines[i].startswith(" " * 20)), len(lines))
        shown = next((line for line in lines[row + 1:end] if "parameters:" in line), "").split("parameters:")[-1]
        shown = dict(item.split("=", 1) for item in shown.strip().split(", ") if item)
        composed = OmegaConf.to_container(compose_config(tmp_path, f"cache={name}").cache)
        composed.pop("name")
        if name == "none":  # every method's parameter, unset and inert
            assert not shown and set(composed.values()) == {None}
            continue
        assert {k: ast.literal_eval(v) for k, v in shown.items()} == composed, name


def test_one_section_and_a_bad_section():
    cache_only = subprocess.run([sys.executable, "-m", "l2c_bench.catalog", "cache"], capture_output=True, text=True)
    assert cache_only.returncode == 0 and cache_only.stdout.startswith("cache=") and "+sweep=" not in cache_only.stdout
    bad = subprocess.run([sys.executable, "-m", "l2c_bench.catalog", "caches"], capture_output=True, text=True)
    assert bad.returncode == 2 and "valid: model, sampler, cache, sweep, other" in bad.stderr
