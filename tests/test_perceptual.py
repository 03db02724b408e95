"""Per-sample SSIM and LPIPS (metrics/perceptual.py): values checked against torchmetrics called
pair by pair, and LPIPS against the formula computed by hand from the same weights.

LPIPS runs on a random-weight AlexNet the test saves itself: nothing is downloaded (the guard
below makes any download attempt fail the test)."""

import copy
import hashlib
from pathlib import Path

import pytest
import torch
import torchvision
from torchmetrics.functional.image import lpips as tm_lpips
from torchmetrics.functional.image import structural_similarity_index_measure

from l2c_bench.metrics.perceptual import LPIPS_MIN_SIDE, Lpips, ssim_per_sample

ALEX_TAPS = (1, 4, 7, 9, 11)  # features indices of the ReLUs LPIPS reads (Zhang et al. 2018)
SHIFT = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)  # ScalingLayer
SCALE = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)


def _images(n: int, side: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=gen) * 2 - 1


def _noisy(x: torch.Tensor, amount: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (x + amount * torch.randn(x.shape, generator=gen)).clamp(-1, 1)


# --- SSIM ---------------------------------------------------------------------------------------


def test_ssim_of_identical_pairs_is_one():
    x = _images(4)
    assert torch.allclose(ssim_per_sample(x, x), torch.ones(4, dtype=torch.float64), atol=1e-6, rtol=0)


def test_ssim_per_sample_equals_torchmetrics_on_each_pair_alone():
    x = _images(5)
    y = _noisy(x, 0.3, seed=1)
    got = ssim_per_sample(x, y, batch_size=2)  # batches of 2, 2, 1: values must not depend on them
    assert got.shape == (5,) and got.dtype == torch.float64
    alone = [structural_similarity_index_measure(x[i:i + 1].float(), y[i:i + 1].float(), data_range=2.0)
             for i in range(5)]
    assert torch.allclose(got, torch.stack(alone).double(), atol=1e-6, rtol=0)  # float32, as computed
    double = structural_similarity_index_measure(x.double(), y.double(), data_range=2.0, reduction="none")
    assert torch.allclose(got, double, atol=1e-5, rtol=0)  # float32 loses nothing that matters here
    assert got.std() > 1e-4  # five different pairs, five different values: a real per-sample check


def test_ssim_scores_a_noisier_pair_lower():
    x = _images(1)
    less, more = ssim_per_sample(x, _noisy(x, 0.05, seed=2)), ssim_per_sample(x, _noisy(x, 0.4, seed=2))
    assert 0.0 < more.item() < less.item() < 1.0 - 1e-3


def test_ssim_shrinks_the_window_on_images_smaller_than_it():
    x = _images(2, side=5)
    y = _noisy(x, 0.2, seed=3)
    with pytest.raises(RuntimeError):  # the 11-wide window's reflection padding does not fit side 5
        structural_similarity_index_measure(x.double(), y.double(), data_range=2.0)
    expected = structural_similarity_index_measure(
        x.float(), y.float(), sigma=1.5 * 5 / 11, kernel_size=5, data_range=2.0, reduction="none")
    assert torch.allclose(ssim_per_sample(x, y), expected.double(), atol=1e-6, rtol=0)


def test_ssim_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        ssim_per_sample(_images(2), _images(3))


# --- LPIPS --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("LPIPS tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)


@pytest.fixture(scope="module")
def alex(tmp_path_factory):
    """A random-weight AlexNet's `features.*` state dict saved as the backbone file; the file's
    path, its state dict, and the network's `features` (to compute LPIPS by hand)."""
    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None)
    features = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
    path = tmp_path_factory.mktemp("lpips") / "alexnet-features.pth"
    torch.save(features, path)
    return path, features, net.features


@pytest.fixture(scope="module")
def lpips(alex):
    return Lpips.from_files(alex[0], net="alex", batch_size=3)


def _lpips_by_hand(backbone: Path, features: torch.nn.Module, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The LPIPS formula in float64: per tap, channel-unit-normalised features (eps 1e-10), squared
    difference weighted by the shipped linear head, spatial mean; summed over the five taps. The
    backbone's weights are read back from the file, into a float64 copy of AlexNet's `features`."""
    net = copy.deepcopy(features).double()
    state = torch.load(backbone, map_location="cpu", weights_only=True)
    net.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    heads_file = Path(tm_lpips.__file__).parent / "lpips_models" / "alex.pth"
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)

    def taps(x):
        h, out = (x.double() - SHIFT) / SCALE, []
        for i, layer in enumerate(net[:ALEX_TAPS[-1] + 1]):
            h = layer(h)
            if i in ALEX_TAPS:
                out.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
        return out

    total = torch.zeros(x0.shape[0], dtype=torch.float64)
    for k, (f0, f1) in enumerate(zip(taps(x0), taps(x1), strict=True)):
        weight = heads[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)
        total += ((f0 - f1) ** 2 * weight).sum(1).mean((1, 2))
    return total


def test_lpips_equals_the_formula_by_hand_from_the_same_weights(alex, lpips):
    x = _images(5, seed=4)
    y = _noisy(x, 0.3, seed=5)
    got = lpips.scores(x, y)  # batches of 3 and 2
    assert got.shape == (5,) and got.dtype == torch.float64
    expected = _lpips_by_hand(alex[0], alex[2], x, y)
    assert expected.min() > 1e-3  # a real distance, not a comparison of zeros
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)


def test_lpips_is_zero_on_identical_pairs_symmetric_and_nonnegative(lpips):
    x, y = _images(4, seed=6), _images(4, seed=7)
    assert torch.allclose(lpips.scores(x, x), torch.zeros(4, dtype=torch.float64), atol=1e-7, rtol=0)
    forward, backward = lpips.scores(x, y), lpips.scores(y, x)
    assert torch.allclose(forward, backward, atol=1e-7, rtol=0)
    assert (forward > 0).all()


def test_lpips_tag_names_net_and_backbone_hash(alex, lpips):
    assert lpips.tag == "lpips-alex-" + hashlib.sha256(alex[0].read_bytes()).hexdigest()[:12]


def test_lpips_upsamples_images_below_the_smallest_side(lpips):
    low = LPIPS_MIN_SIDE["alex"]
    x, y = _images(2, side=low - 1, seed=8), _images(2, side=low - 1, seed=9)
    with pytest.raises(RuntimeError):  # torchmetrics' own module fails one pixel below the minimum
        lpips.model(x, y)
    lpips.model(_images(1, side=low), _images(1, side=low))  # ... and runs at it
    small = _images(2, side=16, seed=10), _images(2, side=16, seed=11)
    up = [torch.nn.functional.interpolate(t, size=(low, low), mode="bilinear", align_corners=False) for t in small]
    assert torch.allclose(lpips.scores(*small), lpips.scores(*up), atol=1e-7, rtol=0)


def test_lpips_backbone_file_missing_a_key_is_refused(alex, tmp_path):
    features = dict(alex[1])
    del features["features.8.weight"]
    path = tmp_path / "partial.pth"
    torch.save(features, path)
    with pytest.raises(ValueError, match=r"features\.8\.weight"):
        Lpips.from_files(path)


def test_lpips_missing_file_names_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.lpips_backbone") as err:
        Lpips.from_files(tmp_path / "absent.pth")
    assert "never downloaded" in str(err.value)


def test_lpips_unknown_net_lists_the_valid_ones(alex):
    with pytest.raises(ValueError, match="alex, vgg, squeeze"):
        Lpips.from_files(alex[0], net="resnet")
