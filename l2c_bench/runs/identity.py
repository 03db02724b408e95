"""A run's identity: its id in the results store and the row it may already have there."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from ..records import read_row, row_config, run_id_for
from ..records.store import CorruptRow

log = logging.getLogger("l2c_bench.run")


def identify(cfg: DictConfig) -> tuple[str, dict]:
    """(run id, the config as the row records it): the row keeps only the method's own cache keys,
    which give the same id (records.store.run_key)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return run_id_for(config), row_config(config)


def finished_row(cfg: DictConfig, run_id: str) -> dict | None:
    """The run's stored ok row, which stands unless `force`; None if it is to be (re)computed."""
    row = stored_row(cfg.results_dir, run_id)
    return row if row and row.get("status") == "ok" and not cfg.force else None


def stored_row(results_dir: str, run_id: str) -> dict | None:
    """The run's stored row; a corrupt file counts as none (with a warning naming it): the rerun replaces it."""
    try:
        return read_row(results_dir, run_id)
    except CorruptRow as exc:
        log.warning("rerunning %s: %s", run_id, exc)
        return None

