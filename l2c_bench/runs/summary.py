"""What a run tells its user in the terminal: one line per finished point and, at the end of a
multirun, a table of the sweep's points (docs/results.md, "In the terminal").

`point_line` and `sweep_table` are pure functions of stored rows (the flat dicts of
`records.store`); `SweepSummary` is the Hydra callback that prints the table. Each job writes its
run id into its Hydra output folder (`write_run_id`), so the callback finds the sweep's rows for
every launcher alike (local, submitit-local, SLURM), from the folder the jobs shared.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..catalog import sweep_values
from ..records import read_row
from ..records.store import CorruptRow
from ..system.provenance import now

log = logging.getLogger(__name__)

RUN_ID_FILE = "run_id"  # in each job's Hydra output folder
SKIPPED_S = 2.0  # a point that took less was skipped (an ok row existed): kept out of the estimate

# how a primary-quality key reads in a line, and which way is better
QUALITY_LABELS = {
    "converged_image_psnr_db": ("image PSNR vs converged", "dB", True),
    "converged_latent_psnr_db": ("latent PSNR vs converged", "dB", True),
    "fid_vs_converged": ("FID vs converged", "", False),
    "fid": ("FID", "", False),
    "paired_latent_psnr_db": ("latent PSNR vs uncached", "dB", True),
}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def _with_interval(row: Mapping, key: str, fmt: str = "{:.3g}", unit: str = "") -> str:
    """'1.42x [1.30, 1.55]' (unit after the value); '-' when the value is missing; '[?]' when the
    row has no interval for it (an old row, or too few timed repeats)."""
    value = _number(row.get(f"metrics.{key}"))
    if value is None:
        return "-"
    low, high = (_number(row.get(f"metrics.{key}_ci_{end}")) for end in ("low", "high"))
    bounds = "[?]" if low is None or high is None else f"[{fmt.format(low)}, {fmt.format(high)}]"
    return f"{fmt.format(value)}{unit} {bounds}"


def method_name(row: Mapping) -> str:
    """The cache method, or 'uncached' (step reduction is an uncached row at fewer NFE)."""
    name = row.get("config.cache.name") or "?"
    return "uncached" if name == "none" else str(name)


def _cache_defaults(name: str) -> dict:
    """A method's parameters at their defaults (its dataclass's: the run's), {} for an unknown method."""
    from ..caching import CACHE_METHODS

    method = CACHE_METHODS.get(name)
    return {} if method is None else method.defaults()


def method_label(row: Mapping) -> str:
    """The method with the parameters the row sets away from their defaults:
    'heuristic strategy=random ratio=0.625', so rows of one method at one NFE tell apart."""
    name = method_name(row)
    defaults = _cache_defaults(str(row.get("config.cache.name")))
    changed = [f"{key.removeprefix('config.cache.')}={value}" for key, value in sorted(row.items())
               if key.startswith("config.cache.") and key != "config.cache.name"
               and defaults.get(key.removeprefix("config.cache."), value) != value]
    return " ".join([name, *changed])


def quality_text(row: Mapping) -> str:
    """The row's primary quality figure with its interval: 'image PSNR vs converged 27.5 dB [26.8, 28.3]'."""
    key = row.get("metrics.primary_quality")
    if not key:
        return "quality: -"
    label, unit, _ = QUALITY_LABELS.get(key, (key, "", True))
    return f"{label} {_with_interval(row, key, unit=(' ' + unit) if unit else '')}"


def speed_text(row: Mapping) -> str:
    """'speedup 1.42x [1.30, 1.55] (MACs 1.48x)'; uncached rows (nothing cached): their latency."""
    macs = _number(row.get("metrics.macs_speedup"))
    if method_name(row) == "uncached":
        return f"latency {_with_interval(row, 'latency_ms', '{:.0f}', ' ms')}"
    text = f"speedup {_with_interval(row, 'speedup', '{:.2f}', 'x')}"
    return text + (f" (MACs {macs:.2f}x)" if macs is not None else "")


def point_line(row: Mapping) -> str:
    """One readable line per finished point (the full row stays in result.json)."""
    where = f"{row.get('config.model.arch', '?')} NFE {row.get('config.steps', '?')} {method_label(row)}"
    status = row.get("status", "?")
    if status != "ok":
        reason = str(row.get("error") or "").strip().splitlines()
        return f"{status:<11} {where}: {reason[0] if reason else 'no reason recorded'}  ({row.get('run_id')})"
    return f"{status:<11} {where}  {speed_text(row)}  {quality_text(row)}  ({row.get('run_id')})"


