"""The paper's claims, checked against the results store: each claim, our numbers with their 95%
intervals, the paper's numbers, and a verdict the measurement decides.

    python -m analysis.claims --results results --out analysis_out     # prints the table, writes claims.md/.csv
    python -m l2c_bench.run -m +sweep=claims                           # the points the checker needs (toy scale)

Verdicts: `holds` (the claim's comparison goes its way with non-overlapping intervals), `does not
hold` (it goes the other way with non-overlapping intervals), `undetermined` (the intervals overlap:
a tie at this sample size, or a row or interval is missing). Nothing here is tuned to a claim.
Intervals, seed pooling and ties follow analysis.uncertainty: rows of several seeds are one point
(mean and t-interval over the seeds).

Quality is compared on the rows' primary quality axis (`metrics.primary_quality`: the distance to
the converged sampler at toy scale, FID at paper scale; FID where a row does not name one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import uncertainty
from .cli import results_to_files
from .paper import PAPER_DIR

VERDICTS = ("holds", "does not hold", "undetermined")
# Quality axes and whether higher is better (every other metric: analysis.metrics.METRICS).
QUALITY_AXES = {"fid": False, "kid": False, "fid_vs_converged": False, "kid_vs_converged": False,
                "converged_latent_psnr_db": True, "converged_image_psnr_db": True, "converged_latent_mse": False,
                "paired_image_psnr_db": True, "paired_latent_psnr_db": True, "is": True}
RATIO_TOLERANCE = 0.05  # "equal cached ratio": a heuristic point within this of L2C's cached ratio


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
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def estimate(row: pd.Series, metric: str) -> Estimate | None:
    """metrics.<metric> with its interval (uncertainty.interval); None when the row lacks the metric."""
    value = _number(row, f"metrics.{metric}")
    if value is None:
        return None
    bounds = uncertainty.interval(row, f"metrics.{metric}")
    return Estimate(value, *bounds) if bounds else Estimate(value)


def compare(a: Estimate | None, b: Estimate | None, higher_is_better: bool) -> str:
    """'better' / 'worse' when a's interval lies wholly on one side of b's, 'tie' when they overlap
    (uncertainty.tied), 'unknown' when a number or an interval is missing."""
    if a is None or b is None or not (a.known and b.known):
        return "unknown"
    if uncertainty.tied((a.low, a.high), (b.low, b.high)):
        return "tie"
    return "better" if (a.low > b.high) == higher_is_better else "worse"


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


def _verdict(outcome: str, *, wanted: str = "better") -> tuple[str, str]:
    if outcome == wanted:
        return "holds", "intervals do not overlap"
    if outcome in ("better", "worse"):
        return "does not hold", "intervals do not overlap, the other way"
    if outcome == "tie":
        return "undetermined", "intervals overlap: a tie at this sample size"
    return "undetermined", "a number or its interval is missing"


def _paper(table: str) -> pd.DataFrame:
    return pd.read_csv(PAPER_DIR / f"{table}.csv")


def _paper_value(frame: pd.DataFrame, column: str, **where) -> float | None:
    picked = frame
    for key, value in where.items():
        picked = picked[picked[key] == value]
    if picked.empty or column not in picked or pd.isna(picked.iloc[0][column]):
        return None
    return float(picked.iloc[0][column])


# --- the claims -------------------------------------------------------------------------------

def l2c_matches_uncached(rows: pd.DataFrame) -> list[Check]:
    """Tables 1/2: L2C at NFE 20 and 50 keeps the uncached sampler's quality and is faster."""
    checks = []
    for arch, sampler in _models(rows):
        mine = _same_model(rows, arch, sampler)
        for _, l2c in _default_l2c(mine).iterrows():
            nfe = int(l2c["config.steps"])
            if nfe not in (20, 50):
                continue
            base = _select(mine, **{"config.cache.name": "none", "config.steps": nfe})
            if base.empty:
                continue
            base = base.iloc[0]
            axis = quality_axis(l2c, base)
            better = QUALITY_AXES.get(axis, False)
            q_l2c, q_base = estimate(l2c, axis), estimate(base, axis)
            speed = estimate(l2c, "speedup")
            quality = compare(q_l2c, q_base, better)
            faster = "unknown" if speed is None or not speed.known else (
                "yes" if speed.low > 1 else "no" if speed.high < 1 else "tie")
            if quality == "worse" or faster == "no":
                verdict, why = "does not hold", ("quality worse" if quality == "worse" else "slower") + \
                    ", intervals do not overlap"
            elif faster == "yes" and quality in ("better", "tie"):
                verdict, why = "holds", "faster (speedup interval above 1), quality within the noise or better"
            else:
                verdict, why = "undetermined", "speedup interval includes 1" if faster == "tie" else \
                    "a number or its interval is missing"
            paper_table = "table1_dit" if arch.startswith("DiT") else "table2_uvit"
            checks.append(Check(
                "L2C keeps the uncached quality and is faster", "Tables 1/2", f"{arch}, NFE {nfe}",
                f"{axis}: L2C {q_l2c} vs uncached {q_base}; speedup {speed}",
                _paper_pair(paper_table, nfe, "L2C", _base_label(sampler)), verdict, why))
    return checks


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


