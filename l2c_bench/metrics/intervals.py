"""95% intervals for the numbers a run records, as pure functions (docs/metrics.md, "Intervals").

- Quality metrics computed from the generated samples (FID, KID, recall, paired MSE/PSNR, and
  FID/KID against the converged samples) get a delete-a-group jackknife interval: the samples are
  dealt into G groups by a seeded permutation; replicate g is the metric without group g;
  se^2 = (G-1)/G * sum_g (theta_g - mean)^2 and the interval is theta +- t(0.975, G-1) * se
  (Efron & Tibshirani 1993, ch. 11). The target is the metric's expected value at this sample
  count, the number rows with the same `num_samples` compare (FID at N samples is biased by O(1/N)).
  Not the bootstrap: resampling with replacement duplicates samples, which inflates FID by far
  more than its spread (docs/metrics.md shows the numbers).
- The Inception Score, a mean over 10 splits of disjoint samples, gets the Student-t interval of
  its split scores.
- Rates that are shares of independent samples (on-class rate, class flip rate, precision: each
  generated sample inside the fixed reference manifold or not) get the Wilson score interval,
  which stays honest at 0 or n successes.
- Latency medians get the distribution-free order-statistic interval (exact for any distribution
  of timings; needs >= 6 repeats at 95%), the speedup (a ratio of medians) a bootstrap over the
  interleaved repeat pairs, percentile interval.

The jackknife groups depend only on (number of samples, G, seed): a run split into shards, joined
before scoring, gets the same intervals. Fast paths (FID from group Gram matrices, KID batched in
torch on CUDA, recall on the run's device) compute the same replicates as the reference path
`jackknife_replicates(metric, ...)`, which tests compare them with. Costs: docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

LEVEL = 0.95
IS_SPLITS = 10  # run.quality_metrics: the Inception Score over 10 splits
MIN_TIMING_REPEATS = 6  # below this no order statistic of n timings covers the median with 95%

Bounds = tuple[float, float]



# ---------------------------------------------------------------------------------------------
# Generic constructions


def group_ids(n: int, groups: int, seed: int) -> np.ndarray:
    """(n,) jackknife group of each sample: a seeded permutation of 0..n-1 dealt into
    min(groups, n) groups whose sizes differ by at most one."""
    if groups < 2 or n < 2:
        raise ValueError(f"a jackknife needs >= 2 groups of >= 1 sample, got groups={groups}, n={n}")
    order = np.random.default_rng(seed).permutation(n)
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.arange(n) % min(groups, n)
    return ids


def jackknife_replicates(statistic: Callable[..., float], *arrays, ids: np.ndarray) -> np.ndarray:
    """Reference path: (G,) values of `statistic` on the arrays' rows without group g."""
    return np.array([statistic(*(a[ids != g] for a in arrays)) for g in range(int(ids.max()) + 1)], np.float64)


def jackknife_bounds(estimate: float, replicates: Sequence[float], level: float = LEVEL) -> Bounds | None:
    """estimate +- t(G-1) * jackknife standard error of the G delete-a-group replicates; None if a
    replicate is not finite."""
    from scipy.stats import t

    replicates = np.asarray(replicates, np.float64)
    if not (np.isfinite(replicates).all() and math.isfinite(estimate)):
        return None
    g = len(replicates)
    se = math.sqrt((g - 1) / g * float(((replicates - replicates.mean()) ** 2).sum()))
    half = float(t.ppf(0.5 + level / 2, g - 1)) * se
    return estimate - half, estimate + half


