"""W&B mirror of the local store. Never the source of truth: any W&B failure is a warning."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class WandbMirror:
    """One W&B run per benchmark point; `finish()` must be called (in a `finally`)."""

    def __init__(self, *, mode: str, project: str, entity: str | None, group: str, name: str,
                 directory: str, config: Mapping[str, Any]):
        self.run = None
        if mode not in ("offline", "online", "disabled"):
            log.warning("tracker.mode=%r is not offline|online|disabled: W&B mirroring is off", mode)
            return
        try:
            import wandb

            Path(directory).mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=project, entity=entity, group=group, name=name, mode=mode,
                                  dir=directory, config=dict(config), reinit="create_new",
                                  settings=wandb.Settings(silent=True, console="off"))
        except Exception as exc:  # noqa: BLE001 - the local row must never depend on W&B
            log.warning("W&B init failed (%s: %s); the local result row is still written",
                        type(exc).__name__, exc)
            self.run = None

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

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B finish failed (%s: %s)", type(exc).__name__, exc)


def check_tracker(cfg) -> None:
    """Fail before any compute on an unknown tracker."""
    if cfg.name not in ("wandb", "none"):
        raise ValueError(f"tracker.name={cfg.name!r} is unknown; valid: wandb, none")


def make_tracker(cfg, *, group: str, name: str, results_dir: str, config: Mapping[str, Any]):
    check_tracker(cfg)
    if cfg.name == "none" or cfg.mode == "disabled":
        return None
    return WandbMirror(mode=cfg.mode, project=cfg.project, entity=cfg.entity, group=group, name=name,
                       directory=cfg.dir or results_dir, config=config)
