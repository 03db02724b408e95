"""A normal (non-editable) install works outside the checkout: the wheel holds the configs, the
sweep files, the toy assets and the routers, and no top-level `analysis`; installed into a scratch
folder and run from an empty one, it composes and runs a tiny point from its own files.

The wheel is built from a copy of what the build reads (pyproject.toml, README.md and the package
folders, links kept), so the build leaves no `build/` or `*.egg-info` in the checkout."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from docpages import write_page_files

BUILD_INPUTS = ["pyproject.toml", "README.md", "l2c_bench", "conf", "sweeps"]  # conf/sweep -> ../sweeps
# every file of these checkout folders ships (l2c_bench/conf is a link to conf/: its yaml files)
DATA = {"l2c_bench/toy/assets": "*", "l2c_bench/caching/routers": "*", "conf": "*.yaml"}
TINY = ["tracker=none", "steps=10", "metrics.num_samples=4", "metrics.batch_size=4", "metrics.timing_batch=2",
        "metrics.timing_repeats=1", "metrics.timing_warmup=0", "metrics.fid=false", "metrics.converged_nfe=0",
        "metrics.grid_samples=4"]


def pip(*args, cwd):
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   check=True, cwd=cwd, capture_output=True, text=True, timeout=300)


def expected_files() -> set[str]:
    """The wheel paths of every file the package needs from the checkout."""
    out = {str(p.relative_to(ROOT)) for p in (ROOT / "l2c_bench").rglob("*.py")}  # no conf/ there: not followed
    for folder, pattern in DATA.items():
        for path in (ROOT / folder).rglob(pattern):
            if path.is_file():
                name = str(path.relative_to(ROOT))
                out.add("l2c_bench/" + name if folder == "conf" else name)
    for sweep in (ROOT / "sweeps").glob("*.yaml"):  # rglob does not follow conf/sweep's link
        out.add(f"l2c_bench/conf/sweep/{sweep.name}")
    return out


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_runs_a_point_from_an_empty_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    pip("wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src),
        cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("l2c_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not expected_files() - names, sorted(expected_files() - names)
    assert {n.split("/")[0] for n in names} == {"l2c_bench", wheel.name.split("-py")[0] + ".dist-info"}  # no analysis

    site = tmp_path / "site"
    pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=tmp_path)
    here = tmp_path / "elsewhere"  # an empty folder: no conf/, no checkout on the path
    here.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # torch, hydra, ... from this venv; l2c_bench from the wheel

    def python(*args):
        proc = subprocess.run([sys.executable, *args], cwd=here, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    where = python("-c", "import l2c_bench, l2c_bench.config as c; print(l2c_bench.__file__); print(c.CONF_DIR)")
    assert all(Path(line).is_relative_to(site) for line in where.split()), where  # not the editable install

    # the documented user folder (docs/configuration.md) on the wheel's configs
    write_page_files(ROOT / "docs" / "configuration.md", "my_conf", here)
    job = python("-m", "l2c_bench.run", "--cfg", "job", "hydra.searchpath=[file://my_conf]", "cache=fora_every3",
                 *TINY)
    assert "name: fora\n  interval: 3\n" in job and "steps: 10\n" in job

    results = tmp_path / "results"
    python("-m", "l2c_bench.run", f"results_dir={results}", *TINY)  # the default point: L2C, shipped router
    (row_file,) = results.glob("*/result.json")
    row = json.loads(row_file.read_text())
    assert row["status"] == "ok", row.get("error")
    assert row["config.cache.name"] == "l2c" and row["metrics.router_file"].startswith("DiTtoy-ddim-nfe10-")
    assert row["provenance.git_sha"] is None  # not run from a checkout
    assert not (here / "results").exists() and sorted(p.name for p in here.iterdir()) == ["my_conf"]