def split_mean_bounds(mean: float, std: float, splits: int, level: float = LEVEL) -> Bounds:
    """Student-t interval of a mean of `splits` scores from disjoint samples (the Inception Score
    over its splits), from their mean and standard deviation (numpy's, ddof 0)."""
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, splits - 1)) * std / math.sqrt(splits - 1)  # sd/sqrt(k), sd with ddof 1
    return mean - half, mean + half


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> Bounds:
    """Wilson score interval of a binomial proportion (Wilson 1927); contains successes / n."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, center - half)  # exact ends where rounding would blur them
    return low, 1.0 if successes == n else min(1.0, center + half)


def median_interval(samples: Sequence[float], level: float = LEVEL) -> Bounds | None:
    """Distribution-free interval [x_(k), x_(n+1-k)] for the median of n independent timings: the
    largest k with P(Binomial(n, 1/2) < k) <= (1 - level) / 2; None when n is too small."""
    from scipy.stats import binom

    n = len(samples)
    tail = (1 - level) / 2
    k = max((j for j in range(1, n // 2 + 1) if binom.cdf(j - 1, n, 0.5) <= tail), default=0)
    if k == 0:
        return None
    ordered = sorted(samples)
    return ordered[k - 1], ordered[n - k]


def ratio_of_medians_interval(numerator: Sequence[float], denominator: Sequence[float], *, resamples: int,
                              seed: int, level: float = LEVEL) -> Bounds | None:
    """Percentile bootstrap interval of median(numerator) / median(denominator) over pairs
    (numerator[r], denominator[r]) resampled together (timed back to back, they share drift);
    None below MIN_TIMING_REPEATS pairs."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    n = len(numerator)
    if n < MIN_TIMING_REPEATS or resamples < 1:
        return None
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (B, n) pair indices
    ratios = np.median(numerator[rows], axis=1) / np.median(denominator[rows], axis=1)
    low, high = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def timing_halfwidth(samples: Mapping[str, Sequence[float]], *, resamples: int, seed: int,
                     level: float = LEVEL) -> float | None:
    """Relative half-width of the interval the row will carry for the timed functions so far:
    the speedup's (`uncached` over `method`, as timing_fields builds it) where a twin was timed,
    else the method's latency median's; None while no interval exists (too few repeats)."""
    method = samples["method"]
    if "uncached" in samples:
        bounds = ratio_of_medians_interval(samples["uncached"], method, resamples=resamples, seed=seed, level=level)
        estimate = float(np.median(samples["uncached"]) / np.median(method))
    else:
        bounds, estimate = median_interval(method, level), float(np.median(method))
    return None if bounds is None else (bounds[1] - bounds[0]) / 2 / estimate


def timing_is_sure(halfwidth: float, *, resamples: int, seed: int,
                   level: float = LEVEL) -> Callable[[Mapping[str, Sequence[float]]], bool] | None:
    """metrics.timing.measure's stop rule: the row's timing interval within +-`halfwidth` of its
    estimate (a fraction: 0.05 = +-5%); None (time the fixed count) for halfwidth 0 or no intervals."""
    if halfwidth <= 0 or resamples < 1:
        return None

    def sure(samples: Mapping[str, Sequence[float]]) -> bool:
        reached = timing_halfwidth(samples, resamples=resamples, seed=seed, level=level)
        return reached is not None and reached <= halfwidth

    return sure


# ---------------------------------------------------------------------------------------------
# Fast paths: the same replicates as jackknife_replicates(metric, ...), affordable at 50,000 samples


def _device(device) -> torch.device:
    device = torch.device(device)
    return device if device.type == "cuda" else torch.device("cpu")  # float64 on CUDA or the CPU


def _array(values, device: torch.device):
    """float64 numpy array on the CPU (LAPACK), torch tensor on CUDA: the fast paths below use
    only operations both spell alike (`@`, `.T`, `.sum`, `xp.linalg.eigh`, ...)."""
    values = np.asarray(values, np.float64)
    return values if device.type == "cpu" else torch.as_tensor(values, device=device)


def _namespace(array):
    return np if isinstance(array, np.ndarray) else torch


def _sqrt_psd(matrix):
    """Symmetric square root of a covariance (eigenvalues clipped at 0)."""
    values, vectors = _namespace(matrix).linalg.eigh(matrix)
    return (vectors * values.clip(min=0) ** 0.5) @ vectors.T


