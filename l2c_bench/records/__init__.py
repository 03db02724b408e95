"""Results store (source of truth), provenance, and the W&B mirror."""

from .store import flatten, load_results, read_row, row_config, run_id_for, run_key, write_row

__all__ = ["flatten", "load_results", "read_row", "row_config", "run_id_for", "run_key", "write_row"]
