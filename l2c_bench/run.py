"""One benchmark point: identity -> prepare -> sample -> score -> record (each step a module of
`l2c_bench.runs`; this module runs them in order and turns any failure into a row).

    python -m l2c_bench.run                                    # toy DiT, DDIM, 20 NFE, L2C (learned router)
    python -m l2c_bench.run cache=none                         # the same point uncached
    python -m l2c_bench.run -m model=dit,uvit steps=10,20,50   # a six-point sweep
    python -m l2c_bench.run --cfg job                          # print the resolved config only

Each run writes `<results_dir>/<run_id>/result.json` (status ok or failed) and `samples.png`,
and mirrors both to W&B (offline by default). A run whose ok row exists is skipped unless
`force=true`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from contextlib import nullcontext
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .caching import UnsupportedCombination
from .config import CONF_DIR, register_configs
from .description import TrackerSpec, spec_of
from .records.row import Row
from .records.store import check_writable
from .records.tracker import check_tracker
from .runs.identity import finished_row, identify
from .runs.prepare import prepare
from .runs.record import record_row
from .runs.sample import sample_part, write_own_shard
from .runs.score import finalize
from .runs.shards import join_parts, load_shards, missing_shards
from .runs.summary import point_line, point_report, write_run_id
from .system.devices import init_distributed, resolve_device
from .system.files import exclusive
from .system.provenance import collect, now

log = logging.getLogger("l2c_bench.run")
register_configs()


def run_point(cfg: DictConfig) -> dict:
    """Run one point and write its row (ok, failed or unsupported); returns the row.

    Sharded (shard.count > 1, or under torchrun): each job writes its shard; the job that finds
    every shard present computes the metrics and writes the row (one at a time, under a lock;
    a job that only wrote a shard returns {"run_id", "status": "shard"} and writes no row).
    """
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_id, config = identify(resolved)
    results_dir, force = cfg.results_dir, bool(cfg.force)
    check_writable(results_dir)  # before any compute: a row that cannot be written is no result
    if (existing := finished_row(results_dir, run_id, force=force)) is not None:
        log.info("skipped %s: an ok row exists (force=true reruns it)", run_id)
        return existing
    tracker = spec_of(TrackerSpec, resolved["tracker"])
    check_tracker(tracker)
    run_dir = Path(results_dir) / run_id
    device = torch.device("cpu")
    try:
        device = resolve_device(cfg.device)
    except ValueError:
        pass  # reported by prepare() below, as a failed row
    row = Row(run_id, config, provenance={**collect(device), "start_time": now()})
    try:
        point = prepare(cfg)
        sharded = point.shard.count > 1
        if sharded:
            write_own_shard(point, run_dir)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.barrier()  # torchrun: rank 0 finalises once every rank's shard exists
                if torch.distributed.get_rank() != 0:
                    return {"run_id": run_id, "status": "shard"}
        # one finaliser at a time per run; it re-checks whether another one already finished
        with exclusive(run_dir / ".finalize.lock") if sharded else nullcontext():
            if sharded:
                if (done := finished_row(results_dir, run_id, force=force)) is not None:
                    return done
                missing = missing_shards(run_dir, point.shard.count)
                if missing:
                    log.info("%s: shard(s) %s of %d still missing; the job writing the last one scores the run",
                             run_id, missing, point.shard.count)
                    return {"run_id": run_id, "status": "shard"}
                part = join_parts(load_shards(run_dir, point.shard.count))
            else:
                part = sample_part(point, range(cfg.metrics.num_samples))
            metrics = finalize(point, part, run_dir)
            row.metrics, row.status = metrics, "ok"
            log.debug("ok %s: %s", run_id, {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            stored = record_row(tracker, results_dir, run_dir, row)
            log.info(point_line(stored))
            return stored
    except UnsupportedCombination as exc:
        row.status, row.error = "unsupported", str(exc)
        log.warning(point_report(row.flat()))
    except Exception as exc:  # noqa: BLE001 - any failure becomes a failed row, then is reported
        out_of_memory = isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError))  # say what to lower
        row.status = "failed"
        row.error = out_of_memory_error(cfg, device, exc) if out_of_memory else f"{type(exc).__name__}: {exc}"
        row.traceback = "".join(traceback.format_exception(exc))[-4000:]
        log.error(point_report(row.flat()))  # a multi-line reason (a command to run) in full
    return record_row(tracker, results_dir, run_dir, row)


def out_of_memory_error(cfg: DictConfig, device: torch.device, exc: BaseException) -> str:
    """`<type>: out of memory at metrics.batch_size=B ...; peak P MB; lower ...` (first line of the cause)."""
    import resource

    if device.type == "cuda":
        peak = f"peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB allocated on {device}"
    else:  # ru_maxrss: kilobytes on Linux
        peak = f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB resident"
    cause = (str(exc).strip().splitlines() or [""])[0]
    return (f"{type(exc).__name__}: out of memory at metrics.batch_size={cfg.metrics.batch_size} "
            f"(timing: metrics.timing_batch={cfg.metrics.timing_batch}); {peak}; lower metrics.batch_size "
            f"(and metrics.timing_batch; the timed batch sets the reported latency) and rerun"
            + (f" [{cause}]" if cause else ""))


def _stop_on_sigterm(signum, frame) -> None:
    """SIGTERM (a preemption's first signal, `kill`): stop the point in flight by unwinding, so
    every atomic write in progress removes its temp file; no row is written (SystemExit is not a
    failure), and a relaunch recomputes the point."""
    log.warning("SIGTERM: stopping; the point in flight writes no row and a relaunch recomputes it")
    raise SystemExit(128 + signum)


def entry(cfg: DictConfig) -> None:
    """The command: one point (a torchrun rank: one shard of it); a single failed run exits 1."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_on_sigterm)  # not under submitit, which handles its own signals
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        init_distributed(cfg.device)  # torchrun: each rank generates one shard of the run
    try:
        row = run_point(cfg)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if HydraConfig.initialized():  # the sweep summary (summary.SweepSummary) finds the row from here
        write_run_id(HydraConfig.get().runtime.output_dir, row["run_id"])
    if row["status"] not in ("ok", "shard") and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(1)  # a single failed run fails the command; a sweep goes on


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Under `python -m` this module is __main__, which submitit (SLURM) pickles by value; going
    # through the importable module makes it pickle a reference instead.
    import l2c_bench.run

    l2c_bench.run.entry(cfg)


if __name__ == "__main__":
    main()