class _GroupMoments:
    """Per-group sums of centred features and of their outer products: the mean and covariance
    of the samples without any group g from two subtractions (one Gram matrix in all)."""

    def __init__(self, features, ids: np.ndarray, device: torch.device):
        x = _array(features, device)  # (N, D)
        self.center = x.mean(0)  # centring keeps the subtraction of second moments accurate
        x = x - self.center
        members = [np.flatnonzero(ids == g) for g in range(int(ids.max()) + 1)]
        self.count = [len(rows) for rows in members]
        self.sum = [x[rows].sum(0) for rows in members]  # G x (D,)
        self.gram = [x[rows].T @ x[rows] for rows in members]  # G x (D, D): N D^2 multiply-adds in all
        self.total_sum, self.total_gram, self.n = sum(self.sum), sum(self.gram), len(x)

    def without(self, g: int):
        """Mean (D,) and covariance (D, D; n - 1 denominator, as np.cov) without group g."""
        n = self.n - self.count[g]
        mean = (self.total_sum - self.sum[g]) / n
        cov = (self.total_gram - self.gram[g] - n * mean[:, None] * mean[None, :]) / (n - 1)
        return mean + self.center, cov


def fid_replicates(features, ids: np.ndarray, *, mu_reference=None, sigma_reference=None, reference_features=None,
                   device="cpu") -> np.ndarray:
    """(G,) FID of the features without group g: against fixed reference statistics, or (paired
    sets, `reference_features` row i from the same seed as features row i) against the reference
    features without group g too. tr sqrt(S1 S2) = sum sqrt(eig(A S1 A)), A = S2^(1/2): the
    eigenvalues of a symmetric matrix instead of clean-fid's general `sqrtm` (same number)."""
    device = _device(device)
    generated = _GroupMoments(features, ids, device)
    paired = None if reference_features is None else _GroupMoments(reference_features, ids, device)
    if paired is None:
        mu_r, sigma_r = _array(mu_reference, device), _array(sigma_reference, device)
        root_r = _sqrt_psd(sigma_r)
    values = []
    for g in range(len(generated.count)):
        mu, sigma = generated.without(g)
        if paired is not None:
            mu_r, sigma_r = paired.without(g)
            root_r = _sqrt_psd(sigma_r)
        eigenvalues = _namespace(sigma).linalg.eigvalsh(root_r @ sigma @ root_r)
        trace_sqrt = (eigenvalues.clip(min=0) ** 0.5).sum()
        values.append(float(((mu - mu_r) ** 2).sum() + sigma.trace() + sigma_r.trace() - 2 * trace_sqrt))
    return np.array(values)


def kid_replicates(features, reference, ids: np.ndarray, *, num_subsets: int = 100, max_subset_size: int = 1000,
                   seed: int = 0, device="cpu", batched: bool = True, chunk: int = 10) -> np.ndarray:
    """(G,) `quality.kid(features without group g, reference)`: clean-fid's estimator (cubic
    polynomial kernel averaged over subsets, drawn as `kid` draws them from `seed`). `batched`
    computes `chunk` subsets at a time as stacked matrix products (numpy on the CPU, torch on
    CUDA); `batched=False` is the reference path, `kid` itself per replicate."""
    from .quality import kid

    if not batched:
        return jackknife_replicates(lambda kept: kid(kept, reference, num_subsets=num_subsets,
                                                     max_subset_size=max_subset_size, seed=seed),
                                    np.asarray(features), ids=ids)
    device = _device(device)
    x_all, y_all = _array(features, device), _array(reference, device)
    xp = _namespace(x_all)

    def rows(indices: np.ndarray):
        return indices if xp is np else torch.as_tensor(indices, device=device)

    d = x_all.shape[1]
    values = []
    for g in range(int(ids.max()) + 1):
        kept = x_all[rows(np.flatnonzero(ids != g))]
        m = min(len(kept), len(y_all), max_subset_size)
        draws = np.random.RandomState(seed)  # what np.random.seed(seed) makes the global generator
        subsets = [(draws.choice(len(y_all), m, replace=False), draws.choice(len(kept), m, replace=False))
                   for _ in range(num_subsets)]  # clean-fid's order: reference rows, then generated rows
        total = 0.0
        for start in range(0, num_subsets, chunk):
            batch = subsets[start:start + chunk]
            ref = y_all[rows(np.stack([r for r, _ in batch]))]  # (s, m, D)
            gen = kept[rows(np.stack([q for _, q in batch]))]  # (s, m, D)
            within = (ref @ ref.swapaxes(1, 2) / d + 1) ** 3 + (gen @ gen.swapaxes(1, 2) / d + 1) ** 3  # (s, m, m)
            cross = (ref @ gen.swapaxes(1, 2) / d + 1) ** 3
            off_diagonal = within.sum((1, 2)) - xp.einsum("sii->s", within)
            total += float((off_diagonal / (m - 1) - cross.sum((1, 2)) * 2 / m).sum())
        values.append(total / num_subsets / m)
    return np.array(values)


