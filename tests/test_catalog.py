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


def test_one_section_and_a_bad_section():
    cache_only = subprocess.run([sys.executable, "-m", "l2c_bench.catalog", "cache"], capture_output=True, text=True)
    assert cache_only.returncode == 0 and cache_only.stdout.startswith("cache=") and "+sweep=" not in cache_only.stdout
    bad = subprocess.run([sys.executable, "-m", "l2c_bench.catalog", "caches"], capture_output=True, text=True)
    assert bad.returncode == 2 and "valid: model, sampler, cache, sweep, other" in bad.stderr
