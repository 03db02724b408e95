"""Results store (source of truth), the typed row it holds, and the W&B mirror."""

from .row import Row
from .store import flatten, load_results, read_row, row_config, run_id_for, run_key, write_row

__all__ = ["Row", "flatten", "load_results", "read_row", "row_config", "run_id_for", "run_key", "write_row"]