def recall_replicates(features, reference, ids: np.ndarray, *, k: int = 3, device="cpu") -> np.ndarray:
    """(G,) recall of the features without group g (`quality.precision_recall`'s second value:
    the share of reference samples inside the generated k-NN manifold) on `device`."""
    from .quality import _inside, _kth_neighbour_radii

    device = _device(device)
    features = np.asarray(features)
    values = []
    for g in range(int(ids.max()) + 1):
        kept = features[ids != g]
        values.append(float(_inside(reference, kept, _kth_neighbour_radii(kept, k, device), device).mean()))
    return np.array(values)


def mse_psnr_bounds(squared_errors, numel: int, peak_to_peak: float, ids: np.ndarray,
                    level: float = LEVEL) -> tuple[Bounds | None, Bounds | None]:
    """Intervals of a paired MSE (sum of per-sample squared errors / (n * numel)) and its PSNR:
    the jackknife on the PSNR (a log scale, where the skewed mean is closer to normal), its ends
    mapped back to MSE through the same peak (a unit, held fixed)."""
    from .quality import psnr_from_mse

    se = np.asarray(squared_errors, np.float64)
    mse = float(se.sum()) / (len(se) * numel)
    replicates = [float(se[ids != g].sum()) / (int((ids != g).sum()) * numel) for g in range(int(ids.max()) + 1)]
    if mse == 0 or min(replicates) == 0:  # identical outputs: nothing to be unsure about
        return ((0.0, 0.0), None) if max(replicates) == 0 else (None, None)
    psnr = jackknife_bounds(psnr_from_mse(mse, peak_to_peak), [psnr_from_mse(r, peak_to_peak) for r in replicates],
                            level)
    if psnr is None:
        return None, None

    def mse_at(db: float) -> float:
        return peak_to_peak**2 / 10 ** (db / 10)

    return (mse_at(psnr[1]), mse_at(psnr[0])), psnr


# ---------------------------------------------------------------------------------------------
# Row fields


def ci_fields(metric: str, bounds: Bounds | None) -> dict[str, float | None]:
    """`<metric>_ci_low` and `<metric>_ci_high` (None: no interval could be had)."""
    low, high = (None, None) if bounds is None else (float(bounds[0]), float(bounds[1]))
    return {f"{metric}_ci_low": low, f"{metric}_ci_high": high}


def method_label(groups: int, resamples: int) -> str:
    """`metrics.interval_method`: the construction behind each kind of interval."""
    return (f"quality: jackknife-{groups}; rates: wilson; latency: order-statistic; "
            f"speedup: pair-bootstrap-{resamples}")


def timing_fields(method_s: Sequence[float], uncached_s: Sequence[float], *, resamples: int, seed: int,
                  level: float = LEVEL) -> dict:
    """Intervals of latency_ms, latency_ms_uncached and speedup from the interleaved repeats
    (`Timing.samples_s`; repeat r of both was timed back to back)."""
    out = {**ci_fields("latency_ms", _scaled(median_interval(method_s, level), 1e3)),
           **ci_fields("latency_ms_uncached", _scaled(median_interval(uncached_s, level), 1e3)),
           **ci_fields("speedup", ratio_of_medians_interval(uncached_s, method_s, resamples=resamples, seed=seed,
                                                            level=level))}
    if len(method_s) < MIN_TIMING_REPEATS:
        out["timing_ci_note"] = (f"{len(method_s)} timed repeats: a 95% interval of a median needs "
                                 f">= {MIN_TIMING_REPEATS} (metrics.timing_repeats)")
    return out


def _scaled(bounds: Bounds | None, factor: float) -> Bounds | None:
    return None if bounds is None else (bounds[0] * factor, bounds[1] * factor)


