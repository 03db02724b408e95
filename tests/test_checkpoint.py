"""Strict loading round trip and the three error messages of a bad checkpoint."""

import pytest
import torch

from l2c_bench.models import CheckpointError, build_model, load_checkpoint, save_checkpoint


def small_dit():
    return build_model("DiT-S/2", depth=2, input_size=8)


def test_round_trip_plain_and_wrapped(tmp_path):
    torch.manual_seed(0)
    src = small_dit()
    for p in src.parameters():
        p.data.normal_()
    state = src.state_dict()
    for name, obj in [("plain.pt", state), ("ema.pt", {"ema": state, "opt": {"lr": 1e-3}}),
                      ("model.pt", {"model": state})]:
        torch.save(obj, tmp_path / name)
        dst = load_checkpoint(small_dit(), tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(dst.state_dict().values(), state.values(), strict=True))


def test_training_checkpoint_with_argparse_namespace_loads_the_ema_weights(tmp_path):
    """A DiT training checkpoint (model, ema, args as an argparse Namespace) loads under
    weights_only, and the EMA weights are the ones used (DiT's sampling convention)."""
    import argparse

    torch.manual_seed(0)
    model, ema = small_dit(), small_dit()
    for p in [*model.parameters(), *ema.parameters()]:
        p.data.normal_()
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "args": argparse.Namespace(lr=1e-4)},
               tmp_path / "c.pt")
    loaded = load_checkpoint(small_dit(), tmp_path / "c.pt")
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, ema.state_dict()[name]), name
    assert not torch.equal(loaded.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_fp16_storage_loads_into_fp32(tmp_path):
    torch.manual_seed(0)
    src = small_dit()
    for p in src.parameters():
        p.data.normal_()
    save_checkpoint(src, tmp_path / "half.pt", half=True)
    stored = torch.load(tmp_path / "half.pt", weights_only=True)  # a plain state dict, as the official files
    assert {v.dtype for v in stored.values()} == {torch.float16}
    dst = load_checkpoint(small_dit(), tmp_path / "half.pt")
    for name, value in dst.state_dict().items():  # float32 again, each value the float16 rounding of src's
        assert value.dtype == torch.float32, name
        assert torch.equal(value, src.state_dict()[name].half().float()), name


def test_wrong_key_and_wrong_shape_are_listed(tmp_path):
    state = small_dit().state_dict()
    state["blocks.0.attn.qkv.weightt"] = state.pop("blocks.0.attn.qkv.weight")
    state["final_layer.linear.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(small_dit(), tmp_path / "bad.pt")
    msg = str(info.value)
    assert "bad.pt" in msg and "model.checkpoint" in msg
    assert "1 missing: blocks.0.attn.qkv.weight" in msg
    assert "1 unexpected: blocks.0.attn.qkv.weightt" in msg
    assert "final_layer.linear.bias (7,) != (32,)" in msg


def test_many_mismatches_are_counted_and_truncated(tmp_path):
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"\d+ missing: pos_embed, .*, \.\.\.; 1 unexpected: x"):
        load_checkpoint(small_dit(), tmp_path / "other.pt")


def test_corrupt_and_truncated_files_give_a_clear_error(tmp_path):
    torch.save(small_dit().state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    for name in ("truncated.pt", "garbage.pt"):
        with pytest.raises(CheckpointError, match=f"cannot read checkpoint .*{name}.*truncated, corrupt") as info:
            load_checkpoint(small_dit(), tmp_path / name)
        assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_file_names_file_key_and_official_source(tmp_path):
    model = build_model("DiT-XL/2", device="meta")
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint(model, tmp_path / "DiT-XL-2-256x256.pt", config_key="model.checkpoint")
    msg = str(info.value)
    assert "DiT-XL-2-256x256.pt" in msg and "`model.checkpoint`" in msg
    assert "dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt" in msg
    with pytest.raises(FileNotFoundError, match="imagenet256_uvit_huge.pth"):
        load_checkpoint(build_model("U-ViT-H/2", device="meta"), tmp_path / "x.pth")


def test_meta_built_model_takes_the_file_tensors(tmp_path):
    src = small_dit()
    save_checkpoint(src, tmp_path / "half.pt", half=True)
    meta = build_model("DiT-S/2", depth=2, input_size=8, device="meta")
    loaded = load_checkpoint(meta, tmp_path / "half.pt")
    for (name, p), q in zip(loaded.named_parameters(), src.parameters(), strict=True):
        assert p.device.type == "cpu" and p.dtype == torch.float32, name
        assert p.requires_grad == q.requires_grad  # pos_embed stays frozen
        assert torch.allclose(p, q, atol=1e-3)
