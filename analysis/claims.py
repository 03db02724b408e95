"""The paper's claims, checked against the results store: each claim, our numbers with their 95%
intervals, the paper's numbers, and a verdict the measurement decides.

    python -m analysis.claims --results results --out analysis_out     # prints the table, writes claims.md/.csv
    python -m analysis.claims --margin converged_image_psnr_db=0.25    # another equivalence margin
    python -m l2c_bench.run -m +sweep=claims                           # the points the checker needs (toy scale)

Every comparison is a contrast of two rows' quality (analysis.paired): paired, sample by sample,
where the rows ran on the same seeds and keep per-sample records; marginal otherwise (the table
says which). Verdicts:

- "better" claims (L2C beats step reduction, a heuristic, dropping; shifted beats non-shifted):
  `holds` when the paired difference's 95% interval lies wholly on the claim's side of 0, `does
  not hold` when wholly on the other side, `undetermined` when it holds 0;
- "keeps the uncached quality": non-inferiority against a stated margin per quality axis
  (paired.MARGINS, `--margin AXIS=VALUE`): holds when the interval lies wholly above -margin and
  the speedup's interval above 1; does not hold when wholly below -margin or slower;
- "at equal measured latency": step reduction's quality is interpolated between the two uncached
  step counts whose measured latencies bracket L2C's (weights from the latencies, their
  uncertainty carried into the interval); no bracket, no verdict;
- `not checked`: the store lacks the rows, with the command that runs them.

Every undetermined verdict carries the sample count at which the observed effect would decide
(paired.samples_to_decide). Quality is compared on the rows' primary quality axis
(`metrics.primary_quality`: the distance to the converged sampler at toy scale, FID at paper
scale; FID where a row does not name one). Rows of several seeds are one point
(analysis.uncertainty.pool_seeds); a row whose numbers are not numbers is named and skipped.
"""

from __future__ import annotations

import argparse
import math
import numbers
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from l2c_bench.metrics import registry

from . import paired, uncertainty
from .cli import results_to_files
from .paired import Contrast, side
from .paper import PAPER_DIR

VERDICTS = ("holds", "does not hold", "undetermined", "not checked")
# Quality axes and whether higher is better (their registered metrics': l2c_bench.metrics.registry).
QUALITY_AXES = {axis: registry.higher_is_better(axis) for axis in (
    "fid", "kid", "fid_vs_converged", "kid_vs_converged", "converged_latent_psnr_db", "converged_image_psnr_db",
    "converged_latent_mse", "converged_image_mse", "paired_image_psnr_db", "paired_latent_psnr_db", "is",
    "converged_image_ssim", "paired_image_ssim", "converged_image_lpips", "paired_image_lpips", "clip_score")}
RATIO_TOLERANCE = 0.05  # "equal cached ratio": a heuristic point within this of L2C's cached ratio
# Row fields the checker reads as numbers: a row holding anything else there is named and skipped.
NUMERIC = ("latency_ms", "speedup", "cached_ratio", *QUALITY_AXES)


@dataclass(frozen=True)
class Estimate:
    """A number with its 95% interval (None where the row has none)."""

    value: float
    low: float | None = None
    high: float | None = None

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None

    def __str__(self) -> str:
        if not self.known:
            return f"{_fmt(self.value)} [interval unknown]"
        return f"{_fmt(self.value)} [{_fmt(self.low)}, {_fmt(self.high)}]"


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.4g}"