def point_report(row: Mapping, indent: str = "") -> str:
    """`point_line`, with a not-ok row's reason past its first line below it, as written: a multi-line
    error carries what to do (the command that makes a missing router or calibration)."""
    rest = str(row.get("error") or "").strip().splitlines()[1:] if row.get("status") != "ok" else []
    return "\n".join([indent + point_line(row), *(f"{indent}    {line}" for line in rest)])


def _sort_key(row: Mapping) -> tuple:
    """Per model: uncached rows first (by NFE), then each method by NFE."""
    uncached = method_name(row) == "uncached"
    steps = row.get("config.steps")
    return (str(row.get("config.model.arch", "")), not uncached, method_name(row),
            steps if isinstance(steps, int) else 0, method_label(row), str(row.get("run_id")))


def sweep_table(rows: Iterable[Mapping], *, results_dir: str, wandb_offline: bool = False,
                missing: Iterable[str] = (), started: str | None = None) -> str:
    """The end-of-sweep summary: per model a table of its ok points (uncached first), then the
    points that did not finish with their reasons, then where the rows are and what to run next.
    `started` (ISO time, as rows' provenance.end_time): rows that ended before it were skipped as done."""
    rows, missing = sorted(rows, key=_sort_key), list(missing)
    ok = [r for r in rows if r.get("status") == "ok"]
    bad = [r for r in rows if r.get("status") != "ok"]
    skipped = sum(1 for r in ok if _skipped(r, started))
    header = ("method", "NFE", "speedup [95%]", "MACs", "latency ms [95%]", "primary quality [95%]", "run id")
    counts = [f"{len(ok)} ok" + (f" ({skipped} skipped: an ok row existed)" if skipped else ""), f"{len(bad)} not ok"]
    lines = ["Sweep summary: " + ", ".join(counts + ([f"{len(missing)} without a row"] if missing else []))]
    for arch in dict.fromkeys(str(r.get("config.model.arch", "?")) for r in ok):
        table = [header]
        for r in (r for r in ok if str(r.get("config.model.arch", "?")) == arch):
            uncached = method_name(r) == "uncached"
            macs = _number(r.get("metrics.macs_speedup"))
            table.append((method_label(r), str(r.get("config.steps", "?")),
                          "1 (reference)" if uncached else _with_interval(r, "speedup", "{:.2f}", "x"),
                          "-" if uncached or macs is None else f"{macs:.2f}x",
                          _with_interval(r, "latency_ms", "{:.0f}"),
                          quality_text(r).removeprefix("quality: "), str(r.get("run_id"))))
        widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
        lines += ["", arch] + ["  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
                               for cells in table]
    if phases := phase_totals(rows, started):
        lines += ["", phases]
    if reused := reuse_totals(rows, started):
        lines.append(reused)
    if bad:
        lines += ["", "Not ok:"] + [point_report(r, indent="  ") for r in bad]
    for name in missing:
        lines.append(f"  no row for job {name}: it died before writing one (see its Hydra log)")
    lines += ["", "Speedups are measured against each row's own uncached twin (same NFE, same seeds); "
              "[?]: no interval (fewer than 6 timed repeats, or an old row).",
              f"Rows: {results_dir}/<run id>/result.json. Next:",
              f"  python -m analysis.report --results {results_dir} --out analysis_out   # tables, plots, frontier",
              f"  python -m analysis.claims --results {results_dir} --out analysis_out   # the paper's claims"]
    if wandb_offline:
        lines.append(f"  wandb sync {results_dir}/wandb/offline-run-*   # mirror to W&B when online")
    return "\n".join(lines)


def _skipped(row: Mapping, started: str | None) -> bool:
    """The row ended before this sweep started (ISO times): an ok row that existed, skipped as done."""
    return bool(started) and str(row.get("provenance.end_time") or "") < started


PHASES = ("sampling", "twin", "reference", "timing", "scoring", "intervals")


def phase_totals(rows: Iterable[Mapping], started: str | None = None) -> str:
    """Where this sweep's time went: each phase's seconds (rows' `phase_<name>_s`) summed over the rows
    it computed (rows that ended before `started` were skipped as done); "" where none has phases."""
    fresh = [r for r in rows if not _skipped(r, started)]
    totals = {name: sum(_number(r.get(f"metrics.phase_{name}_s")) or 0.0 for r in fresh) for name in PHASES}
    if not any(totals.values()):
        return ""
    parts = ", ".join(f"{name} {_duration(seconds)}" for name, seconds in totals.items())
    return f"Time in its points: {parts} (total {_duration(sum(totals.values()))})"


