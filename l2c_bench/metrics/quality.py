"""Quality metrics as pure functions of features, logits or statistics.

FID and KID go through clean-fid's own code (`frechet_distance`, `kernel_distance`); Inception
Score (10 splits) and precision/recall (Kynkaenniemi et al. 2019, k = 3) are computed here.
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and covariance (D, D), float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, D) features for statistics, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_statistics(mu1, sigma1, mu2, sigma2) -> float:
    from cleanfid.fid import frechet_distance

    return float(frechet_distance(mu1, sigma1, mu2, sigma2))


def on_class_rate(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose predicted class is their conditioning label."""
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())


def per_class_rate(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    predictions = np.asarray(logits).argmax(axis=1)
    labels = np.asarray(labels)
    return [float((predictions[labels == c] == c).mean()) if (labels == c).any() else None
            for c in range(num_classes)]


def mse(a, b) -> float:
    """Mean squared error between two paired tensors/arrays of the same shape."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    return float(np.mean((a - b) ** 2))


def psnr(a, b, peak_to_peak: float) -> float:
    """Peak signal-to-noise ratio in dB; inf for identical inputs."""
    return psnr_from_mse(mse(a, b), peak_to_peak)


def psnr_from_mse(error: float, peak_to_peak: float) -> float:
    """PSNR in dB of a mean squared error; inf for 0."""
    return float("inf") if error == 0 else float(10 * np.log10(peak_to_peak**2 / error))


def paired_sums(latents, images, reference_latents, reference_images) -> dict:
    """One batch's per-sample statistics against a paired reference (same seeds; CPU tensors):
    sums of squared error in float64, (n,), so metrics over any split of the samples into batches
    or shards are the same, and the reference latents' (min, max), (n, 2), in their dtype."""
    import torch

    reference_flat = reference_latents.cpu().flatten(1)  # (n, C*H*W)
    return {"latent_se": (latents.cpu().double() - reference_latents.cpu().double()).pow(2).flatten(1).sum(1),
            "latent_range": torch.stack([reference_flat.amin(1), reference_flat.amax(1)], 1),
            "image_se": (images.cpu().double() - reference_images.cpu().double()).pow(2).flatten(1).sum(1)}


def paired_scores(prefix: str, latent_se, image_se, latent_range, latent_numel: int, image_numel: int) -> dict:
    """`<prefix>_{latent,image}_{mse,psnr_db}` and `<prefix>_latent_peak_to_peak` of a run from its
    `paired_sums`. Latents have no fixed range: their PSNR's peak is the reference latents'
    peak-to-peak over the run (a unit, not a statistic); images lie in [-1, 1] (peak 2)."""
    n = len(latent_se)
    span = float(latent_range[:, 1].max() - latent_range[:, 0].min())
    latent_mse = float(latent_se.sum()) / (n * latent_numel)
    image_mse = float(image_se.sum()) / (n * image_numel)
    return {f"{prefix}_latent_mse": latent_mse, f"{prefix}_latent_psnr_db": psnr_from_mse(latent_mse, span),
            f"{prefix}_latent_peak_to_peak": span, f"{prefix}_image_mse": image_mse,
            f"{prefix}_image_psnr_db": psnr_from_mse(image_mse, 2.0)}


def kid(features: np.ndarray, reference: np.ndarray, *, num_subsets: int = 100, max_subset_size: int = 1000,
        seed: int = 0) -> float:
    """Kernel Inception Distance (clean-fid's estimator: cubic polynomial kernel, averaged over
    random subsets), with the subsets drawn from a fixed seed so the number is reproducible."""
    from cleanfid.fid import kernel_distance

    state = np.random.get_state()  # clean-fid draws subsets from numpy's global generator
    np.random.seed(seed)
    try:
        return kernel_distance(np.asarray(features, np.float64), np.asarray(reference, np.float64),
                               num_subsets=num_subsets, max_subset_size=max_subset_size)
    finally:
        np.random.set_state(state)


def paired_kid(features: np.ndarray, reference: np.ndarray, *, num_subsets: int = 100,
               max_subset_size: int = 1000, seed: int = 0) -> float:
    """KID between two sets whose rows are pairs (row i of both from the same seed): clean-fid's
    kernel (x.y/d + 1)^3 and subset averaging, but the U-statistic of Gretton et al. 2012 (Lemma 6)
    that leaves out the paired cross terms k(x_i, y_i). Those are not independent draws, so
    `kid`'s estimator (which keeps them) is biased low there: negative for identical sets; this one
    gives 0. Subsets take the same rows from both sets, drawn from a fixed seed."""
    x_all, y_all = np.asarray(features, np.float64), np.asarray(reference, np.float64)
    if x_all.shape != y_all.shape or len(x_all) < 2:
        raise ValueError(f"paired KID needs two (N >= 2, D) sets of one shape, got {x_all.shape} and {y_all.shape}")
    n, d = x_all.shape
    m = min(n, max_subset_size)
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets if m < n else 1):  # m = n: every subset is the whole set
        rows = rng.choice(n, m, replace=False)
        x, y = x_all[rows], y_all[rows]
        within = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3  # (m, m)
        cross = (x @ y.T / d + 1) ** 3
        cross = cross + cross.T  # k(x_i, y_j) + k(x_j, y_i)
        total += float((within - cross).sum() - np.trace(within - cross)) / (m * (m - 1))
    return total / (num_subsets if m < n else 1)


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) per split of the samples (in order); mean and std over splits."""
    logits = np.asarray(logits, dtype=np.float64)
    if len(logits) < splits:
        raise ValueError(f"inception score needs >= {splits} samples for {splits} splits, got {len(logits)}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # log softmax, (N, K)
    scores = []
    for part in np.array_split(log_p, splits):
        log_marginal = np.log(np.exp(part).mean(axis=0))  # (K,)
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def _kth_neighbour_radii(features, k: int, device=None):
    import torch

    x = torch.as_tensor(features, dtype=torch.float64, device=device)
    radii = []
    for chunk in x.split(1024):
        distances = torch.cdist(chunk, x)  # (chunk, N); the 0 distance to itself is the 1st "neighbour"
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _inside(points, support, radii, device=None) -> np.ndarray:
    import torch

    p, s = (torch.as_tensor(a, dtype=torch.float64, device=device) for a in (points, support))
    inside = [(torch.cdist(chunk, s) <= radii[None, :]).any(dim=1) for chunk in p.split(1024)]
    return torch.cat(inside).cpu().numpy()


def precision_recall(features: np.ndarray, reference: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019): the share of generated samples
    inside the reference manifold (union of k-NN balls), and of reference samples inside the
    generated one."""
    if min(len(features), len(reference)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    precision = _inside(features, reference, _kth_neighbour_radii(reference, k)).mean()
    recall = _inside(reference, features, _kth_neighbour_radii(features, k)).mean()
    return float(precision), float(recall)
