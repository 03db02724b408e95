"""Architecture facts live with the model (engine/model.py): every family and diffusers adapter
declares them, the facts agree with the model's structure, and the methods that read them
(fbcache, deepcache, delta_dit, faster_diffusion) plan exactly as they did when they tested
`family == "uvit"`. One sampler registry: each family's default is one entry's mark."""

from __future__ import annotations

import pytest
import torch

from l2c_bench.caching import UnsupportedCombination, make_cache
from l2c_bench.engine.model import ARCHITECTURE_FACTS, CacheableModel
from l2c_bench.models import build_model
from l2c_bench.models.zoo import ADAPTERS, build_zoo
from l2c_bench.sampling import CONVENTIONS, DEFAULT_SAMPLERS, SAMPLERS, check_sampler

NFE = 10
OURS = ["DiT-toy", "U-ViT-toy"]
NAMES = OURS + list(ADAPTERS)

# Recorded from the code before the facts moved (methods testing `model.family == "uvit"`), at 10
# NFE: per model, its blocks, fbcache's span, deepcache's span and mode, faster_diffusion's span
# (None: unsupported) and whether delta_dit plans for it.
BEFORE = {
    "DiT-toy": (8, (1, 8), (1, 7), "delta", None, True),
    "U-ViT-toy": (9, (1, 8), (1, 8), "output", (0, 5), False),
    "DiTTransformer2DModel": (8, (1, 8), (1, 7), "delta", None, True),
    "PixArtTransformer2DModel": (4, (1, 4), (1, 3), "delta", None, True),
    "SD3Transformer2DModel": (4, (1, 4), (1, 3), "delta", None, True),
    "FluxTransformer2DModel": (4, (1, 4), (1, 3), "delta", None, True),
    "WanTransformer3DModel": (4, (1, 4), (1, 3), "delta", None, True),  # added with the class: as Flux's
    "Flux2Transformer2DModel": (4, (1, 4), (1, 3), "delta", None, True),  # added with the class: as Flux's
    "LTXVideoTransformer3DModel": (4, (1, 4), (1, 3), "delta", None, True),  # added with the class: as Wan's
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    out = {name: build_model(name).eval() for name in OURS}
    out.update({cls: build_zoo(cls).eval() for cls in ADAPTERS})
    return out


def sampler_of(model) -> str:
    return DEFAULT_SAMPLERS[model.family]


@pytest.mark.parametrize("name", NAMES)
def test_each_family_and_adapter_declares_its_facts_and_they_match_its_structure(name, models):
    model = models[name]
    assert isinstance(model, CacheableModel)
    for fact in ARCHITECTURE_FACTS:  # declared on the class, not read from the family's name
        assert any(fact in vars(cls) for cls in type(model).__mro__), (name, fact)
    assert isinstance(model.long_skips, bool) and isinstance(model.dual_stream, bool)
    # long skips: some block fuses a saved skip into its input (U-ViT's out-blocks' skip_linear)
    fuses_skips = any(getattr(m, "skip_linear", None) is not None for m in model.modules())
    assert model.long_skips == fuses_skips
    # the mid block: the module U-ViT runs between its in-blocks and its out-blocks
    paths = [attn[0] for attn, _ in model.branch_paths()]
    mid = [i for i, p in enumerate(paths) if p.startswith("mid_block.")]
    assert model.mid_block_index == (mid[0] if mid else None)
    if model.mid_block_index is not None:
        assert all(p.startswith("in_blocks.") for p in paths[: model.mid_block_index])
        assert all(p.startswith("out_blocks.") for p in paths[model.mid_block_index + 1:])
    # dual stream: its blocks carry a text stream with its own feed-forward (SD3's, Flux's joint blocks)
    text_stream = any(attr == "ff_context" for spec in getattr(model, "BRANCHES", {}).values() for attr, *_ in spec)
    assert model.dual_stream == text_stream
    assert model.dual_stream == (name in ("SD3Transformer2DModel", "FluxTransformer2DModel", "Flux2Transformer2DModel"))
    assert model.long_skips == (model.mid_block_index is not None) == (name == "U-ViT-toy")


def test_uvit_last_block_reads_block_0s_skip(models):
    """What `long_skips` means for fbcache: block 0 always runs, and the last out-block fuses its
    output, so the last block cannot sit in the reused span."""
    model = models["U-ViT-toy"]
    seen = {}
    hooks = [model.in_blocks[0].register_forward_hook(lambda m, args, out: seen.update(block0=out)),
             model.out_blocks[-1].register_forward_pre_hook(lambda m, args: seen.update(skip=args[1]))]
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 32), torch.tensor([500.0]), torch.tensor([1]))
    finally:
        for hook in hooks:
            hook.remove()
    assert seen["skip"] is seen["block0"]
    assert model.branch_paths()[model.num_blocks - 1][0] == (f"out_blocks.{len(model.out_blocks) - 1}.attn",)


