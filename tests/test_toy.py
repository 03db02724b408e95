"""The toy set is deterministic and the shipped toy models really learned it."""

import pytest
import torch

from l2c_bench import generate
from l2c_bench.metrics import on_class_rate, per_class_rate
from l2c_bench.metrics.toy_features import toy_features
from l2c_bench.models import build_model, load_checkpoint
from l2c_bench.models.loading import TOY_ASSETS
from l2c_bench.toy.data import NUM_CLASSES, make_batch, make_dataset, make_images


def test_toy_set_is_deterministic_and_unlimited():
    a, la = make_batch(seed=3, index=7, batch_size=16)
    b, lb = make_batch(seed=3, index=7, batch_size=16)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, make_batch(seed=3, index=8, batch_size=16)[0])
    assert a.shape == (16, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    images, labels = make_dataset(30, seed=0)
    assert labels.tolist() == [i % 10 for i in range(30)]
    assert torch.equal(images, make_images(labels, seed=0))


def test_assets_are_small():
    # nine toy models in fp16 (DiT 4.9 MB, U-ViT 3.8, the classifier, PixArt/SD3/Flux/FLUX.2/Wan/LTX-Video
    # 0.7-1.2 each): 14.1 MB (13.5 MiB); the shipped references (references/, 10 MB) are counted by their own test
    total = sum(p.stat().st_size for p in TOY_ASSETS.glob("*.pt"))
    assert 0 < total <= 14 * 2**20


def test_toy_classifier_recognises_the_procedural_set():
    images, labels = make_dataset(500, seed=4242)
    _, logits = toy_features(images)
    assert on_class_rate(logits, labels.numpy()) >= 0.98


@pytest.mark.slow
@pytest.mark.parametrize("family,name,sampler,scale", [("dit", "DiT-toy", "ddim", 1.5),
                                                       ("uvit", "U-ViT-toy", "dpm_solver2", 3.0)])
def test_toy_models_generate_on_class_samples(family, name, sampler, scale):
    model = load_checkpoint(build_model(name), TOY_ASSETS / f"{family}_toy.pt").eval()
    labels = torch.arange(50) % NUM_CLASSES  # 5 per class; on these seeds DiT-toy 1.0, U-ViT-toy 0.86 (100: 0.95, 0.85)
    result = generate(model, labels=labels, seeds=range(50), steps=20, sampler=sampler,
                      guidance_scale=scale, decode=True, batch_size=50)
    _, logits = toy_features(result.images)
    rate = on_class_rate(logits, labels.numpy())
    print(family, "on-class", rate, [round(r, 2) for r in per_class_rate(logits, labels.numpy(), 10)])
    assert rate >= 0.8
