"""Where the analysis reads rows from: the local results store (default), or W&B when online.

W&B runs mirror the rows (`l2c_bench.records.tracker`): the flattened config as the run config,
the metrics in the summary, the status as the run state (finished -> ok, anything else ->
failed: an `unsupported` row reads as failed there). The local store stays the source of truth.
"""

from __future__ import annotations

import pandas as pd


def wandb_rows(project: str, entity: str | None = None, api=None) -> pd.DataFrame:
    """One row per W&B run of `entity/project`, in the local store's flat column names."""
    if api is None:
        import wandb

        api = wandb.Api()
    rows = []
    for run in api.runs(f"{entity}/{project}" if entity else project):
        row = {"run_id": run.name, "status": "ok" if run.state == "finished" else "failed"}
        row.update({f"config.{k}": v for k, v in dict(run.config).items()})
        row.update({f"metrics.{k}": v for k, v in dict(run.summary).items()
                    if not k.startswith("_") and k != "samples"})
        rows.append(row)
    return pd.DataFrame(rows)
