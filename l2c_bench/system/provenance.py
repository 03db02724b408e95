"""Where and with what a run was produced."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def collect(device: torch.device) -> dict:
    """Git SHA and dirty flag, library versions, device, host, SLURM ids (flat keys)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "torch": torch.__version__,
        "hydra": _version("hydra-core"),
        "wandb": _version("wandb"),
        "python": platform.python_version(),
        "device": str(device),
        "device_name": device_name(device),
        "num_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }
