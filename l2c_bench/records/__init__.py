"""Results store (source of truth), the typed row it holds, and the W&B mirror."""

from .row import Row
from .samples import SampleRecord, read_samples, write_samples
from .store import flatten, load_results, read_row, row_config, run_id_for, run_key, write_row

__all__ = ["Row", "SampleRecord", "read_samples", "write_samples", "flatten", "load_results", "read_row", "row_config", "run_id_for", "run_key", "write_row"]
