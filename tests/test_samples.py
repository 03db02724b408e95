"""Per-sample records (records/samples.py, runs/per_sample.py) and disjoint seeds
(sampling/noise.py): a toy run's record holds the values its row's numbers come from, it loads
with load_results, it is mirrored to W&B, and runs at different seeds share no sample noise."""

import math
import os

import numpy as np
import pytest
import torch
from conftest import compose_config

from l2c_bench.records import load_results, read_samples, write_samples
from l2c_bench.records.samples import SAMPLES_FILE, CorruptSamples
from l2c_bench.run import run_point
from l2c_bench.sampling import initial_noise, sample_generators
from l2c_bench.sampling.noise import SEED_STRIDE, sample_seed

FAST = ["cache=fora", "steps=4", "metrics.converged_nfe=8", "metrics.num_samples=6", "metrics.batch_size=3",
        "metrics.timing_batch=2", "metrics.timing_repeats=6", "metrics.reference_samples=40",
        "metrics.grid_samples=4", "metrics.interval_groups=3"]


def test_seeds_draw_disjoint_noise_and_seed_zero_keeps_its_samples():
    assert [sample_seed(0, i) for i in range(3)] == [0, 1, 2]  # seed 0: sample i keeps seed i
    first = {sample_seed(0, i) for i in range(100)}
    second = {sample_seed(1, i) for i in range(100)}
    assert not first & second and min(second) == SEED_STRIDE  # seed + i would share 99 of 100
    noise = [initial_noise(sample_generators([sample_seed(s, i) for i in range(100)]), (4, 8, 8)) for s in (0, 1)]
    distances = torch.cdist(noise[0].flatten(1), noise[1].flatten(1))  # (100, 100): every pair of samples
    assert distances.min() > 1.0  # no sample of one run starts from any sample's noise of the other
    with pytest.raises(ValueError, match="seed must be in"):
        sample_seed(-1, 0)


def test_a_seed_out_of_range_fails_before_compute(tmp_path):
    from l2c_bench.models.loading import RunConfigError
    from l2c_bench.runs.prepare import validate

    with pytest.raises(RunConfigError, match=r"seed must be in \[0, 4095\] \(each seed owns 1048576 sample seeds\), got -3"):
        validate(compose_config(tmp_path, *FAST, "seed=-3"))


def test_a_run_keeps_its_per_sample_values_and_they_give_its_row(tmp_path):
    """The record's columns reproduce the row's aggregates: PSNR of the mean MSE, mean SSIM; its
    seeds are the run seed's block; it is mirrored into the W&B run's files."""
    row = run_point(compose_config(tmp_path, *FAST, "seed=1", "tracker=wandb", "tracker.group=g"))
    assert row["status"] == "ok", row.get("error")
    record = read_samples(tmp_path / row["run_id"])
    c = record.columns
    assert list(c["seed"]) == [SEED_STRIDE + i for i in range(6)] and list(c["index"]) == list(range(6))
    assert set(c) >= {"label", "converged_latent_mse", "converged_image_mse", "paired_latent_mse", "paired_image_mse",
                      "converged_image_ssim", "paired_image_ssim", "on_class", "class_flip"}
    m = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")}
    assert m["converged_image_psnr_db"] == pytest.approx(10 * math.log10(4 / c["converged_image_mse"].mean()), abs=1e-9)
    assert m["paired_image_mse"] == pytest.approx(c["paired_image_mse"].mean(), rel=1e-12)
    peak = record.meta["peak_to_peak"]["converged"]
    assert m["converged_latent_psnr_db"] == pytest.approx(10 * math.log10(peak**2 / c["converged_latent_mse"].mean()))
    assert m["converged_image_ssim"] == pytest.approx(c["converged_image_ssim"].mean())
    assert m["on_class_rate"] == pytest.approx(c["on_class"].mean())
    assert m["converged_image_ssim_ci_low"] < m["converged_image_ssim"] < m["converged_image_ssim_ci_high"]
    assert "LPIPS skipped" in m["lpips_note"] and m["samples_file"] == SAMPLES_FILE
    # the set metrics' jackknife replicates, one per group, for paired FID/KID differences
    assert len(record.replicates("fid")) == 3 and record.meta["jackknife"]["groups"] == 3
    loaded = load_results(tmp_path, samples=True)
    assert np.array_equal(loaded.iloc[0]["samples"].columns["seed"], c["seed"])
    assert "samples" not in load_results(tmp_path)  # opt-in
    mirrored = os.path.join(row["provenance.wandb_dir"], "files", SAMPLES_FILE)
    assert np.array_equal(read_samples(mirrored).columns["paired_image_ssim"], c["paired_image_ssim"])


def test_records_are_versioned_and_a_bad_one_is_named(tmp_path):
    path = write_samples(tmp_path / "run", {"seed": np.arange(3), "converged_image_mse": np.ones(3)}, {"run_id": "r"})
    assert read_samples(path).meta["format"] == 1
    with pytest.raises(ValueError, match="must all be"):
        write_samples(tmp_path / "other", {"seed": np.arange(3), "x": np.ones(4)}, {})
    path.write_bytes(path.read_bytes()[:40])  # truncated by a copy
    with pytest.raises(CorruptSamples, match=str(path)):
        read_samples(path)
    (tmp_path / "run" / "result.json").write_text('{"run_id": "r", "status": "ok"}')
    with pytest.warns(UserWarning, match="corrupt per-sample record"):
        rows = load_results(tmp_path, samples=True)
    assert rows.iloc[0]["samples"] is None  # the row still loads, compared marginally
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "nonexistent")


def test_lpips_without_a_local_file_fails_before_compute_naming_the_key(tmp_path):
    from l2c_bench.models.loading import RunConfigError
    from l2c_bench.runs.prepare import validate

    with pytest.raises(RunConfigError, match=r"metrics.lpips_backbone='/nope/alexnet.pth' is not a file.*never "
                                             r"downloaded"):
        validate(compose_config(tmp_path, *FAST, "metrics.lpips_backbone=/nope/alexnet.pth"))
    with pytest.raises(RunConfigError, match="metrics.lpips_net='resnet' is unknown; valid: alex, vgg, squeeze"):
        validate(compose_config(tmp_path, *FAST, "metrics.lpips_backbone=/nope", "metrics.lpips_net=resnet"))


@pytest.mark.slow
def test_lpips_from_a_local_backbone_file_is_recorded_per_sample(tmp_path):
    """A random-weight AlexNet's feature layers saved as the backbone file (no download): the run
    records per-sample LPIPS against the uncached twin and the converged sampler, and the row's
    mean is the record's."""
    import torchvision

    backbone = tmp_path / "alexnet.pth"
    features = {k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items()
                if k.startswith("features.")}
    torch.save(features, backbone)
    row = run_point(compose_config(tmp_path, *FAST, "tracker=none", f"metrics.lpips_backbone={backbone}"))
    assert row["status"] == "ok", row.get("error")
    c = read_samples(tmp_path / row["run_id"]).columns
    assert (c["paired_image_lpips"] >= 0).all() and (c["converged_image_lpips"] > 0).all()
    assert row["metrics.paired_image_lpips"] == pytest.approx(c["paired_image_lpips"].mean())
    assert row["metrics.lpips_model"].startswith("lpips-alex-") and "metrics.lpips_note" not in row
