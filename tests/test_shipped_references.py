"""The references shipped with the package (runs.sample.SHIPPED_REFERENCES: the toy models'
converged references and uncached twins for README command 1's points) are what the harness
computes: their manifest names each file by its identity, a default run looks up exactly these
keys and samples none, and samples recomputed now match them."""

import json
from pathlib import Path

import pytest
import torch

from l2c_bench import generate
from l2c_bench.runs.sample import (
    SHIPPED_REFERENCES,
    reference_identity,
    reference_key,
    stored_reference,
)
from l2c_bench.runs.ship_references import MODELS, STEPS, shipped_batches

MANIFEST = json.loads((SHIPPED_REFERENCES / "manifest.json").read_text())


def test_each_shipped_file_is_named_by_its_identity():
    # per model: the converged reference's two batches of 50, and the twins' at each NFE
    assert {kind: len(keys) for kind, keys in MANIFEST.items()} == {"converged": 2 * len(MODELS),
                                                                   "uncached": 2 * len(MODELS) * len(STEPS)}
    for kind, keys in MANIFEST.items():
        for key, identity in keys.items():
            assert reference_key(identity) == key
            latents = torch.load(SHIPPED_REFERENCES / kind / f"{key}.pt", weights_only=True)
            assert latents.shape[0] == len(identity["seeds"]) == 50 and torch.isfinite(latents).all()


@pytest.fixture(scope="module", params=MODELS)
def shipped(request, tmp_path_factory):
    """(kind, point, kwargs) of every batch a default run of the model reads from the shipped store."""
    return list(shipped_batches(request.param, tmp_path_factory.mktemp(request.param)))


def test_a_default_run_finds_them_and_samples_none(shipped):
    """README command 1's points look up exactly the shipped keys, and read them without sampling."""
    for kind, point, kwargs in shipped:
        assert reference_key(reference_identity(point, kwargs)) in MANIFEST[kind]
    kind, point, kwargs = shipped[0]
    latents, images = stored_reference(point, kwargs, kind)
    assert latents.shape[0] == 50 and images.shape[0] == 50
    assert not (Path(point.run.results_dir) / "_reference").exists()  # read, not sampled


@pytest.mark.slow
def test_recomputed_samples_match_the_shipped_ones(shipped):
    """The first two samples of every shipped batch, sampled now with its identity's settings: equal
    to the shipped latents up to the float32 differences of another batch size (1e-4)."""
    for kind, point, kwargs in shipped:
        key = reference_key(reference_identity(point, kwargs))
        stored = torch.load(SHIPPED_REFERENCES / kind / f"{key}.pt", weights_only=True)
        few = {**kwargs, "seeds": kwargs["seeds"][:2], "labels": kwargs["labels"][:2], "decode": False, "vae": None}
        now = generate(point.model, **few).latents.cpu()
        torch.testing.assert_close(now, stored[:2], rtol=1e-4, atol=1e-4, msg=f"{kind} {key}")
