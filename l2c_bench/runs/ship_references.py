"""Make the references shipped with the package (`records.references.SHIPPED`) for the toy
models' default points as README command 1 runs them on a CPU (100 samples in batches of 50): the
converged reference (250 NFE) and the uncached twins at NFE 10, 20 and 50, one dict
{key: (C, H, W) latents} per kind keyed per sample as the shared store keys them, and a manifest
of each sample's identity by kind (tests/test_shipped_references.py recomputes samples of each and
checks that the keys a default run looks for are there).

    python -m l2c_bench.runs.ship_references          # writes l2c_bench/toy/assets/references/
    python -m l2c_bench.runs.ship_references STORE    # ... taking those a reference store already holds
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from ..metrics.converged import reference_kwargs
from ..records.references import SHIPPED, ReferenceStore
from .sample import (
    batch_indices,
    batch_kwargs,
    reference_identity,
    reference_key,
    sample_identity,
    stored_reference,
)

MODELS = ("dit", "uvit")


STEPS = (10, 20, 50)  # README command 1's NFE: the twins shipped


def default_point(model: str, store: str | Path, steps: int = 20):
    """The prepared uncached point of `model` at `steps` with the README command's settings, on the
    CPU, its references in the store at `store` (results in a folder beside it)."""
    from ..config import compose
    from .prepare import prepare

    cfg = compose([f"model={model}", f"steps={steps}", "cache=none", "tracker=none", "device=cpu",
                   f"results_dir={Path(store) / 'results'}", f"reference_dir={store}"])
    return prepare(cfg)


def batches(point) -> list[dict]:
    """`generate` arguments of each batch of the point's samples, as a run samples them (its
    cached run's uncached twin on the same seeds)."""
    run = point.run
    return [batch_kwargs(point, idx) for idx in batch_indices(range(run.metrics.num_samples), run.metrics.batch_size)]


def converged_batches(point) -> list[dict]:
    """`generate` arguments of each batch's converged reference, as a run samples them."""
    return [reference_kwargs(kwargs, point.model.family, point.run.metrics.converged_nfe) for kwargs in batches(point)]


def shipped_batches(model: str, store: str | Path):
    """(kind, point, kwargs) of every batch shipped for `model`: its converged reference, then its twins."""
    point = default_point(model, store)
    yield from (("converged", point, kwargs) for kwargs in converged_batches(point))
    for steps in STEPS:
        point = default_point(model, store, steps)
        yield from (("uncached", point, kwargs) for kwargs in batches(point))


def sample_keys(kind: str, point, kwargs) -> list[tuple[str, dict]]:
    """(key, identity) of each sample of a batch, as the shared store names them."""
    batch = reference_identity(point, kwargs)
    identities = [sample_identity(batch, i, kind) for i in range(len(batch["seeds"]))]
    return [(reference_key(identity), identity) for identity in identities]


def ship(target: Path = SHIPPED, source: str | None = None) -> dict[str, dict]:
    """Write every default point's references to `target/<kind>.pt` (replacing what was there) and
    the manifest {kind: {key: identity}}; returns the manifest. `source`: a reference store that
    already holds some (sampled by the same code), else all are sampled now."""
    manifest: dict[str, dict] = {"converged": {}, "uncached": {}}
    latents: dict[str, dict] = {kind: {} for kind in manifest}
    for kind in manifest:
        (target / f"{kind}.pt").unlink(missing_ok=True)  # never read back what is being remade
    with tempfile.TemporaryDirectory() as scratch:
        store = source or scratch
        for model in MODELS:
            for kind, point, kwargs in shipped_batches(model, store):
                stored_reference(point, kwargs, kind)  # sampled into the store, or there already
                for key, identity in sample_keys(kind, point, kwargs):
                    latents[kind][key] = ReferenceStore(store).get(kind, key)
                    manifest[kind][key] = identity
                print(f"{model} {kind} NFE {kwargs['steps']}: seeds {kwargs['seeds'][0]}..{kwargs['seeds'][-1]}",
                      flush=True)
    for kind, by_key in latents.items():
        torch.save(by_key, target / f"{kind}.pt")
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    ship(source=sys.argv[1] if len(sys.argv) > 1 else None)