def paired_fields(prefix: str, values: Mapping, squared_errors: Mapping[str, object], numel: Mapping[str, int],
                  peak_to_peak: Mapping[str, float], ids: np.ndarray, level: float = LEVEL) -> dict:
    """Intervals of `<prefix>_{latent,image}_{mse,psnr_db}` (the fields present and not None in
    `values`) from the per-sample squared errors of each space."""
    out = {}
    for space in ("latent", "image"):
        if values.get(f"{prefix}_{space}_mse") is None:
            continue
        mse, psnr = mse_psnr_bounds(squared_errors[space], numel[space], peak_to_peak[space], ids, level)
        out.update(ci_fields(f"{prefix}_{space}_mse", mse), **ci_fields(f"{prefix}_{space}_psnr_db", psnr))
    return out


def quality_fields(values: Mapping, *, features, ids: np.ndarray, labels=None, logits=None, reference=None,
                   reference_logits=None, converged_features=None, k: int = 3, device="cpu",
                   level: float = LEVEL, replicates: dict | None = None) -> dict:
    """Intervals of the quality fields present (not None) in `values`: fid, kid, precision,
    recall, is, on_class_rate, class_flip_rate, fid_vs_converged, kid_vs_converged. `reference`
    has the reference set's `mu`, `sigma` and `features` (None where only statistics exist).
    Ends are clipped to the metric's range (FID >= 0, IS >= 1, recall in [0, 1]); a jackknife
    whose replicates would have too few samples for the metric gives no interval (None).
    `replicates`, where given, receives each jackknifed metric's (G,) replicates (the per-sample
    record keeps them: records.samples)."""
    from .quality import _inside, _kth_neighbour_radii, paired_kid

    features = np.asarray(features, np.float64)
    kept = len(features) - int(np.bincount(ids).max())  # samples in the smallest replicate

    def wanted(key: str, least: int = 2) -> bool:
        if values.get(key) is None:
            return False
        if kept < least:
            out.update(ci_fields(key, None))
        return kept >= least

    def jackknife(key: str, values_g: np.ndarray, low: float = -math.inf, high: float = math.inf) -> None:
        out.update(ci_fields(key, _clip(jackknife_bounds(values[key], values_g, level), low, high)))
        if replicates is not None:
            replicates[key] = [float(v) for v in values_g]

    out: dict = {}
    if wanted("fid"):
        jackknife("fid", fid_replicates(features, ids, mu_reference=reference.mu, sigma_reference=reference.sigma,
                                        device=device), 0.0)
    if wanted("kid"):  # unbiased: may be < 0, as the estimate itself
        jackknife("kid", kid_replicates(features, reference.features, ids, device=device))
    if wanted("recall", k + 1):
        jackknife("recall", recall_replicates(features, reference.features, ids, k=k, device=device), 0.0, 1.0)
    if wanted("fid_vs_converged"):
        jackknife("fid_vs_converged", fid_replicates(features, ids, reference_features=converged_features,
                                                     device=device), 0.0)
    if wanted("kid_vs_converged"):
        jackknife("kid_vs_converged", jackknife_replicates(paired_kid, features, np.asarray(converged_features),
                                                           ids=ids))
    if values.get("is") is not None and values.get("is_std") is not None:  # Student-t over its 10 splits
        out.update(ci_fields("is", _clip(split_mean_bounds(values["is"], values["is_std"], IS_SPLITS, level), 1.0)))
    # shares of independent samples: Wilson
    if values.get("precision") is not None:  # each generated sample inside the fixed reference manifold or not
        radii = _kth_neighbour_radii(reference.features, k, _device(device))
        inside = _inside(features, reference.features, radii, _device(device))
        out.update(ci_fields("precision", wilson_interval(int(inside.sum()), len(inside), level)))
    if values.get("on_class_rate") is not None:
        hits = int((np.asarray(logits).argmax(1) == np.asarray(labels)).sum())
        out.update(ci_fields("on_class_rate", wilson_interval(hits, len(features), level)))
    if values.get("class_flip_rate") is not None:
        flips = int((np.asarray(logits).argmax(1) != np.asarray(reference_logits).argmax(1)).sum())
        out.update(ci_fields("class_flip_rate", wilson_interval(flips, len(features), level)))
    return out


def _clip(bounds: Bounds | None, low: float = -math.inf, high: float = math.inf) -> Bounds | None:
    """Bounds kept inside the metric's range (its true value is inside: coverage is unchanged)."""
    return None if bounds is None else (min(max(bounds[0], low), high), max(min(bounds[1], high), low))
