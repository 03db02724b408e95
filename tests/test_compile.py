"""torch.compile of the branch functions: same samples as eager, one graph per branch kind."""

import pytest
import torch

from l2c_bench import generate
from l2c_bench.caching import make_cache
from l2c_bench.models import build_model
from l2c_bench.models.layers import compile_branches


@pytest.mark.slow
@pytest.mark.parametrize("name,sampler,scale", [("DiT-toy", "ddim", 1.5), ("U-ViT-toy", "dpm_solver2", 1.0)])
def test_compiled_branches_match_eager_without_recompiling_per_step(name, sampler, scale):
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = build_model(name).eval().requires_grad_(False)
    kwargs = dict(labels=[1, 2], seeds=[0, 1], steps=6, sampler=sampler, guidance_scale=scale)
    plans = [None, make_cache("fora", interval=2), make_cache("heuristic", strategy="random", ratio=0.5)]
    eager = [generate(model, cache=plan, **kwargs).latents for plan in plans]
    dynamo.reset()
    counters.clear()
    compile_branches(model)
    compiled = [generate(model, cache=plan, **kwargs).latents for plan in plans]
    for e, c in zip(eager, compiled, strict=True):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 2  # attention and MLP: every block, step and schedule


@pytest.mark.slow
def test_run_with_compile_records_it(tmp_path):
    """compile=true compiles the branches (dynamo builds their graphs during the run) and gives
    the eager run's numbers; the row says so."""
    import torch._dynamo as dynamo
    from conftest import compose_config
    from torch._dynamo.utils import counters

    from l2c_bench.run import run_point

    def point(results, *extra):
        return run_point(compose_config(tmp_path / results, "tracker=none", "cache=fora", "steps=4",
                                        "metrics.num_samples=2", "metrics.fid=false", "metrics.timing_batch=1",
                                        "metrics.timing_repeats=1", "metrics.converged_nfe=0", *extra))

    dynamo.reset()
    counters.clear()
    eager = point("eager")
    assert eager["status"] == "ok", eager.get("error")
    assert not counters["stats"]  # nothing compiled without compile=true
    compiled = point("compiled", "compile=true")
    assert compiled["status"] == "ok", compiled.get("error")
    assert compiled["metrics.compile"] is True and compiled["config.compile"] is True
    assert eager["metrics.compile"] is False and compiled["run_id"] != eager["run_id"]
    # attention and MLP graphs, once per batch shape (static shapes): the sampled batch of 2
    # and the timed batch of 1, each with its CFG copy
    assert counters["stats"]["unique_graphs"] == 2 * 2 and counters["frames"]["ok"] >= 4
    # the compiled branches compute what the eager ones do: FORA's error against the uncached
    # samples, the samples' class rate, the plan
    assert compiled["metrics.paired_latent_mse"] == pytest.approx(eager["metrics.paired_latent_mse"], rel=1e-4)
    assert compiled["metrics.paired_image_mse"] == pytest.approx(eager["metrics.paired_image_mse"], rel=1e-4)
    for key in ("on_class_rate", "cached_ratio", "macs_g"):
        assert compiled[f"metrics.{key}"] == eager[f"metrics.{key}"], key