def reuse_totals(rows: Iterable[Mapping], started: str | None = None) -> str:
    """How many reference samples this sweep's computed rows read from the shared store (or the
    package) and how many they sampled, per reference; "" where no row counted them."""
    fresh = [r for r in rows if not _skipped(r, started)]
    parts = []
    for kind, label in (("uncached", "uncached twins"), ("converged", "converged references")):
        read, sampled = (sum(_number(r.get(f"metrics.{kind}_samples_{end}")) or 0 for r in fresh)
                         for end in ("read", "sampled"))
        if read or sampled:
            parts.append(f"{label} {int(read)} read, {int(sampled)} sampled")
    return f"Reference samples: {'; '.join(parts)} (shared store: reference_dir)" if parts else ""


def write_run_id(output_dir: str | Path, run_id: str) -> None:
    """Leave the job's run id where the sweep's callback finds it (its Hydra output folder)."""
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / RUN_ID_FILE).write_text(run_id + "\n")


def sweep_rows(sweep_dir: str | Path, results_dir: str | Path) -> tuple[list[dict], list[str]]:
    """The rows of the jobs under `sweep_dir` (each job's output folder holds its run id), and the
    job folders that hold none (jobs that died before writing a row)."""
    rows, missing = [], []
    jobs = sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) \
        if Path(sweep_dir).is_dir() else []
    for job in jobs:
        marker = job / RUN_ID_FILE
        row = None
        if marker.is_file():
            try:
                row = read_row(results_dir, marker.read_text().strip())
            except CorruptRow:
                row = None
        if row is None:
            missing.append(job.name)
        elif row not in rows:  # two jobs of one point (e.g. shards) share a row
            rows.append(row)
    return rows, missing


def sweep_size(config: DictConfig) -> int | None:
    """Points of a basic-sweeper multirun: the product of the sweep overrides' lengths (the sweep
    file's `hydra.sweeper.params`, then the command line, which wins on a shared key); None if
    they cannot be parsed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        params = config.hydra.sweeper.get("params") or {}
        parsed = OverridesParser.create().parse_overrides(
            [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task))
        by_key = {o.get_key_element(): o for o in parsed}  # the command line wins on a shared key
        return math.prod(len(sweep_values(o)) for o in by_key.values())
    except Exception:  # noqa: BLE001 - progress is a nicety, never a failure
        return None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class SweepSummary(Callback):
    """Hydra callback (conf/config.yaml): prints `sweep_table` when a multirun ends, whatever the
    launcher (the SLURM launcher returns once its array has finished, so the rows are there), and,
    where the jobs run in this process (the local launcher), a progress line before each point."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = str(config.hydra.sweep.dir)  # `now` is resolved once per process: same folder
        self.started = now()
        self.t0, self.pid, self.total = time.time(), os.getpid(), sweep_size(config)
        self.durations: list[float] = []  # seconds of each finished point, in order
        self.job_start: float | None = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """'point k/N, elapsed, about T left' (T: the points left times the mean time of the points
        so far that ran, i.e. not skipped as done: those take well under SKIPPED_S)."""
        num = config.hydra.job.get("num")
        if getattr(self, "pid", None) != os.getpid() or not self.total or num is None:
            return  # a job in another process (SLURM): its own log has its progress
        now_s = time.time()
        elapsed, k = now_s - self.t0, int(num) + 1
        if getattr(self, "job_start", None) is not None:
            self.durations.append(now_s - self.job_start)
        self.job_start = now_s
        ran = [d for d in self.durations if d >= SKIPPED_S]
        left = f", about {_duration(sum(ran) / len(ran) * (self.total - k + 1))} left" if ran else ""
        log.info("point %d/%d, %s elapsed%s", k, self.total, _duration(elapsed), left)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = getattr(self, "sweep_dir", None) or str(config.hydra.sweep.dir)
        try:
            rows, missing = sweep_rows(sweep_dir, config.results_dir)
            offline = (config.tracker.get("name") == "wandb" and config.tracker.get("mode", "offline") == "offline") \
                or any("offline-run" in str(r.get("provenance.wandb_dir") or "") for r in rows)  # online fell back
            print("\n" + sweep_table(rows, results_dir=str(config.results_dir), wandb_offline=offline,
                                     missing=missing, started=getattr(self, "started", None)), flush=True)
        except Exception as exc:  # noqa: BLE001 - a summary must never fail a finished sweep
            log.warning("no sweep summary: %s: %s", type(exc).__name__, exc)
