"""Does timing that stops when it is sure still give honest speedup intervals?

A synthetic timing source with a known speedup replaces the clock: the uncached call takes
`ratio` times the method's, each call's time carries log-normal noise of spread `noise` and a
slow drift both functions share (a random walk over calls, as a machine warming or throttling).
Each replicate times the pair with the run's own code (metrics.timing.measure with the stop rule
of metrics.intervals.timing_is_sure) and builds the row's interval (metrics.intervals.timing_fields);
the table gives, per noise level, how often that interval covers the true speedup, how many
repeats ran and how often the rule stopped the timing early.

    python -m l2c_bench.benchmarks.timing_coverage [--replicates 400] [--halfwidth 0.05]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from ..metrics.intervals import timing_fields, timing_is_sure
from ..metrics.timing import measure


@dataclass(frozen=True)
class Coverage:
    noise: float
    replicates: int
    covered: int
    mean_repeats: float
    stopped_early: float  # share of replicates whose rule held before the maximum count

    @property
    def rate(self) -> float:
        return self.covered / self.replicates


def synthetic_timer(rng: np.random.Generator, *, ratio: float, noise: float, drift: float):
    """timer(fn) for measure(): seconds drawn for the function `fn` names (its `__name__`)."""
    level = [0.0]  # log drift, shared by every call

    def timer(fn) -> float:
        level[0] += rng.normal(0.0, drift)
        base = ratio if fn.__name__ == "uncached" else 1.0
        return float(base * np.exp(level[0] + rng.normal(0.0, noise)))

    return timer


def _named(name: str):
    fn = lambda: None
    fn.__name__ = name
    return fn


def coverage(noise: float, *, replicates: int, halfwidth: float, ratio: float = 1.5, drift: float = 0.01,
             repeats: int = 10, min_repeats: int = 8, resamples: int = 1000, seed: int = 0) -> Coverage:
    """Coverage of the stopped speedup interval over `replicates` independent timings."""
    rng = np.random.default_rng(seed)
    covered, counts, early = 0, [], 0
    for rep in range(replicates):
        fns = {"method": _named("method"), "uncached": _named("uncached")}
        sure = timing_is_sure(halfwidth, resamples=resamples, seed=rep)
        timings = measure(fns, repeats=repeats, warmup=0, sure=sure, min_repeats=min_repeats,
                          timer=synthetic_timer(rng, ratio=ratio, noise=noise, drift=drift))
        method, uncached = timings["method"], timings["uncached"]
        fields = timing_fields(method.samples_s, uncached.samples_s, resamples=resamples, seed=rep)
        covered += fields["speedup_ci_low"] <= ratio <= fields["speedup_ci_high"]
        counts.append(method.repeats)
        early += method.stop == "sure" and method.repeats < repeats
    return Coverage(noise, replicates, covered, float(np.mean(counts)), early / replicates)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=400)
    parser.add_argument("--halfwidth", type=float, default=0.05, help="metrics.timing_halfwidth")
    parser.add_argument("--repeats", type=int, default=10, help="metrics.timing_repeats (the maximum)")
    parser.add_argument("--min-repeats", type=int, default=8, help="metrics.timing_min_repeats")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.01, 0.03, 0.05, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"true speedup 1.5, stop at +-{args.halfwidth:.0%}, {args.min_repeats}..{args.repeats} repeats, "
          f"{args.replicates} replicates per row, 95% intervals")
    print("| per-call noise (log sd) | coverage | mean repeats | stopped early |")
    print("|---|---|---|---|")
    for noise in args.noise:
        c = coverage(noise, replicates=args.replicates, halfwidth=args.halfwidth, repeats=args.repeats,
                     min_repeats=args.min_repeats, seed=args.seed)
        print(f"| {noise:.2f} | {c.rate:.3f} ({c.covered}/{c.replicates}) | {c.mean_repeats:.1f} | "
              f"{c.stopped_early:.0%} |")


if __name__ == "__main__":
    main()