def matched_step_count(l2c: pd.Series, uncached: pd.DataFrame) -> pd.Series | None:
    """The uncached point whose measured latency is closest to L2C's (fewer steps than L2C's NFE):
    step reduction at L2C's measured cost, found among the points the sweep ran."""
    fewer = uncached[uncached["config.steps"] < int(l2c["config.steps"])]
    fewer = fewer[_column(fewer, "metrics.latency_ms").notna()]
    if fewer.empty or _number(l2c, "metrics.latency_ms") is None:
        return None
    gap = (fewer["metrics.latency_ms"].astype(float) - float(l2c["metrics.latency_ms"])).abs()
    return fewer.loc[gap.idxmin()]


def l2c_beats_step_reduction(rows: pd.DataFrame) -> list[Check]:
    """Tables 1/2: at equal measured latency, L2C's quality is better than fewer uncached steps."""
    checks = []
    for arch, sampler in _models(rows):
        mine = _same_model(rows, arch, sampler)
        uncached = mine[mine["config.cache.name"] == "none"]
        for _, l2c in _default_l2c(mine).iterrows():
            nfe = int(l2c["config.steps"])
            matched = matched_step_count(l2c, uncached)
            if matched is None:
                continue
            axis = quality_axis(l2c, matched)
            outcome = compare(estimate(l2c, axis), estimate(matched, axis), QUALITY_AXES.get(axis, False))
            verdict, why = _verdict(outcome)
            steps = int(matched["config.steps"])
            checks.append(Check(
                "L2C beats step reduction at equal measured latency", "Tables 1/2",
                f"{arch}, L2C NFE {nfe} vs uncached NFE {steps} (matched by latency)",
                f"{axis}: L2C {estimate(l2c, axis)} vs NFE {steps} {estimate(matched, axis)}; latency ms: "
                f"L2C {estimate(l2c, 'latency_ms')} vs {estimate(matched, 'latency_ms')}",
                _paper_step_reduction(arch, sampler, nfe), verdict, why))
    return checks


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


def l2c_beats_heuristics(rows: pd.DataFrame) -> list[Check]:
    """Fig. 4: at the same cached ratio, L2C's learned choice beats bottom/top/random choices."""
    checks = []
    for arch, sampler in _models(rows):
        mine = _same_model(rows, arch, sampler)
        for _, l2c in _default_l2c(mine).iterrows():
            nfe, ratio = int(l2c["config.steps"]), _number(l2c, "metrics.cached_ratio")
            heuristics = mine[(mine["config.cache.name"] == "heuristic") & (mine["config.steps"] == nfe)]
            if ratio is None or heuristics.empty:
                continue
            for strategy in ("bottom", "top", "random", "greedy"):
                same = _select(heuristics, **{"config.cache.strategy": strategy})
                same = same[_column(same, "metrics.cached_ratio").notna()]
                if same.empty:
                    continue
                nearest = same.loc[(same["metrics.cached_ratio"].astype(float) - ratio).abs().idxmin()]
                gap = abs(float(nearest["metrics.cached_ratio"]) - ratio)
                axis = quality_axis(l2c, nearest)
                if gap > RATIO_TOLERANCE:
                    verdict, why = "undetermined", f"no {strategy} point within {RATIO_TOLERANCE} of L2C's ratio"
                else:
                    verdict, why = _verdict(compare(estimate(l2c, axis), estimate(nearest, axis),
                                                    QUALITY_AXES.get(axis, False)))
                checks.append(Check(
                    "L2C beats a heuristic layer choice at equal cached ratio", "Fig. 4",
                    f"{arch}, NFE {nfe}, {strategy}, cached ratio {ratio:.3f} vs {float(nearest['metrics.cached_ratio']):.3f}",
                    f"{axis}: L2C {estimate(l2c, axis)} vs {strategy} {estimate(nearest, axis)}",
                    "Fig. 4 (a figure: L2C's curve lies below the heuristics' at every ratio)", verdict, why))
    return checks


