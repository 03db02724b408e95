"""Router-learning data at paper scale: ADM centre crop, image folders through the VAE, latent
files; every batch is a pure function of (seed, step), and data-parallel ranks split one global batch."""

import numpy as np
import pytest
import torch
from PIL import Image

from l2c_bench.caching.methods.l2c.learning.data import center_crop, make_data, step_generator
from l2c_bench.models import build_model


def test_center_crop_follows_adm():
    rng = np.random.default_rng(0)
    exact = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(center_crop(Image.fromarray(exact), 64)), exact)  # at the size: untouched
    # 600 x 400 with red | green | blue thirds: BOX-halved twice (150 x 100), bicubic to 96 x 64, and the
    # centre 64 columns kept (left = 16): the boundaries x = 200 and 400 land at columns 16 and 48
    stripes = np.zeros((400, 600, 3), np.uint8)
    stripes[:, :200, 0], stripes[:, 200:400, 1], stripes[:, 400:, 2] = 255, 255, 255
    out = np.asarray(center_crop(Image.fromarray(stripes), 64))
    assert out.shape == (64, 64, 3)
    assert [int(out[32, x].argmax()) for x in (0, 13, 19, 32, 45, 51, 63)] == [0, 0, 1, 1, 1, 2, 2]


def test_image_folder_batches_are_vae_samples_of_the_crops(tmp_path):
    """Each latent is the VAE posterior sample (x 0.18215) of an ADM-cropped, maybe flipped image;
    a run resumed at step s sees step s's batch; two ranks see one global batch's halves."""
    from l2c_bench.models.vae import LATENT_SCALE, build_vae, encode_images

    rng = np.random.default_rng(0)
    files = []
    for label, name in enumerate(("n01", "n02")):
        (tmp_path / name).mkdir()
        for i, (w, h) in enumerate(((80, 64), (64, 100), (130, 70))):
            path = tmp_path / name / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            files.append((path, label))
    model = build_model("DiT-S/2", depth=1, input_size=8)  # 64 px images, (4, 8, 8) latents
    torch.manual_seed(0)
    vae = build_vae()
    data = make_data(str(tmp_path), seed=3, model=model, vae=vae, num_workers=0)
    stream = data.batches(0, 2, 0, 1)
    (z0, y0), (z1, y1) = next(stream), next(stream)
    assert z0.shape == (2, 4, 8, 8) and set(y0.tolist()) <= {0, 1}
    resumed = next(data.batches(1, 2, 0, 1))
    assert torch.equal(resumed[0], z1) and torch.equal(resumed[1], y1)
    # step 0 by hand: the (index, flip) draw, the crop, [-1, 1], the VAE sample
    g = step_generator(3, 0)
    idx, flip = torch.randint(len(files), (2,), generator=g), torch.rand(2, generator=g) < 0.5
    images = []
    for i, f in zip(idx.tolist(), flip.tolist(), strict=True):
        arr = np.asarray(center_crop(Image.open(files[i][0]).convert("RGB"), 64))
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
        images.append(x.flip(-1) if f else x)
    assert y0.tolist() == [files[i][1] for i in idx.tolist()]
    expected = encode_images(vae, torch.stack(images), generator=step_generator(3, 0, 1))
    assert torch.equal(z0, expected)
    # encode_images is SD's posterior sample scaled by 0.18215 (SAMPLING.md)
    with torch.no_grad():
        sample = vae.encode(torch.stack(images)).latent_dist.sample(generator=step_generator(3, 0, 1))
    assert LATENT_SCALE == 0.18215 and torch.equal(expected, sample * 0.18215)
    # two ranks: the two halves of the same global draw (labels; each rank samples its own VAE noise)
    halves = [next(data.batches(0, 1, rank, 2))[1] for rank in (0, 1)]
    assert torch.cat(halves).tolist() == y0.tolist()


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_latent_file_batches_by_seed_and_step(tmp_path, suffix):
    latents, labels = torch.randn(10, 4, 8, 8), torch.arange(10)
    path = tmp_path / f"latents{suffix}"
    if suffix == ".pt":
        torch.save({"latents": latents, "labels": labels}, path)
    else:
        np.savez(path, latents=latents.numpy(), labels=labels.numpy())
    data = make_data(str(path), seed=5, model=build_model("DiT-S/2", depth=1, input_size=8))
    stream = data.batches(0, 4, 0, 1)
    (z0, y0), (z1, y1) = next(stream), next(stream)
    assert torch.equal(z0, latents[y0]) and torch.equal(z1, latents[y1])  # label i is row i: rows and labels agree
    assert torch.equal(y0, torch.randint(10, (4,), generator=step_generator(5, 0)))
    assert torch.equal(next(data.batches(1, 4, 0, 1))[1], y1)  # resumed at step 1
    ranks = [next(data.batches(0, 2, rank, 2)) for rank in (0, 1)]  # two ranks: one global batch
    assert torch.equal(torch.cat([r[0] for r in ranks]), z0) and torch.equal(torch.cat([r[1] for r in ranks]), y0)
