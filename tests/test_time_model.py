"""The time model recovers known per-evaluation costs and predicts any plan's time from its mask."""

import pytest
import torch

from l2c_bench.metrics.time_model import fit_time_model, reuse_mask

NFE, BLOCKS = 10, 4
F, A, M = 0.003, 0.011, 0.017  # seconds per evaluation: always-run, all attention, all MLP


def timed(mask: torch.Tensor) -> float:
    """What a run with this mask costs when every branch costs its kind's share, block by block."""
    total = 0.0
    for evaluation in mask:
        total += F
        for attention, mlp in evaluation.tolist():
            total += attention * A / BLOCKS + mlp * M / BLOCKS
    return total


def four_timings():
    return [timed(reuse_mask(NFE, BLOCKS, attention=a, mlp=m)) for a, m in
            ((False, False), (True, False), (False, True), (True, True))]


def test_reuse_masks_compute_everything_first_then_reuse_the_chosen_kind():
    mask = reuse_mask(NFE, BLOCKS, attention=True, mlp=False)
    assert mask.shape == (NFE, BLOCKS, 2) and mask[0].all()
    assert not mask[1:, :, 0].any() and mask[1:, :, 1].all()
    assert reuse_mask(NFE, BLOCKS, attention=False, mlp=False).all()


def test_fit_recovers_the_costs_and_predicts_any_mask():
    model = fit_time_model(*four_timings(), nfe=NFE, blocks=BLOCKS)
    assert model.fixed_s == pytest.approx(F) and model.attention_s == pytest.approx(A)
    assert model.mlp_s == pytest.approx(M) and model.additivity == pytest.approx(0, abs=1e-12)
    mask = torch.rand(NFE, BLOCKS, 2, generator=torch.Generator().manual_seed(0)) > 0.4
    mask[0] = True
    assert model.predict(mask) == pytest.approx(timed(mask))
    share = mask.double() * 0.5  # a float schedule: the share of samples/tokens computed
    assert model.predict(share) == pytest.approx(timed(share))
    with pytest.raises(ValueError, match="schedule shape"):
        model.predict(mask[:, :2])


def test_a_timing_that_does_not_add_up_shows_in_additivity():
    full, attention, mlp, both = four_timings()
    model = fit_time_model(full, attention, mlp, both + 0.01, nfe=NFE, blocks=BLOCKS)
    assert model.additivity == pytest.approx(-0.01 / full)
    with pytest.raises(ValueError, match="nfe >= 2"):
        fit_time_model(1.0, 1.0, 1.0, 1.0, nfe=1, blocks=BLOCKS)


def test_time_per_mac_is_one_where_time_follows_macs():
    model = fit_time_model(*four_timings(), nfe=NFE, blocks=BLOCKS)
    # MACs proportional to the costs: every kind costs exactly its MACs' worth
    assert model.time_per_mac(F * 7, A * 7, M * 7) == pytest.approx({"fixed": 1.0, "attention": 1.0, "mlp": 1.0})
    # always-run work with a tenth of its time's share in MACs costs 10x per MAC
    ratios = model.time_per_mac(F / 10, A, M)
    total = F / 10 + A + M
    assert ratios["fixed"] == pytest.approx((F / (F + A + M)) / (F / 10 / total))
    assert ratios["attention"] == pytest.approx((A / (F + A + M)) / (A / total))
