"""Whole sampling loops as CUDA graphs: refused clearly where they cannot work; on a GPU, a
replay gives exactly what the eager loop gives and one capture serves every later batch."""

import pytest
import torch
from conftest import compose_config

from l2c_bench import generate
from l2c_bench.caching import FixedPlan, make_cache
from l2c_bench.models import build_model
from l2c_bench.sampling.graphs import SamplingGraphs, check_graphable

CUDA = torch.device("cuda")  # check_graphable only reads the device type: no GPU needed


def toy_dit(device="cpu"):
    torch.manual_seed(0)
    return build_model("DiT-toy").to(device).eval()


def test_refused_off_cuda_before_any_compute():
    with pytest.raises(ValueError, match="needs a CUDA device, the model is on cpu"):
        generate(toy_dit(), labels=[1], seeds=[0], steps=4, sampler="ddim", guidance_scale=1.5,
                 graphs=SamplingGraphs())


@pytest.mark.parametrize("sampler, eta, match", [
    ("ddpm", 0.0, "not 'ddpm'"), ("dpm_solver_fast", 0.0, "not 'dpm_solver_fast'"), ("ddim", 0.5, "eta=0.5"),
])
def test_loops_with_host_work_are_refused(sampler, eta, match):
    with pytest.raises(ValueError, match=match):
        check_graphable(sampler, eta, None, CUDA)
    check_graphable("ddim", 0.0, None, CUDA)  # the L2C settings pass
    check_graphable("dpm_solver2", 0.0, None, CUDA)


def test_run_time_decisions_are_refused_static_plans_pass():
    model = toy_dit()
    dynamic = make_cache("fbcache").checked_plan(model=model, sampler="ddim", nfe=6)
    with pytest.raises(ValueError, match="decides at run time"):
        check_graphable("ddim", 0.0, dynamic, CUDA)
    check_graphable("ddim", 0.0, make_cache("fora", interval=2).checked_plan(model=model, sampler="ddim", nfe=6), CUDA)


def test_run_refuses_cuda_graph_on_cpu_as_a_config_error(tmp_path):
    # imported here: Hydra's side of the project, which the GPU machine's image lacks (CI has it)
    pytest.importorskip("hydra")
    from l2c_bench.models.loading import RunConfigError
    from l2c_bench.runs.prepare import prepare

    cfg = compose_config(tmp_path, "cuda_graph=true", "device=cpu", "cache=fora")
    with pytest.raises(RunConfigError, match="cuda_graph needs a CUDA device"):
        prepare(cfg)
    # a cache that decides at run time is refused first, before TeaCache's calibration samples anything
    cfg = compose_config(tmp_path, "cuda_graph=true", "device=cpu", "cache=teacache")
    with pytest.raises(RunConfigError, match="decides at run time"):
        prepare(cfg)
    assert not (tmp_path / "_calibration").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (run on the device machine)")
@pytest.mark.parametrize("cache", [None, "fora"])
def test_replay_equals_eager_and_one_capture_serves_every_batch(cache):
    model = toy_dit("cuda")
    method = None if cache is None else FixedPlan.of(make_cache(cache, interval=2), model=model, sampler="ddim", nfe=6)
    common = dict(steps=6, sampler="ddim", guidance_scale=1.5, cache=method)
    graphs = SamplingGraphs()
    for labels, seeds in (([1, 2, 3], [0, 1, 2]), ([7, 8, 9], [5, 6, 7])):  # new noise and labels, same graph
        eager = generate(model, labels=labels, seeds=seeds, **common).latents
        replay = generate(model, labels=labels, seeds=seeds, graphs=graphs, **common).latents
        assert torch.equal(replay, eager)
    assert graphs.captures == 1
    # a smaller last batch is another shape: one more graph, still exact
    eager = generate(model, labels=[1, 2, 3], seeds=[0, 1, 2], batch_size=2, **common).latents
    replay = generate(model, labels=[1, 2, 3], seeds=[0, 1, 2], batch_size=2, graphs=graphs, **common).latents
    assert torch.equal(replay, eager) and graphs.captures == 3
