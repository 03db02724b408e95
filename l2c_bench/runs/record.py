"""Record one run's row: the one place a row is written (then mirrored to W&B)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from ..description import TrackerSpec
from ..records import flatten, write_row
from ..records.row import Row
from ..records.tracker import make_tracker
from ..system.provenance import now


def record_row(tracker_spec: TrackerSpec, results_dir: str, run_dir: Path, row: Row) -> dict:
    """The one place a row is written (then mirrored to W&B); returns it as stored (flat)."""
    row.provenance["end_time"] = now()
    tracker = make_tracker(tracker_spec, group=tracker_spec.group or _sweep_name(), name=row.run_id,
                           results_dir=results_dir, config=flatten(row.config))
    if tracker is not None:
        row.provenance["wandb_dir"] = tracker.directory
    flat = row.flat()
    write_row(results_dir, row.run_id, flat)
    if tracker is not None:
        tracker.log(dict(row.metrics), image_path=str(run_dir / "samples.png"))
        if row.metrics.get("samples_file"):  # the per-sample record (records.samples)
            tracker.save(run_dir / row.metrics["samples_file"])
        tracker.finish(exit_code=0 if row.status == "ok" else 1)
    return flat


def _sweep_name() -> str:
    try:
        hc = HydraConfig.get()
    except ValueError:
        return "interactive"
    return Path(hc.sweep.dir if hc.mode == RunMode.MULTIRUN else hc.run.dir).name

