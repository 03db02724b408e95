"""Sample one run's images (or one shard of them) with the method and, for a cached run, uncached
on the same seeds; keep the per-sample statistics the scores need."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import weakref
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..metrics.converged import reference_kwargs
from ..metrics.registry import METRICS, Batch
from ..sampling.noise import sample_seed
from ..system.devices import tf32_enabled
from .prepare import Point
from .shards import sample_range, save_shard, shard_path

log = logging.getLogger("l2c_bench.run")

# Where sample_part's time goes, in seconds (the part's `phase_s`, one row per call: shards add up):
# the method's own samples, the uncached twin's, the converged reference's (read or sampled), and
# the registered metrics' per-batch work (features, SSIM, LPIPS, CLIP) without the references.
PART_PHASES = ("sampling", "twin", "reference", "scoring")
# How many samples of each reference were read from the shared store or shipped with the package,
# and how many were sampled (the part's `reuse_n`, one row per call: shards add up).
REUSE = ("uncached_read", "uncached_sampled", "converged_read", "converged_sampled")


def sample_part(point: Point, indices: range, progress: bool = True) -> dict:
    """Generate samples `indices` batch by batch (global batches, see shards.py) with the method
    and, for a cached run, uncached on the same seeds; keep each registered metric's per-sample
    values (metrics/registry.py; CPU)."""
    run = point.run
    out: dict[str, list] = {k: [] for k in ("index", "labels", "grid", "schedule")}
    for metric in METRICS.values():
        out.update({key: [] for key in metric.part_keys})
    spent = dict.fromkeys(PART_PHASES, 0.0)
    counts = dict.fromkeys(REUSE, 0)
    size = run.metrics.batch_size
    for idx in tqdm(batch_indices(indices, size), disable=not progress, desc="batches", leave=False):
        kwargs = batch_kwargs(point, idx)
        start_s = time.perf_counter()
        result = point.sample(point.cache, **kwargs)
        spent["sampling"] += time.perf_counter() - start_s
        images = result.images.float().cpu()
        out["index"].append(idx)
        out["labels"].append(result.labels.cpu())
        if result.dynamic:  # what each sample's batch computed: (n, nfe, blocks, 2) bool
            out["schedule"].append(result.schedule.cpu().unsqueeze(0).expand(len(idx), -1, -1, -1))
        out["grid"].append(images[idx < run.metrics.grid_samples])
        batch = Batch(point, kwargs, idx, result, images,
                      fetch=lambda kind, kwargs=kwargs: timed_reference(point, kwargs, kind, spent, counts))
        start_s, fetched_s = time.perf_counter(), spent["twin"] + spent["reference"]
        for metric in METRICS.values():
            for key, value in metric.update(batch).items():
                out.setdefault(key, []).append(value)
        spent["scoring"] += time.perf_counter() - start_s - (spent["twin"] + spent["reference"] - fetched_s)
        out.setdefault("latent_numel", result.latents[0].numel())
        out.setdefault("image_numel", images[0].numel())
    out["phase_s"] = [torch.tensor([[spent[phase] for phase in PART_PHASES]], dtype=torch.float64)]
    out["reuse_n"] = [torch.tensor([[counts[key] for key in REUSE]], dtype=torch.int64)]
    return {k: (torch.cat(v) if v else None) if isinstance(v, list) else v for k, v in out.items()}


def batch_indices(indices: range, size: int) -> list[torch.Tensor]:
    """The global batches of `size` that cover sample indices `indices` (shards.py: batch boundaries
    never depend on the shard split), each a (n,) index tensor."""
    return [torch.arange(start, min(start + size, indices.stop)) for start in range(indices.start, indices.stop, size)]


def batch_kwargs(point: Point, idx: torch.Tensor) -> dict:
    """`generate` arguments of the batch of samples `idx`: their seeds and labels, the run's sampler."""
    return dict(labels=idx % point.model.num_classes, seeds=[sample_seed(point.run.seed, int(i)) for i in idx],
                decode=True, **point.common)


def timed_reference(point: Point, kwargs: dict, kind: str, spent: dict, counts: dict | None = None):
    """`batch_reference`, its seconds added to `spent` (the twin's or the converged reference's) and
    its samples read or sampled to `counts` (`REUSE`)."""
    start_s = time.perf_counter()
    try:
        return batch_reference(point, kwargs, kind, counts)
    finally:
        spent["twin" if kind == "uncached" else "reference"] += time.perf_counter() - start_s


