"""Trained toy weights of the text-to-image diffusers classes (models/zoo/toy_weights.py,
toy/train_zoo.py): the default toy point loads them in their pixel-space configuration, they
learned the family objective, training lowers it, and model.checkpoint=random keeps the seeded
random weights. Each test runs for every shipped class (PixArt, SD3, Flux, FLUX.2; Wan, LTX-Video: clips)."""

import pytest
import torch
from conftest import compose_config

from l2c_bench.models.checkpoint import read_state_dict
from l2c_bench.models.loading import checkpoint_path, file_sha256, load_model, model_fingerprint
from l2c_bench.models.zoo import TOY_CONFIGS, build_zoo
from l2c_bench.models.zoo.toy_weights import SHIPPED, TRAINED_CONFIGS, asset_path, trained_args
from l2c_bench.runs.prepare import describe
from l2c_bench.toy.train_zoo import CLASSES, batches, build_trainable, zoo_loss

CPU = torch.device("cpu")
KIND = {cls: kind for kind, cls in CLASSES.items()}


def spec(tmp_path, cls, *overrides):
    return describe(compose_config(tmp_path, "model=diffusers", f"model.diffusers_class={cls}", *overrides)).model


def fixed_loss(model, batch: int = 32, seed: int = 1) -> float:
    """The family objective on one fixed batch with fixed noise and times (no gradient)."""
    x0, labels = batches(model)(seed, 0, batch)  # images, or clips for Wan
    with torch.no_grad():
        return zoo_loss(model, x0, labels, torch.Generator().manual_seed(seed)).item()


def test_each_shipped_class_has_its_file_its_configuration_and_its_trainer():
    """The parametrisations below cover every shipped class, and train_zoo trains each of them."""
    assert {"PixArtTransformer2DModel", "SD3Transformer2DModel", "FluxTransformer2DModel",
            "Flux2Transformer2DModel", "WanTransformer3DModel", "LTXVideoTransformer3DModel"} <= set(SHIPPED)
    for cls in SHIPPED:
        assert asset_path(cls).is_file() and cls in TRAINED_CONFIGS and cls in KIND


@pytest.mark.parametrize("cls", sorted(SHIPPED))
def test_default_toy_point_loads_the_shipped_weights(tmp_path, cls):
    s = spec(tmp_path, cls)
    assert s.checkpoint == "toy" and checkpoint_path(s) == asset_path(cls)
    model, vae = load_model(s, CPU)
    # pixel space, the trained configuration: images without a VAE, label i = class i of the toy set
    assert vae is None and model.in_channels == 3 and model.num_classes == 10
    assert model.input_size == trained_args(cls)["sample_size"]  # 32; LTX-Video 8 (a token per pixel)
    assert {k: v for k, v in model.transformer.config.items() if k in TRAINED_CONFIGS[cls]} == {
        k: list(v) if isinstance(v, list) else v for k, v in TRAINED_CONFIGS[cls].items()}
    state = read_state_dict(asset_path(cls))
    assert all(v.dtype == torch.float16 for v in state.values())  # shipped as fp16
    loaded = model.state_dict()
    assert state.keys() == loaded.keys()
    assert all(torch.equal(loaded[k], v.float()) for k, v in state.items())
    # keyed by the file: shared references and quality metrics are on (random weights give None)
    fingerprint = model_fingerprint(s)
    assert fingerprint is not None and fingerprint == model_fingerprint(spec(tmp_path / "other", cls))


@pytest.mark.parametrize("cls", sorted(SHIPPED))
def test_fingerprint_follows_the_file(tmp_path, monkeypatch, cls):
    """Other bytes in the shipped file, another fingerprint: references are keyed by the weights."""
    import l2c_bench.models.loading as loading

    s = spec(tmp_path, cls)
    before = model_fingerprint(s)
    real = file_sha256(asset_path(cls))
    monkeypatch.setattr(loading, "file_sha256", lambda path: "0" * 64 if path == asset_path(cls) else real)
    assert model_fingerprint(s) != before


@pytest.mark.parametrize("cls", sorted(SHIPPED))
def test_shipped_weights_learned_the_family_objective(tmp_path, cls):
    """On a fixed batch the shipped EMA's loss is well under a fresh initialisation's (both near 1
    or above for an untrained net: the eps / velocity targets have unit-ish variance)."""
    trained, _ = load_model(spec(tmp_path, cls), CPU)
    fresh = build_trainable(cls, seed=0).eval()
    before, after = fixed_loss(fresh), fixed_loss(trained)
    assert after < 0.6 * before, (before, after)


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_training_reduces_the_loss_on_fixed_batches(kind):
    """12 Adam steps on one fixed batch (fixed noise, times and dropped labels) from a fresh
    initialisation lower the family objective on it by a fifth or more (a step that did not follow
    the gradient of zoo_loss would not)."""
    torch.manual_seed(0)
    model = build_trainable(CLASSES[kind], seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = batches(model)(3, 0, 4)

    def loss(grad: bool = False):
        with torch.set_grad_enabled(grad):
            return zoo_loss(model, x, y, torch.Generator().manual_seed(0))

    before = loss().item()
    for _ in range(12):
        opt.zero_grad()
        loss(grad=True).backward()
        opt.step()
    after = loss().item()
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("cls", sorted(SHIPPED))
def test_random_checkpoint_keeps_the_seeded_random_weights(tmp_path, cls):
    s = spec(tmp_path, cls, "model.checkpoint=random")
    assert model_fingerprint(s) is None  # no shared references, no quality metrics
    model, _ = load_model(s, CPU)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        seeded = build_zoo(cls)
    assert model.transformer.config.in_channels == TOY_CONFIGS[cls]["in_channels"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), seeded.state_dict().values(), strict=True))
    trained = read_state_dict(asset_path(cls))
    assert trained.keys() != model.state_dict().keys() or any(
        trained[k].shape != v.shape or not torch.equal(trained[k].float(), v) for k, v in model.state_dict().items())


def test_trained_toy_rejects_settings_that_change_its_configuration(tmp_path):
    from l2c_bench.models.loading import RunConfigError, build_configured

    for cls in SHIPPED:
        with pytest.raises(RunConfigError, match="model.checkpoint=random"):
            build_configured(spec(tmp_path, cls, "+model.config.num_layers=2"), "meta")
