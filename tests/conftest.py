import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("L2C_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))


def compose_config(results_dir, *overrides):
    """The project's Hydra config (conf/config.yaml) with results in `results_dir`."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"results_dir={results_dir}", *overrides])


def load_reference(name: str) -> dict:
    path = REFERENCE / name
    if not path.is_file():  # a core fixture: fail loudly, never skip
        raise FileNotFoundError(f"reference file {path} missing (set L2C_REFERENCE_DIR)")
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
    """The local one-node SLURM cluster (tests/slurm/cluster.sh), started once per session.

    Yields the environment a client needs. CI starts it in .ci/run already; starting twice is a no-op.
    """
    import subprocess

    script = ROOT / "tests" / "slurm" / "cluster.sh"
    proc = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"could not start the test SLURM cluster:\n{proc.stderr[-3000:]}")
    env = dict(os.environ)
    for line in subprocess.run(["bash", str(script), "env"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.replace("$PATH", env.get("PATH", ""))
    yield env
