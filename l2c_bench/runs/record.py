"""Record one run's row: the one place a row is written (then mirrored to W&B)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ..records import flatten, write_row
from ..records.tracker import make_tracker
from ..system.provenance import now


def record_row(cfg: DictConfig, run_id: str, run_dir: Path, row: dict, config: dict) -> dict:
    """The one place a row is written (then mirrored to W&B)."""
    row["provenance.end_time"] = now()
    tracker = make_tracker(cfg.tracker, group=cfg.tracker.group or _sweep_name(), name=run_id,
                           results_dir=cfg.results_dir, config=flatten(config))
    if tracker is not None:
        row["provenance.wandb_dir"] = tracker.directory
    write_row(cfg.results_dir, run_id, row)
    if tracker is not None:
        tracker.log({k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")},
                    image_path=str(run_dir / "samples.png"))
        tracker.finish(exit_code=0 if row["status"] == "ok" else 1)
    return row


def _sweep_name() -> str:
    try:
        hc = HydraConfig.get()
    except ValueError:
        return "interactive"
    return Path(hc.sweep.dir if hc.mode == RunMode.MULTIRUN else hc.run.dir).name