def batch_reference(point: Point, kwargs: dict, kind: str,
                    counts: dict | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The batch's uncached twin (`uncached`: cached runs only) or its converged reference
    (`converged`: where metrics.converged_nfe is on and the weights are real), or None."""
    run = point.run
    if kind == "uncached":
        return None if point.cache is None else stored_reference(point, kwargs, "uncached", counts)
    if kind == "converged":
        if not (run.metrics.converged_nfe and point.images):
            return None
        return stored_reference(point, reference_kwargs(kwargs, point.model.family, run.metrics.converged_nfe),
                                "converged", counts)
    raise ValueError(f"unknown reference {kind!r}: uncached or converged")


# 2: one file per sample in the store every results folder shares (records.references); 1: one
# per batch under <results_dir>/_reference/ (no longer read). Bump when sampling numerics change.
REFERENCE_FORMAT = 2


def reference_identity(point: Point, kwargs: dict) -> dict:
    """Everything that determines one batch's uncached samples from `kwargs`: model weights' hash,
    sampler, NFE, guidance, seeds, labels, device type and numerics (per sample: `sample_identity`)."""
    run = point.run
    return {"format": REFERENCE_FORMAT, "model": point.model_sha256 or weights_digest(point.model),
            "arch": run.model.arch, "overrides": dict(run.model.overrides), "sampler": kwargs["sampler"],
            "nfe": kwargs["steps"], "guidance": [kwargs["guidance_scale"], kwargs["guidance_channels"]],
            "eta": kwargs["eta"],
            "seeds": list(kwargs["seeds"]), "labels": [int(v) for v in kwargs["labels"]],
            "device": point.device.type, "dtype": run.dtype, "tf32": tf32_enabled(point.device),
            "compile": bool(run.compile)}


def sample_identity(batch: dict, i: int, kind: str) -> dict:
    """Sample i of a batch's `reference_identity`. A twin (`uncached`) also names its batch's size:
    it must be the bit-exact uncached run of the method's batch, and a float kernel may reduce in
    another order at another batch size (on this machine's CPU the toy models gave identical bits
    for batches of 1, 5 and 10, which no GPU promises). A converged reference, an ODE solution
    approximated far more coarsely than that, is shared across batch sizes."""
    one = {k: v for k, v in batch.items() if k not in ("seeds", "labels")}
    one.update(seed=batch["seeds"][i], label=batch["labels"][i])
    if kind == "uncached":
        one["batch"] = len(batch["seeds"])
    return one


def reference_key(identity: dict) -> str:
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


_WEIGHTS_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's parameters and buffers (names, shapes, dtypes, bytes): the identity of
    weights with no file behind them (the seeded random-weight diffusers toys), once per model."""
    if model not in _WEIGHTS_DIGESTS:
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        _WEIGHTS_DIGESTS[model] = "state-" + digest.hexdigest()
    return _WEIGHTS_DIGESTS[model]


def stored_reference(point: Point, kwargs: dict, kind: str,
                     counts: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Uncached latents and images for one batch sampled with `kwargs` (CPU): the uncached twin of
    a cached run, or its converged reference (metrics/converged.py), read per sample from the shared
    store (records.references) where any earlier run sampled them; the rest are sampled now and
    stored (a twin: its whole batch again, see `sample_identity`). Images are decoded from the
    latents (cheap next to sampling). `counts[f"{kind}_read"/"_sampled"]` add up what was reused."""
    from ..pipeline import to_images
    from ..records.references import ReferenceStore

    store = ReferenceStore(point.run.reference_dir)
    batch = reference_identity(point, kwargs)
    identities = [sample_identity(batch, i, kind) for i in range(len(batch["seeds"]))]
    keys = [reference_key(identity) for identity in identities]
    found = [store.get(kind, key) for key in keys]
    missing = [i for i, latents in enumerate(found) if latents is None]
    if kind == "uncached" and missing:
        missing = list(range(len(keys)))
    if counts is not None:
        counts[f"{kind}_read"] += len(keys) - len(missing)
        counts[f"{kind}_sampled"] += len(missing)
    if missing:
        picked = {**kwargs, "seeds": [kwargs["seeds"][i] for i in missing],
                  "labels": torch.as_tensor(kwargs["labels"])[missing]}
        sampled = point.sample(**picked)
        for i, latents in zip(missing, sampled.latents.cpu(), strict=True):
            store.put(kind, keys[i], latents, identities[i])
            found[i] = latents
        if len(missing) == len(keys):
            return sampled.latents.cpu(), sampled.images.float().cpu()
    latents = torch.stack(found)
    return latents, to_images(latents.to(point.device), point.vae).float().cpu()


def write_own_shard(point: Point, run_dir: Path) -> None:
    """A sharded run's job: generate and save this shard, unless an earlier attempt did (and not force)."""
    run, shard = point.run, point.shard
    if shard_path(run_dir, shard).is_file() and not run.force:
        log.info("shard %d/%d of %s exists: not recomputed", shard.index, shard.count, run_dir.name)
        return
    indices = sample_range(run.metrics.num_samples, run.metrics.batch_size, shard)
    save_shard(run_dir, shard, sample_part(point, indices))
    log.info("shard %d/%d of %s written (samples %d..%d)", shard.index, shard.count, run_dir.name,
             indices.start, indices.stop - 1)

