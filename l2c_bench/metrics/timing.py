"""The one timing helper: interleaved, synchronised, warm-up, median and interquartile range, and
a stop once the caller's interval is narrow enough (docs/metrics.md, "Timing that stops when it is sure")."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    median_s: float
    q25_s: float
    q75_s: float
    repeats: int
    warmup: int
    # every timed call in order: repeat r of each function was timed back to back (ABBA), so
    # samples_s[r] of two functions form a pair (metrics.intervals: intervals from the repeats)
    samples_s: tuple[float, ...] = ()
    # why the repeats ended: "fixed" (no stop rule: `repeats` asked for), "sure" (the stop rule
    # held after `repeats`), "max" (the rule never held before the maximum count)
    stop: str = "fixed"

    @property
    def iqr_s(self) -> float:
        return self.q75_s - self.q25_s


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), also for a single value."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def device_sync(device: torch.device | str) -> Callable[[], None]:
    """A barrier for the device's queue (CUDA), or a no-op on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def cuda_event_timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Seconds one call takes on the GPU, between CUDA events recorded on the device's stream."""

    def timed(fn: Callable[[], object]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # ms -> s

    return timed


def measure(fns: Mapping[str, Callable[[], object]], *, repeats: int = 5, warmup: int = 1,
            sync: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.perf_counter,
            min_warmup_s: float = 0.0, timer: Callable[[Callable[[], object]], float] | None = None,
            sure: Callable[[Mapping[str, list[float]]], bool] | None = None, min_repeats: int = 6
            ) -> dict[str, Timing]:
    """Time every function up to `repeats` times, interleaved (ABBA order) so drift hits all alike.

    Warm-up: `warmup` calls of each, then more until `min_warmup_s` has passed (so the count is
    sized from the first calls' duration). Each timed call is bracketed by `sync()` and read from
    `clock`, or measured by `timer(fn)` (on a GPU: `cuda_event_timer`).

    `sure(samples)` (name -> the timings so far), where given, is asked after every complete ABBA
    pair of repeats from `min_repeats` on (and at the last): True ends the timing there. Asking
    only at even counts keeps every function's first and second position in the order equally
    often.
    """
    if repeats < 1:
        raise ValueError(f"timing repeats must be >= 1, got {repeats}")
    stop = "fixed" if sure is None or repeats <= min_repeats else "max"
    done = {name: 0 for name in fns}
    for name, fn in fns.items():
        start = clock()
        while True:
            if done[name] >= warmup and clock() - start >= min_warmup_s:
                break
            fn()
            sync()
            done[name] += 1
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            if timer is not None:
                samples[name].append(timer(fns[name]))
                continue
            sync()
            t0 = clock()
            fns[name]()
            sync()
            samples[name].append(clock() - t0)
        count = r + 1
        asked = count >= min_repeats and (count % 2 == 0 or count == repeats)
        if stop == "max" and asked and sure(samples):  # "sure" also when it first holds at the maximum
            stop = "sure"
            break
    return {
        name: Timing(statistics.median(vals), _quantile(vals, 0.25), _quantile(vals, 0.75), len(vals), done[name],
                      tuple(vals), stop)
        for name, vals in samples.items()
    }