def _number(row: pd.Series, key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or math.isnan(value):
        return None
    return float(value)


def estimate(row: pd.Series, metric: str) -> Estimate | None:
    """metrics.<metric> with its interval (uncertainty.interval); None when the row lacks the metric."""
    value = _number(row, f"metrics.{metric}")
    if value is None:
        return None
    bounds = uncertainty.interval(row, f"metrics.{metric}")
    return Estimate(value, *bounds) if bounds else Estimate(value)


def quality_axis(*rows: pd.Series) -> str:
    """The quality metric the rows are compared on: the first row's primary axis, if every row has it."""
    named = [r.get("metrics.primary_quality") for r in rows]
    axis = next((a for a in named if isinstance(a, str) and a), "fid")
    return axis if all(_number(r, f"metrics.{axis}") is not None for r in rows) else "fid"


@dataclass(frozen=True)
class Check:
    claim: str
    source: str  # where the paper makes it
    setting: str  # model, NFE, ...
    ours: str
    paper: str
    verdict: str
    why: str
    comparison: str = ""  # paired (n shared seeds) or marginal, and how the interval was had
    decide_at: str = ""  # undetermined: the sample count the observed effect implies for a decision


# --- verdicts on a contrast -------------------------------------------------------------------

def _samples(row: pd.Series) -> int | None:
    n = _number(row, "metrics.num_samples")
    return None if n is None else int(n) * int(row.get("seeds", 1) or 1)


def _decide_at(c: Contrast | None, boundary: float, higher: bool, row: pd.Series) -> str:
    n = paired.samples_to_decide(c, boundary, higher, c.samples if c is not None and c.samples else _samples(row))
    return "" if n is None else f"~{n} samples"


def better_verdict(c: Contrast | None, higher: bool, row: pd.Series,
                   spread: Contrast | None = None) -> tuple[str, str, str]:
    """(verdict, why, decide_at) of a claim that the contrast's first row is better; `spread`:
    the contrast whose interval the sample count scales (default `c`; one widened by a latency's
    uncertainty does not shrink with more samples)."""
    outcome = paired.better(c, higher)
    if outcome == "better":
        return "holds", "the difference's 95% interval lies wholly on the better side of 0", ""
    if outcome == "worse":
        return "does not hold", "the difference's 95% interval lies wholly on the worse side of 0", ""
    if outcome == "tie":
        return "undetermined", "the difference's 95% interval holds 0: a tie at this sample size", \
            _decide_at(spread or c, 0.0, higher, row)
    return "undetermined", "a number or its interval is missing", ""


def _contrast_text(c: Contrast | None, axis: str) -> str:
    return "" if c is None else f"; difference {c} ({axis})" + (
        f", per-sample correlation {c.correlation:.2f}" if c.correlation is not None else "")


# --- selecting rows -------------------------------------------------------------------------

def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"] if "status" in rows else rows


def _sampler(row: pd.Series) -> str:
    name = row.get("config.sampler.name")
    return name if isinstance(name, str) and name else row["config.model.default_sampler"]


def _column(rows: pd.DataFrame, key: str) -> pd.Series:
    """A column, or all-missing where no row has the key (a row holds only its method's cache keys)."""
    return rows[key] if key in rows else pd.Series(None, index=rows.index, dtype=object)


def _select(rows: pd.DataFrame, **conditions) -> pd.DataFrame:
    keep = pd.Series(True, index=rows.index)
    for key, value in conditions.items():
        keep &= _column(rows, key) == value
    return rows[keep]


def _models(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(arch, sampler) pairs present, in a stable order."""
    pairs = {(r["config.model.arch"], _sampler(r)) for _, r in rows.iterrows()}
    return sorted(pairs)


def _same_model(rows: pd.DataFrame, arch: str, sampler: str) -> pd.DataFrame:
    picked = rows[rows["config.model.arch"] == arch]
    return picked[[_sampler(r) == sampler for _, r in picked.iterrows()]] if len(picked) else picked


def _default_l2c(rows: pd.DataFrame) -> pd.DataFrame:
    """L2C rows with the paper's cycle and threshold (not a threshold or cycle study's points)."""
    l2c = rows[rows["config.cache.name"] == "l2c"]
    l2c = l2c[_column(l2c, "config.cache.interval").fillna(2) == 2]
    return l2c[_column(l2c, "config.cache.threshold").isna()]


def _paper(table: str) -> pd.DataFrame:
    return pd.read_csv(PAPER_DIR / f"{table}.csv")


def _paper_value(frame: pd.DataFrame, column: str, **where) -> float | None:
    picked = frame
    for key, value in where.items():
        picked = picked[picked[key] == value]
    if picked.empty or column not in picked or pd.isna(picked.iloc[0][column]):
        return None
    return float(picked.iloc[0][column])


# --- what to run for a claim the store cannot check ----------------------------------------------

def _text(row: pd.Series, key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) and value else None


# config keys a claim's rows share with the row they are compared with, carried into the command
CARRIED = ("model.diffusers_class", "model.checkpoint", "model.vae_checkpoint", "model.pretrained", "sampler.name",
           "results_dir")


def claim_command(presets: Iterable[str], row: pd.Series | None = None, samples: int = 64) -> str:
    """The command that runs the claims sweep's presets (`conf/claim/<name>.yaml`) beside `row`:
    its model group, scale, sampler, checkpoints, results folder and sample count; with no presets
    or no row, the whole claims sweep."""
    presets = list(presets)
    if row is None or not presets:
        return "python -m l2c_bench.run -m +sweep=claims"
    if _text(row, "config.model.diffusers_class"):
        model = "diffusers"
    else:
        model = "uvit" if str(row.get("config.model.arch", "")).startswith("U-ViT") else "dit"
    extra = [f"scale={scale}"] if (scale := _text(row, "config.scale.name")) not in (None, "toy") else []
    extra += [f"{key}={value}" for key in CARRIED if (value := _text(row, f"config.{key}")) is not None
              and not (key == "model.checkpoint" and value in ("toy", "random"))]
    if (n := _number(row, "metrics.num_samples")) is not None:
        samples = int(n)
    return " ".join(["python -m l2c_bench.run -m", f"model={model}", *extra, f"+claim={','.join(presets)}",
                     f"metrics.num_samples={samples}"])


def not_checked(claim: str, source: str, setting: str, presets: Iterable[str], row: pd.Series | None,
                paper: str = "") -> Check:
    return Check(claim, source, setting, "", paper, "not checked",
                 f"needs its rows: `{claim_command(presets, row)}`")


# --- the claims -------------------------------------------------------------------------------

KEEPS = "L2C keeps the uncached quality and is faster"


def l2c_matches_uncached(rows: pd.DataFrame, margins: dict[str, float]) -> list[Check]:
    """Tables 1/2: L2C at NFE 20 and 50 keeps the uncached sampler's quality (within the axis's
    margin) and is faster (speedup interval above 1)."""
    checks = []
    for arch, sampler in _models(rows):
        mine = _same_model(rows, arch, sampler)
        any_row = mine.iloc[0]
        for nfe in (20, 50):
            l2c = _select(_default_l2c(mine), **{"config.steps": nfe})
            base = _select(mine, **{"config.cache.name": "none", "config.steps": nfe})
            paper_table = "table1_dit" if arch.startswith("DiT") else "table2_uvit"
            paper_text = _paper_pair(paper_table, nfe, "L2C", _base_label(sampler))
            if l2c.empty or base.empty:
                checks.append(not_checked(KEEPS, "Tables 1/2", f"{arch}, NFE {nfe}",
                                          [f"l2c_{nfe}", f"uncached_{nfe}"], any_row, paper_text))
                continue
            checks += [_keeps(l2c_row, base.iloc[0], f"{arch}, NFE {nfe}{_router(l2c_row, l2c)}", paper_text, margins)
                       for _, l2c_row in l2c.iterrows()]
    return checks


def _router(row: pd.Series, rows: pd.DataFrame) -> str:
    """`, lam=...` where several L2C rows of one setting differ in their router (a lambda study)."""
    lams = _column(rows, "config.router.lam").dropna().unique()
    return f", lam={row.get('config.router.lam'):g}" if len(lams) > 1 else ""


def _keeps(l2c: pd.Series, base: pd.Series, setting: str, paper_text: str, margins: dict[str, float]) -> Check:
    """One 'keeps the uncached quality and is faster' check of an L2C row against its uncached twin."""
    axis = quality_axis(l2c, base)
    higher = QUALITY_AXES.get(axis, False)
    margin = margins.get(axis)
    c = paired.difference(side(l2c), side(base), axis)
    speed = estimate(l2c, "speedup")
    faster = "unknown" if speed is None or not speed.known else (
        "yes" if speed.low > 1 else "no" if speed.high < 1 else "tie")
    decide_at = ""
    if margin is None:
        verdict, why = "undetermined", f"no equivalence margin for {axis} (--margin {axis}=VALUE)"
    else:
        keeps = paired.non_inferior(c, margin, higher)
        if keeps == "does not hold" or faster == "no":
            verdict = "does not hold"
            why = (f"quality: the difference's interval lies wholly below -{margin:g} (the margin)"
                   if keeps == "does not hold" else "slower: the speedup's interval lies below 1")
        elif keeps == "holds" and faster == "yes":
            verdict, why = "holds", (f"faster (speedup interval above 1), and the quality difference's "
                                     f"interval lies wholly above -{margin:g} (the margin)")
        else:
            verdict = "undetermined"
            why = ("the speedup's interval holds 1" if keeps == "holds" and faster == "tie" else
                   "a number or its interval is missing" if c is None or not c.known or faster == "unknown"
                   else f"the quality difference's interval holds -{margin:g} (the margin)")
            if keeps == "undetermined":
                decide_at = _decide_at(c, -margin, higher, l2c)
    return Check(
        KEEPS, "Tables 1/2", setting,
        f"{axis}: L2C {estimate(l2c, axis)} vs uncached {estimate(base, axis)}{_contrast_text(c, axis)}; "
        f"margin {margin if margin is not None else '?'}; speedup {speed}",
        paper_text, verdict, why, c.how if c else "", decide_at)


def _base_label(sampler: str) -> str:
    return {"ddim": "DDIM", "dpm_solver2": "DPM-Solver-2", "ddpm": "DDPM"}.get(sampler, sampler)


def _paper_pair(table: str, nfe: int, method: str, base: str, base_nfe: int | None = None) -> str:
    frame = _paper(table)
    ours = _paper_value(frame, "fid", method=method, nfe=nfe)
    theirs = _paper_value(frame, "fid", method=base, nfe=base_nfe or nfe)
    speed = _paper_value(frame, "speedup", method=method, nfe=nfe)
    if ours is None or theirs is None:
        return "not in the paper's table"
    speed_text = f", speedup {speed:.2f}x" if speed is not None else ""
    return f"FID: {method} {ours:g} vs {base}-{base_nfe or nfe} {theirs:g}{speed_text}"


def _paper_step_reduction(arch: str, sampler: str, nfe: int) -> str:
    """The paper's own pairing: its L2C row against the uncached row of the closest speedup in the
    same block (fewer steps, more than half: DDIM-40 for L2C-50, not DDIM-16 of the NFE-20 block)."""
    table = "table1_dit" if arch.startswith("DiT") else "table2_uvit"
    frame = _paper(table)
    frame = frame[frame["resolution"] == 256] if "resolution" in frame else frame
    frame = frame[frame["model"] == frame["model"].iloc[0]]  # the headline model (DiT-XL/2, U-ViT-H/2), not DiT-L/2
    l2c = frame[(frame["method"] == "L2C") & (frame["nfe"] == nfe)]
    base = frame[(frame["method"] == _base_label(sampler)) & (frame["nfe"] < nfe) & (frame["nfe"] > nfe // 2)
                 & frame["speedup"].notna()]
    if l2c.empty or base.empty or pd.isna(l2c.iloc[0]["speedup"]):
        return "not in the paper's table"
    row = base.loc[(base["speedup"] - l2c.iloc[0]["speedup"]).abs().idxmin()]
    return (f"FID: L2C-{nfe} {l2c.iloc[0]['fid']:g} ({l2c.iloc[0]['speedup']:.2f}x) vs "
            f"{row['method']}-{int(row['nfe'])} {row['fid']:g} ({row['speedup']:.2f}x)")




@dataclass(frozen=True)
class Bracket:
    """Step reduction at L2C's measured latency: the uncached points `below` and `above` whose
    latencies bracket it and the interpolation weight t, quality(L) = (1 - t) q(below) + t q(above).
    `alternatives`: the same (below, above, t) wherever L2C's latency and the points' own could lie
    within their 95% intervals (the ends of L2C's interval, the ladder's points inside it, the
    segment's ends moved to their interval ends); the verdict's interval covers them all."""

    below: pd.Series
    above: pd.Series
    t: float
    t_low: float
    t_high: float
    alternatives: tuple = ()

    def describe(self, l2c: pd.Series) -> str:
        lat = estimate(l2c, "latency_ms")
        steps = (int(self.below["config.steps"]), int(self.above["config.steps"]))
        where = (f"uncached NFE {steps[0]}" if steps[0] == steps[1] else
                 f"between uncached NFE {steps[0]} ({estimate(self.below, 'latency_ms')} ms) and NFE {steps[1]} "
                 f"({estimate(self.above, 'latency_ms')} ms), t = {self.t:.2f} [{self.t_low:.2f}, {self.t_high:.2f}]")
        return f"at L2C's latency {lat} ms: {where}"


def _latency(row: pd.Series) -> tuple[float, float, float] | None:
    """(latency, low, high) in ms; None without a latency or its interval (then nothing is matched)."""
    value = _number(row, "metrics.latency_ms")
    bounds = uncertainty.interval(row, "metrics.latency_ms")
    return None if value is None or bounds is None else (value, *bounds)


def _segment(points: list, latency: float) -> tuple[pd.Series, pd.Series, float] | None:
    """(below, above, t) of the ladder `points` ((latency triple, row), sorted) at `latency`."""
    for (lat_a, a), (lat_b, b) in zip(points, points[1:], strict=False):
        if lat_a[0] <= latency <= lat_b[0]:
            return a, b, (latency - lat_a[0]) / (lat_b[0] - lat_a[0]) if lat_b[0] > lat_a[0] else 0.0
    return None


def step_reduction_bracket(l2c: pd.Series, uncached: pd.DataFrame) -> Bracket | str:
    """The uncached points (at most L2C's NFE) whose measured latencies bracket L2C's, with every
    alternative its uncertainty allows, or the reason there is no match (then no verdict): a
    latency without its interval, or an interval of L2C's latency reaching past the ladder."""
    target = _latency(l2c)
    if target is None:
        return "L2C's row has no latency interval (metrics.timing_repeats >= 6 gives one)"
    points = sorted(((lat, row) for _, row in uncached[uncached["config.steps"] <= int(l2c["config.steps"])].iterrows()
                     if (lat := _latency(row)) is not None), key=lambda p: p[0][0])
    have = ", ".join(f"NFE {int(r['config.steps'])} {lat[0]:.4g} ms" for lat, r in points) or "none with an interval"
    if len(points) < 2 or not points[0][0][0] <= target[1] <= target[2] <= points[-1][0][0]:
        return (f"no uncached step counts bracket L2C's latency {target[0]:.4g} [{target[1]:.4g}, {target[2]:.4g}] "
                f"ms (uncached points: {have})")
    below, above, t = _segment(points, target[0])
    inside = [lat[0] for lat, _ in points if target[1] < lat[0] < target[2]]
    alternatives = [_segment(points, latency) for latency in (target[1], target[2], *inside)]
    lat_a, lat_b = (next(lat for lat, r in points if r is row) for row in (below, above))
    corners = [min(1.0, max(0.0, (target[0] - x) / (y - x))) for x in lat_a for y in lat_b if y > x] or [t]
    alternatives += [(below, above, c) for c in corners]
    return Bracket(below, above, t, min(corners), max(corners), tuple(alternatives))


def interpolated_difference(l2c: pd.Series, bracket: Bracket, axis: str) -> tuple[Contrast | None, Contrast | None]:
    """(widened, at t): L2C's quality minus step reduction's interpolated at L2C's latency. The
    contrast at t, and the same with its interval widened to cover the contrast at every
    alternative of the bracket (the latencies' uncertainty); the power estimate reads the one at t."""
    def at(below: pd.Series, above: pd.Series, t: float) -> Contrast | None:
        return paired.contrast([side(l2c), side(below), side(above)], [1.0, -(1 - t), -t], axis)
    middle = at(bracket.below, bracket.above, bracket.t)
    ends = [at(*alternative) for alternative in bracket.alternatives]
    if middle is None or not middle.known or any(e is None or not e.known for e in ends):
        return middle, middle
    widened = Contrast(middle.value, min(e.low for e in [middle, *ends]), max(e.high for e in [middle, *ends]),
                       middle.paired, middle.samples, middle.correlation,
                       middle.how + "; interval widened over the latencies' uncertainty", middle.df)
    return widened, middle


STEPS = "L2C beats step reduction at equal measured latency"
BRACKETS = {20: ["uncached_10", "uncached_12", "uncached_14", "uncached_16", "uncached_20"],
            50: ["uncached_30", "uncached_34", "uncached_40", "uncached_50"]}  # the claims sweep's ladders


def l2c_beats_step_reduction(rows: pd.DataFrame, margins: dict[str, float]) -> list[Check]:
    """Tables 1/2: at L2C's measured latency, L2C's quality is better than fewer uncached steps
    (step reduction interpolated between the step counts whose latencies bracket L2C's)."""
    checks = []
    for arch, sampler in _models(rows):
        mine = _same_model(rows, arch, sampler)
        uncached = mine[mine["config.cache.name"] == "none"]
        for nfe in (20, 50):
            l2c_rows = _select(_default_l2c(mine), **{"config.steps": nfe})
            paper_text = _paper_step_reduction(arch, sampler, nfe)
            if l2c_rows.empty or uncached.empty:
                checks.append(not_checked(STEPS, "Tables 1/2", f"{arch}, L2C NFE {nfe}", [f"l2c_{nfe}", *BRACKETS[nfe]],
                                          mine.iloc[0], paper_text))
                continue
            for _, l2c in l2c_rows.iterrows():
                setting = f"{arch}, L2C NFE {nfe}{_router(l2c, l2c_rows)}"
                bracket = step_reduction_bracket(l2c, uncached)
                if isinstance(bracket, str):
                    checks.append(Check(STEPS, "Tables 1/2", setting, f"latency ms: L2C {estimate(l2c, 'latency_ms')}",
                                        paper_text, "undetermined",
                                        f"{bracket}; never a verdict on an unmatched pair: {_more_steps(l2c, uncached)}"))
                    continue
                axis = quality_axis(l2c, bracket.below, bracket.above)
                c, at_t = interpolated_difference(l2c, bracket, axis)
                verdict, why, decide_at = better_verdict(c, QUALITY_AXES.get(axis, False), l2c, spread=at_t)
                steps = sorted({int(bracket.below["config.steps"]), int(bracket.above["config.steps"])})
                checks.append(Check(
                    STEPS, "Tables 1/2", f"{setting} vs uncached NFE {'-'.join(map(str, steps))} "
                    f"(interpolated at L2C's measured latency)",
                    f"{axis}: L2C {estimate(l2c, axis)}; {bracket.describe(l2c)}{_contrast_text(c, axis)}",
                    paper_text, verdict, why, c.how if c else "", decide_at))
    return checks


def _more_steps(l2c: pd.Series, uncached: pd.DataFrame) -> str:
    """What to run so that uncached step counts bracket L2C's latency: the claims sweep's ladder
    presets the store lacks, else two more step counts on the side L2C's latency lies."""
    nfe = int(l2c["config.steps"])
    have = {int(s) for s in uncached["config.steps"]}
    missing = [p for p in BRACKETS.get(nfe, []) if int(p.split("_")[1]) not in have]
    if missing:
        return f"`{claim_command(missing, l2c)}`"
    timed = uncached[_column(uncached, "metrics.latency_ms").notna() & (uncached["config.steps"] <= nfe)]
    fewest, most = (int(timed["config.steps"].min()), int(timed["config.steps"].max())) if len(timed) else (nfe, nfe)
    if most >= nfe and len(timed) and float(l2c["metrics.latency_ms"]) > float(timed["metrics.latency_ms"].max()):
        return f"L2C is slower than uncached at its own NFE {nfe}: no fewer steps can match it"
    steps = [k for k in (fewest - 4, fewest - 2) if k >= 2] if len(timed) and \
        float(l2c["metrics.latency_ms"]) < float(timed["metrics.latency_ms"].min()) else [most + 2, most + 4]
    command = claim_command(["uncached_20"], l2c).replace("+claim=uncached_20", "cache=none steps="
                                                          + ",".join(str(k) for k in steps if k <= nfe))
    return f"`{command}`"


HEURISTIC = "L2C beats a heuristic layer choice at equal cached ratio"


def l2c_beats_heuristics(rows: pd.DataFrame, margins: dict[str, float]) -> list[Check]:
    """Fig. 4: at the same cached ratio, L2C's learned choice beats bottom/top/random (and greedy,
    where the store has it) choices, at every NFE with both."""
    checks = []
    paper_text = "Fig. 4 (a figure: L2C's curve lies below the heuristics' at every ratio)"
    for arch, sampler in _models(rows):
        mine = _same_model(rows, arch, sampler)
        heuristics = mine[mine["config.cache.name"] == "heuristic"]
        nfes = sorted({20} | set(int(n) for n in heuristics["config.steps"]))
        for nfe in nfes:
            l2c_rows = _select(_default_l2c(mine), **{"config.steps": nfe})
            at_nfe = heuristics[heuristics["config.steps"] == nfe]
            strategies = ["bottom", "top", "random"] + (["greedy"] if (_column(at_nfe, "config.cache.strategy")
                                                                       == "greedy").any() else [])
            for strategy in strategies:
                same = _select(at_nfe, **{"config.cache.strategy": strategy})
                same = same[_column(same, "metrics.cached_ratio").notna()]
                if l2c_rows.empty or same.empty:
                    if nfe == 20 and strategy != "greedy":  # the claims sweep's points
                        checks.append(not_checked(HEURISTIC, "Fig. 4", f"{arch}, NFE {nfe}, {strategy}",
                                                  [f"l2c_{nfe}", f"heuristic_{strategy}_0625",
                                                   f"heuristic_{strategy}_0740"], mine.iloc[0], paper_text))
                    continue
                for _, l2c in l2c_rows.iterrows():
                    checks.append(_against_heuristic(l2c, same, f"{arch}, NFE {nfe}, {strategy}"
                                                     f"{_router(l2c, l2c_rows)}", paper_text))
    return checks


def _against_heuristic(l2c: pd.Series, same: pd.DataFrame, setting: str, paper_text: str) -> Check:
    """L2C against the heuristic point (one strategy) nearest its cached ratio."""
    ratio = _number(l2c, "metrics.cached_ratio")
    if ratio is None:
        return Check(HEURISTIC, "Fig. 4", setting, "", paper_text, "undetermined", "L2C's row has no cached ratio")
    nearest = same.loc[(same["metrics.cached_ratio"].astype(float) - ratio).abs().idxmin()]
    gap = abs(float(nearest["metrics.cached_ratio"]) - ratio)
    strategy = nearest["config.cache.strategy"]
    axis = quality_axis(l2c, nearest)
    c = paired.difference(side(l2c), side(nearest), axis)
    if gap > RATIO_TOLERANCE:
        verdict, why, decide_at = "undetermined", f"no {strategy} point within {RATIO_TOLERANCE} of L2C's ratio", ""
    else:
        verdict, why, decide_at = better_verdict(c, QUALITY_AXES.get(axis, False), l2c)
    return Check(HEURISTIC, "Fig. 4", f"{setting}, cached ratio {ratio:.3f} vs {float(nearest['metrics.cached_ratio']):.3f}",
                 f"{axis}: L2C {estimate(l2c, axis)} vs {strategy} {estimate(nearest, axis)}{_contrast_text(c, axis)}",
                 paper_text, verdict, why, c.how if c else "", decide_at)


DROPPING = "caching a branch beats dropping it"


def caching_beats_dropping(rows: pd.DataFrame, margins: dict[str, float]) -> list[Check]:
    """Tables 5/7: reusing a branch's cached output beats skipping it, for the same branches."""
    checks = []
    paper = _paper("table5_7_layer_dropout")
    drops = paper[paper["method"] == "Random Drop"]
    paper_text = "; ".join(f"random drop {int(r['removed'])}/{int(r['total'])}: FID {r['fid']:g}"
                           for _, r in drops.iterrows())
    paper_text += f"; L2C 176/560: FID {_paper_value(paper, 'fid', method='Learning-to-Cache'):g}"
    for arch, sampler in _models(rows):
        mine = _same_model(rows, arch, sampler)
        dropped = mine[mine["config.cache.name"] == "layer_drop"]
        if dropped.empty:
            checks.append(not_checked(DROPPING, "Tables 5/7", f"{arch}, NFE 20, random ratio 0.3",
                                      ["layer_drop_random_03", "heuristic_random_03"], mine.iloc[0], paper_text))
        for _, drop in dropped.iterrows():
            setting = (f"{arch}, NFE {int(drop['config.steps'])}, {drop['config.cache.strategy']} "
                       f"ratio {float(drop['config.cache.ratio']):g}")
            same = _select(mine, **{"config.cache.name": "heuristic", "config.steps": drop["config.steps"],
                                    "config.cache.strategy": drop["config.cache.strategy"],
                                    "config.cache.ratio": drop["config.cache.ratio"]})
            if drop.get("config.cache.seed") is not None:
                same = _select(same, **{"config.cache.seed": drop["config.cache.seed"]})
            if same.empty:
                checks.append(not_checked(DROPPING, "Tables 5/7", setting, ["heuristic_random_03"], drop, paper_text))
                continue
            cached = same.iloc[0]
            axis = quality_axis(cached, drop)
            c = paired.difference(side(cached), side(drop), axis)
            verdict, why, decide_at = better_verdict(c, QUALITY_AXES.get(axis, False), cached)
            checks.append(Check(
                DROPPING, "Tables 5/7", setting,
                f"{axis}: cached {estimate(cached, axis)} vs dropped {estimate(drop, axis)}{_contrast_text(c, axis)}",
                paper_text, verdict, why, c.how if c else "", decide_at))
    return checks


SHIFTED = "the shifted cache step beats the non-shifted one"
TWO_EVALUATION_SAMPLERS = ("dpm_solver2",)  # a cache step can sit on either evaluation of a solver step


def shifted_beats_unshifted(rows: pd.DataFrame, margins: dict[str, float]) -> list[Check]:
    """Table 6: reusing every branch at the shifted cache step beats the non-shifted one. The
    non-shifted cache step exists only where a solver step takes two evaluations (DPM-Solver-2:
    U-ViT); other samplers' rows for it are `unsupported`, so only those models are listed."""
    checks = []
    paper = _paper("table6_shifted_cache")
    paper_text = (f"FID: shifted {_paper_value(paper, 'fid', method='Cache - shifted (all layers)'):g} vs "
                  f"non-shifted {_paper_value(paper, 'fid', method='Cache (all layers)'):g}")
    for arch, sampler in _models(rows):
        mine = _same_model(rows, arch, sampler)
        everything = _select(mine, **{"config.cache.name": "heuristic", "config.cache.ratio": 1.0})
        groups = list(everything.groupby("config.steps")) or [(20, everything)]
        for nfe, group in groups:
            shifted = _select(group, **{"config.cache.shifted": True})
            plain = _select(group, **{"config.cache.shifted": False})
            if shifted.empty or plain.empty:
                if sampler in TWO_EVALUATION_SAMPLERS:
                    checks.append(not_checked(SHIFTED, "Table 6", f"{arch}, NFE {int(nfe)}, all branches",
                                              ["all_cached_shifted_true", "all_cached_shifted_false"], mine.iloc[0],
                                              paper_text))
                continue
            a, b = shifted.iloc[0], plain.iloc[0]
            axis = quality_axis(a, b)
            c = paired.difference(side(a), side(b), axis)
            verdict, why, decide_at = better_verdict(c, QUALITY_AXES.get(axis, False), a)
            checks.append(Check(
                SHIFTED, "Table 6", f"{arch}, NFE {int(nfe)}, all branches",
                f"{axis}: shifted {estimate(a, axis)} vs non-shifted {estimate(b, axis)}{_contrast_text(c, axis)}",
                paper_text, verdict, why, c.how if c else "", decide_at))
    return checks


CLAIMS = {KEEPS: ("Tables 1/2", l2c_matches_uncached), STEPS: ("Tables 1/2", l2c_beats_step_reduction),
          HEURISTIC: ("Fig. 4", l2c_beats_heuristics), DROPPING: ("Tables 5/7", caching_beats_dropping),
          SHIFTED: ("Table 6", shifted_beats_unshifted)}


def numeric_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose checked fields are numbers (or missing); each other row is named in a
    warning and left out, so the other claims are still checked."""
    bad = []
    for index, row in rows.iterrows():
        for metric in NUMERIC:
            for key in (f"metrics.{metric}", *uncertainty.ci_columns(f"metrics.{metric}")):
                value = row.get(key)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                    warnings.warn(f"skipped row {row.get('run_id', index)}: {key} = {value!r} is not a number",
                                  stacklevel=2)
                    bad.append(index)
                    break
            else:
                continue
            break
    return rows.drop(index=bad)


def check_all(rows: pd.DataFrame, margins: dict[str, float] | None = None) -> pd.DataFrame:
    """Every claim, one row per (claim, setting): checked where the store has the rows, `not
    checked` with the command that runs them where it does not. `margins`: per quality axis, the
    equivalence margin of "keeps the quality" (default paired.MARGINS)."""
    margins = {**paired.MARGINS, **(margins or {})}
    ok = uncertainty.pool_seeds(numeric_rows(_ok(rows))) if len(rows) else rows
    checks = []
    for claim, (source, check) in CLAIMS.items():
        found = check(ok, margins) if len(ok) else []
        checks += found or [not_checked(claim, source, "every model", [], None)]
    return pd.DataFrame([c.__dict__ for c in checks], columns=[f.name for f in fields(Check)])


def to_markdown(checks: pd.DataFrame) -> str:
    header = ["claim", "source", "setting", "ours (95% intervals)", "paper", "verdict", "why", "comparison",
              "decides at"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, c in checks.iterrows():
        cells = [c["claim"], c["source"], c["setting"], c["ours"], c["paper"], f"**{c['verdict']}**", c["why"],
                 c["comparison"], c["decide_at"]]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    counts = checks["verdict"].value_counts() if len(checks) else pd.Series(dtype=int)
    lines += ["", ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)]
    return "\n".join(lines) + "\n"


def write_all(results: pd.DataFrame, out: Path, margins: dict[str, float] | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    checks = check_all(results, margins)
    text = to_markdown(checks)
    print(text)
    md, csv = out / "claims.md", out / "claims.csv"
    md.write_text(text)
    checks.to_csv(csv, index=False)
    return [md, csv]


def _margin(text: str) -> tuple[str, float]:
    axis, _, value = text.partition("=")
    if axis not in QUALITY_AXES:
        raise argparse.ArgumentTypeError(f"--margin: unknown quality axis {axis!r}; valid: {', '.join(QUALITY_AXES)}")
    try:
        margin = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--margin takes AXIS=VALUE (e.g. converged_image_psnr_db=0.5), "
                                         f"got {text!r}") from None
    if not margin > 0:
        raise argparse.ArgumentTypeError(f"--margin {axis}: a margin must be > 0, got {value}")
    return axis, margin


def main(argv=None) -> None:
    results_to_files(__doc__, write_all, argv, samples=True,
                     extra=lambda parser: parser.add_argument(
                         "--margin", type=_margin, action="append", default=[], metavar="AXIS=VALUE",
                         help="equivalence margin of 'keeps the quality' on a quality axis (repeatable); "
                              f"defaults: {', '.join(f'{k}={v:g}' for k, v in paired.MARGINS.items())}"),
                     options=lambda args: {"margins": dict(args.margin)})


if __name__ == "__main__":
    main()
