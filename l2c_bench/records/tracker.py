"""W&B mirror of the local store. Never the source of truth: any W&B failure is a warning.

An unreachable W&B server (compute nodes often have no internet) costs one bounded wait
(`tracker.init_timeout_s`): the point then logs offline, and so do the sweep's later points at
once, in this process and in the sweep's other jobs (a marker file beside the offline runs);
`wandb sync` uploads them later.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..description import TrackerSpec

log = logging.getLogger(__name__)

_UNREACHABLE: set[str] = set()  # sweep groups whose W&B server this process found unreachable


def _marker(directory: str, group: str) -> Path:
    """Tells the sweep's other jobs (SLURM tasks: other processes) that W&B was unreachable."""
    return Path(directory) / "wandb" / f".unreachable-{group}"


def sync_command(directory: str) -> str:
    return f"wandb sync {Path(directory) / 'wandb'}/offline-run-*"


class WandbMirror:
    """One W&B run per benchmark point; `finish()` must be called (in a `finally`)."""

    def __init__(self, *, mode: str, project: str, entity: str | None, group: str, name: str,
                 directory: str, config: Mapping[str, Any], init_timeout_s: float = 20.0):
        self.run = None
        if mode not in ("offline", "online", "disabled"):
            log.warning("tracker.mode=%r is not offline|online|disabled: W&B mirroring is off", mode)
            return
        if mode == "online" and (group in _UNREACHABLE or _marker(directory, group).exists()):
            log.warning("W&B was unreachable earlier in this sweep: %s logs offline (upload later: %s)",
                        name, sync_command(directory))
            mode = "offline"
        try:
            self.run = self._init(mode, project, entity, group, name, directory, config, init_timeout_s)
        except Exception as exc:  # noqa: BLE001 - the local row must never depend on W&B
            if mode != "online":
                log.warning("W&B init failed (%s: %s); the local result row is still written",
                            type(exc).__name__, exc)
                return
            _UNREACHABLE.add(group)
            try:
                _marker(directory, group).parent.mkdir(parents=True, exist_ok=True)
                _marker(directory, group).write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
            except OSError:
                pass  # the in-process memo still spares this process's later points the wait
            log.warning("W&B unreachable (%s: %s; tracker.init_timeout_s=%g): %s and the sweep's later points "
                        "log offline; upload them later with: %s", type(exc).__name__, exc, init_timeout_s, name,
                        sync_command(directory))
            try:
                self.run = self._init("offline", project, entity, group, name, directory, config, init_timeout_s)
            except Exception as offline_exc:  # noqa: BLE001
                log.warning("W&B offline init failed too (%s: %s); the local result row is still written",
                            type(offline_exc).__name__, offline_exc)

    @staticmethod
    def _init(mode, project, entity, group, name, directory, config, init_timeout_s):
        import wandb

        Path(directory).mkdir(parents=True, exist_ok=True)
        return wandb.init(project=project, entity=entity, group=group, name=name, mode=mode, dir=directory,
                          config=dict(config), reinit="create_new",
                          settings=wandb.Settings(silent=True, console="off", init_timeout=init_timeout_s))

    @property
    def directory(self) -> str | None:
        return None if self.run is None else os.path.dirname(self.run.dir)

    def log(self, metrics: Mapping[str, Any], image_path: str | None = None) -> None:
        if self.run is None:
            return
        try:
            import wandb

            payload = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
            if image_path and Path(image_path).is_file():
                payload["samples"] = wandb.Image(image_path)
            self.run.log(payload)
            for key, value in payload.items():
                if key != "samples":
                    self.run.summary[key] = value
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B logging failed (%s: %s)", type(exc).__name__, exc)

    def save(self, path: str | os.PathLike) -> None:
        """Mirror a file of the run (its per-sample record) into the W&B run's files, under its name:
        a copy in the run's folder, which W&B uploads with the run (`run.save` would link it and
        print a warning per point)."""
        if self.run is None or not Path(path).is_file():
            return
        try:
            shutil.copy2(path, Path(self.run.dir) / Path(path).name)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B could not save %s (%s: %s)", path, type(exc).__name__, exc)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B finish failed (%s: %s)", type(exc).__name__, exc)


def check_tracker(spec: TrackerSpec) -> None:
    """Fail before any compute on an unknown tracker or a wait W&B cannot honour."""
    if spec.name not in ("wandb", "none"):
        raise ValueError(f"tracker.name={spec.name!r} is unknown; valid: wandb, none")
    if spec.name == "wandb" and not spec.init_timeout_s > 0:
        raise ValueError(f"tracker.init_timeout_s must be > 0 seconds (the longest wait for W&B), "
                         f"got {spec.init_timeout_s}")


def make_tracker(spec: TrackerSpec, *, group: str, name: str, results_dir: str, config: Mapping[str, Any]):
    check_tracker(spec)
    if spec.name == "none" or spec.mode == "disabled":
        return None
    return WandbMirror(mode=spec.mode, project=spec.project, entity=spec.entity, group=group, name=name,
                       directory=spec.dir or results_dir, config=config, init_timeout_s=spec.init_timeout_s)
