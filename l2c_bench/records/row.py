"""One run's result row, typed. `Row.flat()` is what `result.json` holds and what
`load_results` reads back (docs/results.md, "Row fields"); the run builds a `Row` step by step
and `runs.record.record_row` writes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .store import SCHEMA_VERSION, flatten


@dataclass
class Row:
    run_id: str
    config: dict[str, Any]  # the resolved config; `cache` holds the method's own keys only
    provenance: dict[str, Any]  # git, versions, device, host, SLURM ids, start/end time, W&B folder
    status: str | None = None  # ok | failed | unsupported once the run is over
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # flat: runs.score.finalize's names
    traceback: str | None = None  # a failed row's, last 4000 characters
    schema_version: int = SCHEMA_VERSION

    def flat(self) -> dict[str, Any]:
        """The stored form: `run_id`, `schema_version`, `config.*`, `provenance.*`, `metrics.*`,
        `status`, `error` (and `traceback` for a failed row)."""
        out = {"run_id": self.run_id, "schema_version": self.schema_version, **flatten({"config": self.config}),
               **flatten({"provenance": self.provenance}), **{f"metrics.{k}": v for k, v in self.metrics.items()},
               "status": self.status, "error": self.error}
        if self.traceback is not None:
            out["traceback"] = self.traceback
        return out
