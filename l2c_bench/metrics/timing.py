"""The one timing helper: interleaved, synchronised, warm-up, median and interquartile range."""

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
            min_warmup_s: float = 0.0, timer: Callable[[Callable[[], object]], float] | None = None
            ) -> dict[str, Timing]:
    """Time every function `repeats` times, interleaved (ABBA order) so drift hits all alike.

    Warm-up: `warmup` calls of each, then more until `min_warmup_s` has passed (so the count is
    sized from the first calls' duration). Each timed call is bracketed by `sync()` and read from
    `clock`, or measured by `timer(fn)` (on a GPU: `cuda_event_timer`).
    """
    if repeats < 1:
        raise ValueError(f"timing repeats must be >= 1, got {repeats}")
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
    return {
        name: Timing(statistics.median(vals), _quantile(vals, 0.25), _quantile(vals, 0.75), repeats, done[name],
                      tuple(vals))
        for name, vals in samples.items()
    }