def caching_beats_dropping(rows: pd.DataFrame) -> list[Check]:
    """Tables 5/7: reusing a branch's cached output beats skipping it, for the same branches."""
    checks = []
    for arch, sampler in _models(rows):
        mine = _same_model(rows, arch, sampler)
        for _, drop in mine[mine["config.cache.name"] == "layer_drop"].iterrows():
            same = _select(mine, **{"config.cache.name": "heuristic", "config.steps": drop["config.steps"],
                                    "config.cache.strategy": drop["config.cache.strategy"],
                                    "config.cache.ratio": drop["config.cache.ratio"]})
            if drop.get("config.cache.seed") is not None:
                same = _select(same, **{"config.cache.seed": drop["config.cache.seed"]})
            if same.empty:
                continue
            cached = same.iloc[0]
            axis = quality_axis(cached, drop)
            verdict, why = _verdict(compare(estimate(cached, axis), estimate(drop, axis), QUALITY_AXES.get(axis, False)))
            paper = _paper("table5_7_layer_dropout")
            drops = paper[paper["method"] == "Random Drop"]
            paper_text = "; ".join(f"random drop {int(r['removed'])}/{int(r['total'])}: FID {r['fid']:g}"
                                   for _, r in drops.iterrows())
            cache_fid = _paper_value(paper, "fid", method="Learning-to-Cache")
            checks.append(Check(
                "caching a branch beats dropping it", "Tables 5/7",
                f"{arch}, NFE {int(drop['config.steps'])}, {drop['config.cache.strategy']} "
                f"ratio {float(drop['config.cache.ratio']):g}",
                f"{axis}: cached {estimate(cached, axis)} vs dropped {estimate(drop, axis)}",
                f"{paper_text}; L2C 176/560: FID {cache_fid:g}", verdict, why))
    return checks


def shifted_beats_unshifted(rows: pd.DataFrame) -> list[Check]:
    """Table 6: reusing every branch at the shifted cache step beats the non-shifted one (U-ViT)."""
    checks = []
    for arch, sampler in _models(rows):
        mine = _same_model(rows, arch, sampler)
        everything = _select(mine, **{"config.cache.name": "heuristic", "config.cache.ratio": 1.0})
        for nfe, group in everything.groupby("config.steps"):
            shifted = _select(group, **{"config.cache.shifted": True})
            plain = _select(group, **{"config.cache.shifted": False})
            if shifted.empty or plain.empty:
                continue
            a, b = shifted.iloc[0], plain.iloc[0]
            axis = quality_axis(a, b)
            verdict, why = _verdict(compare(estimate(a, axis), estimate(b, axis), QUALITY_AXES.get(axis, False)))
            paper = _paper("table6_shifted_cache")
            checks.append(Check(
                "the shifted cache step beats the non-shifted one", "Table 6", f"{arch}, NFE {int(nfe)}, all branches",
                f"{axis}: shifted {estimate(a, axis)} vs non-shifted {estimate(b, axis)}",
                f"FID: shifted {_paper_value(paper, 'fid', method='Cache - shifted (all layers)'):g} vs non-shifted "
                f"{_paper_value(paper, 'fid', method='Cache (all layers)'):g}", verdict, why))
    return checks


CLAIMS = (l2c_matches_uncached, l2c_beats_step_reduction, l2c_beats_heuristics, caching_beats_dropping,
          shifted_beats_unshifted)


def check_all(rows: pd.DataFrame) -> pd.DataFrame:
    """Every claim the store's rows can test, one row per (claim, setting)."""
    ok = uncertainty.pool_seeds(_ok(rows))
    checks = [c for claim in CLAIMS for c in claim(ok)] if len(ok) else []
    return pd.DataFrame([c.__dict__ for c in checks], columns=list(Check.__dataclass_fields__))


def to_markdown(checks: pd.DataFrame) -> str:
    header = ["claim", "source", "setting", "ours (95% intervals)", "paper", "verdict", "why"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, c in checks.iterrows():
        cells = [c["claim"], c["source"], c["setting"], c["ours"], c["paper"], f"**{c['verdict']}**", c["why"]]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    counts = checks["verdict"].value_counts() if len(checks) else pd.Series(dtype=int)
    lines += ["", ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)]
    return "\n".join(lines) + "\n"


def write_all(results: pd.DataFrame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    checks = check_all(results)
    text = to_markdown(checks) if len(checks) else "No claim can be checked: the store lacks the points " \
        "(run `python -m l2c_bench.run -m +sweep=claims`).\n"
    print(text)
    md, csv = out / "claims.md", out / "claims.csv"
    md.write_text(text)
    checks.to_csv(csv, index=False)
    return [md, csv]


def main(argv=None) -> None:
    results_to_files(__doc__, write_all, argv)


if __name__ == "__main__":
    main()
