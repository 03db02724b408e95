"""Make the references shipped with the package (`runs.sample.SHIPPED_REFERENCES`) for the toy
models' default points as README command 1 runs them on a CPU (100 samples in batches of 50): the
converged reference (250 NFE) and the uncached twins at NFE 10, 20 and 50, one file per batch as
the results store keys them, and a manifest of each file's identity by kind
(tests/test_shipped_references.py recomputes samples of each and checks that the keys a default
run looks for are there).

    python -m l2c_bench.runs.ship_references           # writes l2c_bench/toy/assets/references/
    python -m l2c_bench.runs.ship_references results   # ... taking those a results folder already holds
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from ..metrics.converged import reference_kwargs
from .sample import (
    SHIPPED_REFERENCES,
    batch_indices,
    batch_kwargs,
    reference_identity,
    reference_key,
    stored_reference,
)

MODELS = ("dit", "uvit")


STEPS = (10, 20, 50)  # README command 1's NFE: the twins shipped


def default_point(model: str, results_dir: str | Path, steps: int = 20):
    """The prepared uncached point of `model` at `steps` with the README command's settings, on the CPU."""
    from ..config import compose
    from .prepare import prepare

    cfg = compose([f"model={model}", f"steps={steps}", "cache=none", "tracker=none", "device=cpu",
                   f"results_dir={results_dir}"])
    return prepare(cfg)


def batches(point) -> list[dict]:
    """`generate` arguments of each batch of the point's samples, as a run samples them (its
    cached run's uncached twin on the same seeds)."""
    run = point.run
    return [batch_kwargs(point, idx) for idx in batch_indices(range(run.metrics.num_samples), run.metrics.batch_size)]


def converged_batches(point) -> list[dict]:
    """`generate` arguments of each batch's converged reference, as a run samples them."""
    return [reference_kwargs(kwargs, point.model.family, point.run.metrics.converged_nfe) for kwargs in batches(point)]


def shipped_batches(model: str, results_dir: str | Path):
    """(kind, point, kwargs) of every batch shipped for `model`: its converged reference, then its twins."""
    point = default_point(model, results_dir)
    yield from (("converged", point, kwargs) for kwargs in converged_batches(point))
    for steps in STEPS:
        point = default_point(model, results_dir, steps)
        yield from (("uncached", point, kwargs) for kwargs in batches(point))


def ship(target: Path = SHIPPED_REFERENCES, source: str | None = None) -> dict[str, dict]:
    """Write every default point's references to `target/<kind>/` (replacing what was there) and
    the manifest {kind: {key: identity}}; returns the manifest. `source`: a results folder whose
    store already holds some (sampled by the same code), else all are sampled now."""
    manifest: dict[str, dict] = {"converged": {}, "uncached": {}}
    for kind in manifest:
        shutil.rmtree(target / kind, ignore_errors=True)  # never read back what is being remade
        (target / kind).mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = source or scratch
        for model in MODELS:
            for kind, point, kwargs in shipped_batches(model, scratch):
                identity = reference_identity(point, kwargs)
                key = reference_key(identity)
                stored_reference(point, kwargs, kind)  # sampled into the scratch store, or there already
                shutil.copyfile(Path(scratch) / "_reference" / kind / f"{key}.pt", target / kind / f"{key}.pt")
                manifest[kind][key] = identity
                print(f"{model} {kind} NFE {identity['nfe']}: {key} (seeds {identity['seeds'][0]}.."
                      f"{identity['seeds'][-1]})", flush=True)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    ship(source=sys.argv[1] if len(sys.argv) > 1 else None)
