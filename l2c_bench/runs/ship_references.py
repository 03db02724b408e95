"""Make the converged references shipped with the package (`runs.sample.SHIPPED_REFERENCES`): the
toy models' default points as README command 1 runs them on a CPU (100 samples, batches of 50,
the converged sampler at 250 NFE), one file per batch as the results store keys them, and a
manifest of each file's identity (tests/test_shipped_references.py recomputes samples of each and
checks the keys a default run looks for are there).

    python -m l2c_bench.runs.ship_references      # writes l2c_bench/toy/assets/references/
    python -m l2c_bench.runs.ship_references results   # ... taking those a results folder already holds
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from ..metrics.converged import reference_kwargs
from .sample import (
    SHIPPED_REFERENCES,
    batch_kwargs,
    reference_identity,
    reference_key,
    stored_reference,
)

MODELS = ("dit", "uvit")


def default_point(model: str, results_dir: str | Path):
    """The prepared uncached point of `model` with the README command's settings, on the CPU."""
    from ..studies.router_tradeoff import compose
    from .prepare import prepare

    return prepare(compose([f"model={model}", "cache=none", "tracker=none", "device=cpu",
                            f"results_dir={results_dir}"]))


def converged_batches(point) -> list[dict]:
    """`generate` arguments of each batch's converged reference, as a run samples them."""
    run, out = point.run, []
    for start in range(0, run.metrics.num_samples, run.metrics.batch_size):
        idx = torch.arange(start, min(start + run.metrics.batch_size, run.metrics.num_samples))
        out.append(reference_kwargs(batch_kwargs(point, idx), point.model.family, run.metrics.converged_nfe))
    return out


def ship(target: Path = SHIPPED_REFERENCES, source: str | None = None) -> dict[str, dict]:
    """Write every default point's converged references to `target/converged/` (replacing what was
    there) and the manifest {key: identity}; returns the manifest. `source`: a results folder whose
    store already holds some (sampled by the same code), else all are sampled now."""
    manifest = {}
    shutil.rmtree(target / "converged", ignore_errors=True)  # never read back what is being remade
    (target / "converged").mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = source or scratch
        for model in MODELS:
            point = default_point(model, scratch)
            for kwargs in converged_batches(point):
                identity = reference_identity(point, kwargs)
                key = reference_key(identity)
                stored_reference(point, kwargs, "converged")  # sampled into the scratch store
                shutil.copyfile(Path(scratch) / "_reference" / "converged" / f"{key}.pt",
                                target / "converged" / f"{key}.pt")
                manifest[key] = identity
                print(f"{model}: {key} (seeds {identity['seeds'][0]}..{identity['seeds'][-1]})", flush=True)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    ship(source=sys.argv[1] if len(sys.argv) > 1 else None)
