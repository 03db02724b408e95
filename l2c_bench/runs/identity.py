"""A run's identity: its id in the results store and the row it may already have there."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping

from ..records import read_row, row_config, run_id_for
from ..records.store import CorruptRow

log = logging.getLogger("l2c_bench.run")


def identify(config: Mapping) -> tuple[str, dict]:
    """(run id, the config as the row records it) of a resolved config given as plain values: the
    row keeps only the method's own cache keys, which give the same id (records.store.run_key)."""
    config = copy.deepcopy(dict(config))
    return run_id_for(config), row_config(config)


def finished_row(results_dir: str, run_id: str, *, force: bool) -> dict | None:
    """The run's stored ok row, which stands unless `force`; None if it is to be (re)computed."""
    row = stored_row(results_dir, run_id)
    return row if row and row.get("status") == "ok" and not force else None


def stored_row(results_dir: str, run_id: str) -> dict | None:
    """The run's stored row; a corrupt file counts as none (with a warning naming it): the rerun replaces it."""
    try:
        return read_row(results_dir, run_id)
    except CorruptRow as exc:
        log.warning("rerunning %s: %s", run_id, exc)
        return None

