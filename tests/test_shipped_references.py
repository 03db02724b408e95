"""The converged references shipped with the package (runs.sample.SHIPPED_REFERENCES) are what the
harness computes: their manifest names each file by its identity, a default run looks for exactly
these keys, and samples recomputed now match them."""

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
from l2c_bench.runs.ship_references import MODELS, converged_batches, default_point

MANIFEST = json.loads((SHIPPED_REFERENCES / "manifest.json").read_text())


def test_each_shipped_file_is_named_by_its_identity():
    assert len(MANIFEST) == 2 * len(MODELS)  # two batches of 50 per toy model
    for key, identity in MANIFEST.items():
        assert reference_key(identity) == key
        latents = torch.load(SHIPPED_REFERENCES / "converged" / f"{key}.pt", weights_only=True)
        assert latents.shape[0] == len(identity["seeds"]) == 50 and torch.isfinite(latents).all()


@pytest.fixture(scope="module", params=MODELS)
def point(request, tmp_path_factory):
    return default_point(request.param, tmp_path_factory.mktemp(request.param))


def test_a_default_run_finds_them_and_samples_none(point):
    """README command 1's points look up exactly the shipped keys, and read them without sampling."""
    batches = converged_batches(point)
    assert {reference_key(reference_identity(point, kwargs)) for kwargs in batches} <= set(MANIFEST)
    latents, images = stored_reference(point, batches[0], "converged")
    assert latents.shape[0] == 50 and images.shape[0] == 50
    assert not (Path(point.run.results_dir) / "_reference" / "converged").exists()  # read, not sampled


@pytest.mark.slow
def test_recomputed_samples_match_the_shipped_ones(point):
    """The first two samples of each batch, sampled now with the identity's settings: equal to the
    shipped latents up to the float32 differences of another batch size (1e-4)."""
    for kwargs in converged_batches(point):
        key = reference_key(reference_identity(point, kwargs))
        shipped = torch.load(SHIPPED_REFERENCES / "converged" / f"{key}.pt", weights_only=True)
        few = {**kwargs, "seeds": kwargs["seeds"][:2], "labels": kwargs["labels"][:2], "decode": False, "vae": None}
        now = generate(point.model, **few).latents.cpu()
        torch.testing.assert_close(now, shipped[:2], rtol=1e-4, atol=1e-4)
