"""The `generate` API: per-seed determinism, guidance conventions, decoding."""

import pytest
import torch

from l2c_bench import generate
from l2c_bench.models import build_model

CASES = [("DiT-toy", "ddim", 1.5), ("DiT-toy", "ddpm", 4.0), ("U-ViT-toy", "dpm_solver2", 0.4),
         ("U-ViT-toy", "dpm_solver_fast", 0.4)]


def perturbed(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    for p in model.parameters():  # leave adaLN-Zero's zeros: every branch must matter
        p.data.add_(0.02 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name,sampler,scale", CASES)
def test_batch_size_does_not_change_samples(name, sampler, scale):
    model = perturbed(name)
    kwargs = dict(labels=[1, 2, 3, 4], seeds=[10, 11, 12, 13], steps=6, sampler=sampler, guidance_scale=scale)
    together = generate(model, batch_size=4, **kwargs).latents
    alone = generate(model, batch_size=1, **kwargs).latents
    assert together.shape == (4, 3, 32, 32)
    assert torch.equal(together, alone)
    # Reordering samples reorders results: sample i depends on (seed_i, label_i) only.
    swapped = generate(model, batch_size=2, **{**kwargs, "labels": [4, 3, 2, 1], "seeds": [13, 12, 11, 10]})
    assert torch.equal(swapped.latents.flip(0), together)


def test_initial_noise_is_the_documented_per_seed_draw():
    model = perturbed("DiT-toy")
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    generate(model, labels=[0, 5], seeds=[7, 8], steps=1, sampler="ddim", guidance_scale=1.0)
    expected = torch.stack([torch.randn((3, 32, 32), generator=torch.Generator().manual_seed(s)) for s in (7, 8)])
    assert torch.equal(seen[0], expected)


def test_dit_guidance_formula_on_the_first_three_eps_channels():
    """DiT (SAMPLING.md): one batch of cond and null halves; uncond + w * (cond - uncond) on eps
    channels 0-2, channel 3 and the learned variance from the conditional half."""
    from l2c_bench.sampling.guidance import GuidedDenoiser

    torch.manual_seed(0)
    model = build_model("DiT-S/2", depth=1, input_size=4, num_classes=10).eval()  # 4 latent channels, 8 out
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append((args[2].clone(), out.clone())))
    x, t = torch.randn(2, 4, 4, 4), torch.tensor([500, 500])
    guided = GuidedDenoiser(model, torch.tensor([3, 7]), 4.0)(x, t)
    (labels, out), = calls  # one forward of 2N rows
    assert labels.tolist() == [3, 7, 10, 10]  # null class = num_classes
    cond, uncond = out.chunk(2)
    assert guided.shape == (2, 8, 4, 4)
    assert torch.equal(guided[:, :3], uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]))
    assert torch.equal(guided[:, 3:], cond[:, 3:])
    assert not torch.allclose(guided[:, :3], cond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]))  # not U-ViT's
    # generate(guidance_channels=...) reaches it: with 2, a one-step sample moves in channels 0-1 only
    toy, base = perturbed("DiT-toy"), dict(labels=[1], seeds=[3], steps=1, sampler="ddim")
    x_none = generate(toy, guidance_scale=1.0, **base).latents
    x_cfg = generate(toy, guidance_scale=4.0, guidance_channels=2, **base).latents
    assert not torch.allclose(x_none[:, :2], x_cfg[:, :2]) and torch.equal(x_none[:, 2:], x_cfg[:, 2:])


def test_uvit_guidance_formula_with_two_passes():
    """U-ViT: two passes (labels, then the null class); cond + s * (cond - uncond) on all channels."""
    from l2c_bench.sampling.guidance import GuidedDenoiser

    model = perturbed("U-ViT-toy")
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append((args[2].clone(), out.clone())))
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([400.0])
    guided = GuidedDenoiser(model, torch.tensor([2]), 0.4)(x, t)
    (y_c, cond), (y_u, uncond) = calls
    assert y_c.tolist() == [2] and y_u.tolist() == [10]  # null class = num_classes
    assert torch.equal(guided, cond + 0.4 * (cond - uncond))
    calls.clear()
    assert torch.equal(GuidedDenoiser(model, torch.tensor([2]), 0.0)(x, t), cond) and len(calls) == 1  # s = 0: one pass
    result = generate(model, labels=[2], seeds=[1], steps=1, sampler="dpm_solver_fast", guidance_scale=0.4)
    assert result.guidance_convention.startswith("cond + s*(cond - uncond)")


def test_pixel_model_images_and_bad_inputs():
    model = perturbed("U-ViT-toy")
    result = generate(model, labels=[0, 1], seeds=[0, 1], steps=2, sampler="dpm_solver2",
                      guidance_scale=0.0, decode=True)
    assert result.images.shape == (2, 3, 32, 32) and result.images.abs().max() <= 1
    with pytest.raises(ValueError, match="one label per seed"):
        generate(model, labels=[0], seeds=[0, 1], steps=2, sampler="dpm_solver2", guidance_scale=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\]"):
        generate(model, labels=[11], seeds=[0], steps=2, sampler="dpm_solver2", guidance_scale=0)
    with pytest.raises(ValueError, match="odd"):
        generate(model, labels=[0], seeds=[0], steps=3, sampler="dpm_solver2", guidance_scale=0)


def test_latent_model_decodes_through_the_vae():
    from l2c_bench.models.vae import build_vae

    torch.manual_seed(0)
    model = build_model("DiT-S/2", depth=1, input_size=4, num_classes=10).eval()
    vae = build_vae()
    result = generate(model, labels=[1], seeds=[0], steps=2, sampler="ddim", guidance_scale=1.5,
                      decode=True, vae=vae)
    assert result.latents.shape == (1, 4, 4, 4) and result.images.shape == (1, 3, 32, 32)
    # the images are the VAE's decoding of latents / 0.18215 (SAMPLING.md), clamped to [-1, 1]
    with torch.no_grad():
        expected = vae.decode(result.latents / 0.18215).sample.clamp(-1, 1)
        unscaled = vae.decode(result.latents).sample.clamp(-1, 1)
    assert torch.equal(result.images, expected) and not torch.allclose(result.images, unscaled)
