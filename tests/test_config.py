"""Every config group composes; bad keys and values fail at compose time, naming them."""

import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError, ValidationError

from l2c_bench.config import register_configs

register_configs()
CONF = str(ROOT / "conf")


def compose_config(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def group_options(group):
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "scale", "sampler", "cache", "metrics", "tracker"])
def test_every_option_of_every_group_composes(group):
    for option in group_options(group):
        cfg = compose_config(f"{group}={option}")
        assert cfg.steps == 20 and cfg.results_dir == "results"


@pytest.mark.parametrize("model,scale,arch", [("dit", "toy", "DiT-toy"), ("uvit", "toy", "U-ViT-toy"),
                                              ("dit", "paper", "DiT-XL/2"), ("uvit", "paper", "U-ViT-H/2")])
def test_model_and_scale_pick_the_architecture(model, scale, arch):
    cfg = compose_config(f"model={model}", f"scale={scale}")
    assert cfg.model.arch == arch and cfg.model.family == model
    assert cfg.model.default_sampler == {"dit": "ddim", "uvit": "dpm_solver2"}[model]


def test_paper_guidance_settings():
    assert compose_config("model=dit", "scale=paper").model.guidance_scale == 1.5
    assert compose_config("model=uvit", "scale=paper").model.guidance_scale == 0.4


def test_misspelt_key_fails_naming_it():
    with pytest.raises(ConfigCompositionException, match="model.chekpoint") as info:
        compose_config("model.chekpoint=x.pt")
    assert isinstance(info.value.__cause__, ConfigAttributeError)
    assert "Key 'chekpoint' not in 'ModelConfig'" in str(info.value.__cause__)
    with pytest.raises(ConfigCompositionException, match="stepz"):
        compose_config("stepz=20")


def test_wrong_type_fails_naming_key_and_value():
    with pytest.raises(ConfigCompositionException, match="steps=abc") as info:
        compose_config("steps=abc")
    assert isinstance(info.value.__cause__, ValidationError)
    assert "Integer" in str(info.value.__cause__)
    with pytest.raises(ConfigCompositionException, match="metrics.fid=maybe"):
        compose_config("metrics.fid=maybe")


def test_unknown_group_option_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException, match="(?s)sampler.*ddim.*dpm_solver2"):
        compose_config("sampler=euler")
