import json
import os
import tempfile
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share two cores: one math thread each (children inherit it) instead of four
    # threads spinning against each other. Set before anything imports torch.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "reference"  # what the tests read ships with them (tests/data/README.md)
SLURM_SCRIPT = ROOT / "tests" / "slurm" / "cluster.sh"


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="run the whole suite, slow tests included (what .ci/run runs)")


def pytest_collection_modifyitems(config, items):
    """`python -m pytest` is the everyday fast set; tests marked `slow` run with `--full`.

    The SLURM tests share one cluster and mostly wait on it: they run as one group on one xdist
    worker (`--dist loadgroup`), and first, so that the waiting overlaps the rest of the suite."""
    if not config.getoption("--full"):
        slow = [item for item in items if item.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if not item.get_closest_marker("slow")]
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)  # stable: slurm first


def pytest_report_header(config):
    if not config.getoption("--full"):
        return "fast set: tests marked slow are deselected (run them with --full)"


def compose_config(results_dir, *overrides):
    """The project's Hydra config (conf/config.yaml) with results in `results_dir`."""
    from l2c_bench.config import compose

    return compose([f"results_dir={results_dir}", *overrides])


def flow_kwargs(nfe: int, **over) -> dict:
    """`generate`'s keywords in the flow-family zoo tests (FLUX.2, Wan, LTX-Video): two samples of
    prompts 1 and 2, flow Euler at `nfe` steps, guidance 2; `over` replaces any of them."""
    return {**dict(labels=[1, 2], seeds=[0, 1], steps=nfe, sampler="flow_euler", guidance_scale=2.0), **over}


def trained_video_row(results_dir, cls: str, nfe: int, *overrides) -> dict:
    """The row of a FORA point of the video class `cls` on its shipped trained toy weights (two
    samples, converged reference at NFE 20), checked: ok, and its headline quality the per-frame
    PSNR against the converged video with a finite interval around it."""
    import math

    from l2c_bench.run import run_point

    row = run_point(compose_config(
        results_dir, "model=diffusers", f"model.diffusers_class={cls}", "cache=fora", "tracker=none", f"steps={nfe}",
        "metrics.num_samples=2", "metrics.batch_size=2", "metrics.converged_nfe=20", "metrics.timing_batch=1",
        "metrics.timing_repeats=2", "metrics.timing_min_repeats=2", "metrics.interval_resamples=100", *overrides))
    assert row["status"] == "ok", row.get("error")
    assert row["metrics.primary_quality"] == "converged_frame_psnr_db" and row["metrics.converged_nfe"] == 20
    low, value, high = (row[f"metrics.converged_frame_psnr_db{k}"] for k in ("_ci_low", "", "_ci_high"))
    assert 0 < low <= value <= high < math.inf
    return row


# A point run only to check what its row says of the method (status, reuse, MACs, the method's own
# records): two samples in one batch, timed once with no warm-up, no intervals, no image-set metrics.
ROW_ONLY = ["tracker=none", "metrics.num_samples=2", "metrics.batch_size=2", "metrics.timing_batch=2",
            "metrics.timing_repeats=1", "metrics.timing_warmup=0", "metrics.interval_resamples=0", "metrics.fid=false",
            "metrics.class_accuracy=false", "metrics.converged_nfe=0", "metrics.grid_samples=2", "calibration.samples=2"]


def counted_macs(model, cache, kwargs: dict):
    """(generate's result, the MACs the call ran per sample and guidance pass) of one guided sampling
    call, as torch's FLOP counter counts them (on a CPU it counts no attention product: the
    paper's linear count). CFG runs a batch of 2N."""
    from torch.utils.flop_counter import FlopCounterMode

    from l2c_bench import generate

    with FlopCounterMode(display=False) as counter:
        result = generate(model, cache=cache, **kwargs)
    return result, sum(counter.get_flop_counts()["Global"].values()) / 2 / (2 * len(kwargs["seeds"]))


def stored_references(root, kind: str) -> list[tuple]:
    """(identity, latents, file) of every sample in a shared reference store (records.references)
    under `root`, ordered by (nfe, seed)."""
    import torch

    entries = []
    for path in Path(root, kind).rglob("*.pt"):
        stored = torch.load(path, weights_only=True)
        entries.append((stored["identity"], stored["latents"], path))
    return sorted(entries, key=lambda e: (e[0]["nfe"], e[0]["seed"]))


def load_reference(name: str) -> dict:
    path = REFERENCE / name
    if not path.is_file():  # a core fixture: fail loudly, never skip
        raise FileNotFoundError(f"reference file {path} missing from the repository")
    return json.loads(path.read_text())


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path):
    """Tests never touch the network or the user's W&B/HF state."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local one-node SLURM cluster (tests/slurm/cluster.sh), which the tests use but never start.

    `.ci/run` starts it and sets L2C_REQUIRE_SLURM=1, so there a missing cluster fails the tests; elsewhere
    they skip and say how to start one (starting installs Debian packages, which plain pytest must not do).
    Yields the environment a client needs.
    """
    import subprocess

    status = subprocess.run(["bash", str(SLURM_SCRIPT), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        why = f"no local SLURM test cluster ({status.stderr.strip() or 'not running'})"
        if os.environ.get("L2C_REQUIRE_SLURM") == "1":
            pytest.fail(f"{why}, and L2C_REQUIRE_SLURM=1 says one must run", pytrace=False)
        pytest.skip(f"{why}: start one with `bash tests/slurm/cluster.sh start` (as root; installs slurm-wlm and munge)")
    env = dict(os.environ)
    for line in subprocess.run(["bash", str(SLURM_SCRIPT), "env"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.replace("$PATH", env.get("PATH", ""))
    yield env


# The shared reference store (records.references) of every test and of the runs they start in
# subprocesses: a fresh folder per test session, never the user's ~/.cache.
os.environ.setdefault("L2C_BENCH_REFERENCES", tempfile.mkdtemp(prefix="l2c-bench-references-"))
