"""The local results store: one `result.json` row per run, the source of truth.

Layout: `<results_dir>/<run_id>/result.json` (+ `samples.png`). Rows are written atomically
(temp file in the same folder, fsync, rename), so a reader sees a whole row or none and a killed
run leaves no partial file. Row schema (flat keys; docs/results.md, "Row fields"):
  run_id, schema_version (SCHEMA_VERSION), status (ok | failed | unsupported), error,
  config.* (the resolved config, flattened; cache: the method's own keys),
  metrics.* (numbers; None where not applicable), provenance.* (git, versions, device, host,
  SLURM job id, start/end time).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..system.files import atomic_path

RESULT_FILE = "result.json"
# The row format. 3: runs at different `seed` draw disjoint noise (sampling.noise) and keep a
# per-sample record (records.samples); 2: rows that say which format they are in (this field), written since the
# per-method config schemas; 1: any row without the field (`config.cache.*` holds every method's
# keys in the oldest ones, the method's own since row_config). Rows of every version load together.
SCHEMA_VERSION = 3
# How a run's `seed` maps to its samples' noise (sampling.noise.sample_seed), in the identity of
# runs at seed != 0 only: their samples changed when seeds became disjoint blocks; seed 0's did not.
SEEDING = "disjoint-blocks-2^20"
# model=diffusers classes whose `checkpoint: toy` meant seeded random weights until trained toy
# weights shipped for them (models/zoo/toy_weights.py): their toy rows name the weights, so a
# store's older random-weight rows are not taken for the trained model's (other classes: unchanged)
TRAINED_TOYS = {"PixArtTransformer2DModel": "trained-1", "SD3Transformer2DModel": "trained-1",
                "FluxTransformer2DModel": "trained-1", "Flux2Transformer2DModel": "trained-1",
                "WanTransformer3DModel": "trained-1", "LTXVideoTransformer3DModel": "trained-1"}
# Config keys that do not change what a run computes: excluded from its identity.
NON_IDENTITY_KEYS = ("results_dir", "reference_dir", "force", "tracker", "device", "shard")
# keys added since rows were first written, left out of a run's identity at these values (what
# every earlier run computed with), so the run ids of rows written before they existed stay valid:
# per config group, {key: neutral value}
IDENTITY_NEUTRAL = {
    "model": {"diffusers_class": None, "pretrained": None, "config": {}, "zoo": {}, "prompt_set": None},
    # the timing's stop rule (added after rows existed): the defaults keep those rows' ids
    "metrics": {"clip_model": None, "lpips_backbone": None, "lpips_net": "alex", "timing_min_repeats": 8,
                "timing_halfwidth": 0.05},
}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def run_key(config: Mapping[str, Any]) -> str:
    """Stable identity of a run: a hash of its resolved config without paths/launcher/tracker."""
    identity = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    if identity.get("seed", 0) != 0:  # a nonzero seed draws sampling.noise's disjoint block: not the
        identity["seeding"] = SEEDING  # overlapping seed + i of rows written before it (seed 0: unchanged)
    model = identity.get("model") if isinstance(identity.get("model"), Mapping) else {}
    if model.get("checkpoint") == "toy" and model.get("diffusers_class") in TRAINED_TOYS:
        identity["toy_weights"] = TRAINED_TOYS[model["diffusers_class"]]
    for group, neutral in IDENTITY_NEUTRAL.items():
        if isinstance(identity.get(group), Mapping):
            identity[group] = {k: v for k, v in identity[group].items() if k not in neutral or neutral[k] != v}
    cache = dict(identity.get("cache") or {})
    method = _method(cache.get("name"))
    used = set(method.identity_groups(cache)) if method is not None else set()
    for group in _method_groups() - used:  # e.g. the router-learning recipe, where it picks no router
        identity.pop(group, None)
    if cache:
        relevant = _method_parameters(cache.get("name"), cache)
        neutral = method.identity_neutral if method is not None else {}  # at their neutral value: left out, so older ids stay valid
        identity["cache"] = {k: v for k, v in cache.items() if k in relevant and neutral.get(k, object()) != v}
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _method_groups() -> set[str]:
    """Run-config groups that only some methods read (each method's `config_groups`: L2C's
    router-learning recipe, TeaCache's calibration settings): a run whose method does not read
    one leaves it out of its identity."""
    from ..caching import CACHE_METHODS

    return {group for method in CACHE_METHODS.values() for group in method.config_groups}


def _method(name):
    """The method class registered as `name`, None for an unknown one (a failed row)."""
    from ..caching import CACHE_METHODS

    return CACHE_METHODS.get(name)


def _method_parameters(name, keys, identity: bool = True) -> set[str]:
    """The cache keys of method `name`: its own parameters; with `identity`, only those that change
    what it computes (not its `not_in_identity`). The other methods' keys are inert for it."""
    from dataclasses import fields

    method = _method(name)
    if method is None:
        return set(keys)  # an unknown method (a failed row): keep everything
    own = {"name"} | {f.name for f in fields(method)}
    return own - set(method.not_in_identity) if identity else own


def row_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as a row records it: `cache` holds only its method's own parameters. The
    per-method schemas compose nothing else; rows written under the older union schema carry every
    method's keys, and the run key reads none of the others, so their ids stay valid."""
    cache = config.get("cache")
    if not cache:
        return dict(config)
    own = _method_parameters(cache.get("name"), cache, identity=False)
    return {**config, "cache": {k: v for k, v in cache.items() if k in own}}


def run_id_for(config: Mapping[str, Any]) -> str:
    """Readable and unique: `<family>-<sampler>-<cache>-nfe<steps>-<key>`."""
    sampler = config["sampler"]["name"] or config["model"]["default_sampler"]
    return (f"{config['model']['family']}-{sampler}-{config['cache']['name']}-nfe{config['steps']}-"
            f"{run_key(config)}")


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as None ("not available")."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ResultsDirError(OSError):
    """`results_dir` cannot hold rows (not a folder, not writable, gone)."""


def check_writable(results_dir: str | os.PathLike) -> None:
    """Fail before any compute when no row could be written to `results_dir` (made if missing)."""
    import tempfile

    try:
        Path(results_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=results_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ResultsDirError(f"results_dir={str(results_dir)!r} cannot hold result rows ({type(exc).__name__}: "
                              f"{exc.strerror or exc}); point results_dir at a writable folder") from None


def write_row(results_dir: str | os.PathLike, run_id: str, row: Mapping[str, Any]) -> Path:
    """Atomically write `<results_dir>/<run_id>/result.json`; returns its path."""
    target = Path(results_dir) / run_id / RESULT_FILE
    payload = json.dumps({k: _clean(v) for k, v in row.items()}, indent=1, sort_keys=True, default=str)
    with atomic_path(target) as tmp:
        tmp.write_text(payload)
    return target


class CorruptRow(ValueError):
    """A `result.json` that is not a JSON object (truncated by a copy, edited by hand...)."""


def _parse_row(path: Path) -> dict[str, Any]:
    """One stored row; CorruptRow naming the file if it is not a JSON object."""
    try:
        row = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # only files not written by write_row
        raise CorruptRow(f"corrupt result row {path} ({exc}); relaunching its point replaces it") from None
    if not isinstance(row, dict):
        raise CorruptRow(f"corrupt result row {path} (a JSON {type(row).__name__}, not an object); "
                         "relaunching its point replaces it")
    row.setdefault("schema_version", 1)
    return row


def read_row(results_dir: str | os.PathLike, run_id: str) -> dict[str, Any] | None:
    """The stored row of `run_id`, None if there is none; CorruptRow if its file is unreadable."""
    path = Path(results_dir) / run_id / RESULT_FILE
    if not path.is_file():
        return None
    return _parse_row(path)


def load_results(path: str | os.PathLike, *, samples: bool = False, skip_corrupt: bool = False):
    """Every row under `path` (recursively) as a pandas DataFrame, one row per run.

    A corrupt row is an error naming its file (CorruptRow), never a silently missing point:
    relaunching that point (`python -m l2c_bench.run` with its config) replaces the file. With
    `skip_corrupt` (the analysis scripts) it is named in a warning and left out instead.
    `samples=True` adds a `samples` column: each run's per-sample record (records.samples
    SampleRecord), None where the run has none (rows written before them) or it is unreadable
    (with a warning naming the file). A `path` that is not a folder is an error naming it.
    """
    import pandas as pd

    from .samples import SAMPLES_FILE, CorruptSamples, read_samples

    if not Path(path).is_dir():
        raise FileNotFoundError(f"results folder {str(path)!r} does not exist (or is not a folder)")
    rows, records = [], []
    for file in sorted(Path(path).rglob(RESULT_FILE)):
        try:
            rows.append(_parse_row(file))
        except CorruptRow as exc:
            if not skip_corrupt:
                raise
            warnings.warn(f"skipped: {exc}", stacklevel=2)
            continue
        if samples:
            record = None
            if (file.parent / SAMPLES_FILE).is_file():
                try:
                    record = read_samples(file.parent)
                except CorruptSamples as exc:
                    warnings.warn(f"{exc}; its row is compared without per-sample values", stacklevel=2)
            records.append(record)
    frame = pd.DataFrame(rows)
    if samples:
        frame["samples"] = pd.Series(records, index=frame.index, dtype=object)
    return frame
