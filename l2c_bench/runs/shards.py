"""Sharded generation: a run's samples split into whole batches across jobs or ranks.

Sample i (seed `sampling.noise.sample_seed(seed, i)`, label `i % classes`) lands in global batch `i // batch_size`; shard k
of n takes a contiguous run of whole batches. Every batch is therefore generated and scored
with the same composition however the run is sharded, and per-sample noise makes the samples
themselves independent of the split: 1 shard and n shards give bit-identical features and metrics.

Each shard writes `<run_dir>/shards/<k>-of-<n>.pt` atomically (per-sample statistics, not
images: features, logits, paired errors, plus the few images of the preview grid). Metrics are
computed once every shard of the run is present, by whichever job completes the set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..system.files import atomic_path


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard.index={self.index} must lie in [0, shard.count={self.count})")


def from_environment(index: int, count: int) -> Shard:
    """The configured shard; under torchrun (WORLD_SIZE > 1, shard.count = 1) the rank's shard."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if count == 1 and world > 1:
        return Shard(int(os.environ.get("RANK", "0")), world)
    return Shard(index, count)


def sample_range(num_samples: int, batch_size: int, shard: Shard) -> range:
    """The sample indices of `shard`: whole batches, contiguous, balanced to within one batch."""
    batches = -(-num_samples // batch_size)
    if shard.count > batches:
        raise ValueError(f"shard.count={shard.count} exceeds the run's {batches} batches "
                         f"(metrics.num_samples={num_samples}, metrics.batch_size={batch_size})")
    first = shard.index * batches // shard.count
    last = (shard.index + 1) * batches // shard.count
    return range(first * batch_size, min(last * batch_size, num_samples))


def shard_path(run_dir: Path, shard: Shard) -> Path:
    return Path(run_dir) / "shards" / f"{shard.index:03d}-of-{shard.count:03d}.pt"


def save_shard(run_dir: Path, shard: Shard, part: dict) -> Path:
    path = shard_path(run_dir, shard)
    with atomic_path(path) as tmp:
        torch.save(part, tmp)
    return path


def missing_shards(run_dir: Path, count: int) -> list[int]:
    return [k for k in range(count) if not shard_path(run_dir, Shard(k, count)).is_file()]


def load_shards(run_dir: Path, count: int) -> list[dict]:
    """Every shard of the run, in order; an unreadable file is an error naming it and its job."""
    parts = []
    for k in range(count):
        path = shard_path(run_dir, Shard(k, count))
        try:
            parts.append(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 - any failure inside torch.load means an unusable file
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(f"cannot read shard file {path}: truncated or corrupt ({type(exc).__name__}: "
                               f"{reason[:200]}); rerun that shard with shard.index={k} shard.count={count} "
                               "force=true") from None
    return parts


def join_parts(parts: list[dict]) -> dict:
    """Shards in order -> one part (tensors concatenated)."""
    joined = {}
    for key, value in parts[0].items():
        values = [p[key] for p in parts]
        joined[key] = torch.cat(values) if isinstance(value, torch.Tensor) else value
    return joined
