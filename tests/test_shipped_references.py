"""The references shipped with the package (records.references.SHIPPED: the toy models' converged
references and uncached twins for README command 1's points) are what the harness computes: their
manifest names each sample by its identity, a default run looks up exactly these keys and samples
none, and samples recomputed now match them."""

import json
from pathlib import Path

import pytest
import torch

from l2c_bench import generate
from l2c_bench.records.references import SHIPPED, shipped
from l2c_bench.runs.sample import reference_key, stored_reference
from l2c_bench.runs.ship_references import MODELS, STEPS, sample_keys, shipped_batches

MANIFEST = json.loads((SHIPPED / "manifest.json").read_text())
SAMPLES = 100  # README command 1's metrics.num_samples


def test_each_shipped_sample_is_named_by_its_identity():
    # per model: the converged reference's 100 samples, and the twins' at each NFE
    assert {kind: len(keys) for kind, keys in MANIFEST.items()} == {"converged": SAMPLES * len(MODELS),
                                                                   "uncached": SAMPLES * len(MODELS) * len(STEPS)}
    for kind, keys in MANIFEST.items():
        assert set(shipped(kind)) == set(keys)
        for key, identity in keys.items():
            assert reference_key(identity) == key
            latents = shipped(kind)[key]
            assert latents.dim() == 3 and torch.isfinite(latents).all()
    assert sum((SHIPPED / f"{kind}.pt").stat().st_size for kind in MANIFEST) <= 11 * 2**20  # 10.1 MB


@pytest.fixture(scope="module", params=MODELS)
def batches(request, tmp_path_factory):
    """(kind, point, kwargs) of every batch a default run of the model reads from the shipped store."""
    return list(shipped_batches(request.param, tmp_path_factory.mktemp(request.param)))


def test_a_default_run_finds_them_and_samples_none(batches):
    """README command 1's points look up exactly the shipped keys, and read them without sampling."""
    for kind, point, kwargs in batches:
        assert all(key in MANIFEST[kind] for key, _ in sample_keys(kind, point, kwargs))
    kind, point, kwargs = batches[0]
    latents, images = stored_reference(point, kwargs, kind)
    assert latents.shape[0] == 50 and images.shape[0] == 50
    assert not list(Path(point.run.reference_dir).rglob("*.pt"))  # read, not sampled into the store


@pytest.mark.slow
def test_recomputed_samples_match_the_shipped_ones(batches):
    """The first sample of every shipped batch (each batch starts at its own seed), sampled now with
    its identity's settings: equal to the shipped latents up to float32 differences (1e-4). One
    sample, not more: a batch's samples are independent (each its own seed and noise), and this
    test's cost is the 250-NFE converged batches'."""
    for kind, point, kwargs in batches:
        keys = [key for key, _ in sample_keys(kind, point, kwargs)[:1]]
        stored = torch.stack([shipped(kind)[key] for key in keys])
        few = {**kwargs, "seeds": kwargs["seeds"][:1], "labels": kwargs["labels"][:1], "decode": False, "vae": None}
        now = generate(point.model, **few).latents.cpu()
        torch.testing.assert_close(now, stored, rtol=1e-4, atol=1e-4, msg=f"{kind} {keys}")