@pytest.mark.parametrize("name", NAMES)
def test_the_methods_plans_follow_the_facts_and_are_unchanged(name, models):
    model = models[name]
    blocks, fb_span, deep_span, deep_mode, fast_span, delta_ok = BEFORE[name]
    b, sampler = model.num_blocks, sampler_of(model)
    assert b == blocks
    full = {n for n in range(NFE) if n % 2 == 0}

    # fbcache: blocks 1.. to the end; with long skips the last block (it reads block 0's skip) runs
    fb = make_cache("fbcache").plan(model=model, sampler=sampler, nfe=NFE)
    expected = (1, b - 1) if model.long_skips else (1, b)
    assert fb.rule.span_at(1) == expected == fb_span
    assert fb.decided_at_run_time and fb.rule.mode == "delta" and fb.cache_steps == tuple(range(1, NFE))

    # deepcache: the deep span's output feature with long skips, else its residual update
    deep = make_cache("deepcache").plan(model=model, sampler=sampler, nfe=NFE)
    assert deep.rule.span_at(1) == (1, b - 1) == deep_span
    assert deep.rule.mode == ("output" if model.long_skips else "delta") == deep_mode
    assert deep.cache_steps == tuple(n for n in range(NFE) if n not in full)
    reused = torch.tensor([[n not in full and 1 <= k < b - 1 for k in range(b)] for n in range(NFE)])
    assert torch.equal(~deep.schedule().bool(), reused[:, :, None].expand(NFE, b, 2))

    # faster_diffusion: the encoder and the mid block, where the model has that split
    if model.mid_block_index is None:
        assert fast_span is None
        with pytest.raises(UnsupportedCombination, match=f"{model.family} has no encoder/decoder split"):
            make_cache("faster_diffusion").plan(model=model, sampler=sampler, nfe=NFE)
    else:
        fast = make_cache("faster_diffusion").plan(model=model, sampler=sampler, nfe=NFE)
        assert fast.rule.span_at(1) == (0, model.mid_block_index + 1) == fast_span and fast.rule.mode == "output"

    # delta_dit: any model without long skips; the rear half before NFE/2, the front half after
    assert (not model.long_skips) == delta_ok
    if model.long_skips:
        with pytest.raises(UnsupportedCombination, match="long skips"):
            make_cache("delta_dit").plan(model=model, sampler=sampler, nfe=NFE)
    else:
        delta = make_cache("delta_dit").plan(model=model, sampler=sampler, nfe=NFE)
        half = b // 2
        assert [delta.rule.span_at(n) for n in range(NFE)] == [(b - half, b)] * 5 + [(0, half)] * 5
        assert delta.rule.mode == "delta" and delta.cache_steps == (1, 3, 6, 8)


def test_one_sampler_registry_marks_each_familys_default():
    assert set(DEFAULT_SAMPLERS) == set(CONVENTIONS)
    for family, name in DEFAULT_SAMPLERS.items():
        assert [n for n, s in SAMPLERS.items() if s.family == family and s.default] == [name]
        assert not SAMPLERS[name].stochastic
        check_sampler(name, family, 20)
    assert DEFAULT_SAMPLERS == {"dit": "ddim", "uvit": "dpm_solver2", "flow": "flow_euler"}  # as before
    assert all(callable(s.prepare) and callable(s.run) for s in SAMPLERS.values())
