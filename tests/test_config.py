"""Every config group composes; bad keys and values fail at compose time, naming them."""

import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
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
    """Each option composes and is the one selected (its own name, or the model's family)."""
    for option in group_options(group):
        cfg = compose_config(f"{group}={option}")
        assert cfg.steps == 20 and cfg.results_dir == "results"
        if group == "model":  # model=diffusers: the family of its default class (DiT)
            assert cfg.model.family == ("dit" if option == "diffusers" else option)
        elif group == "metrics":
            assert option == "default" and cfg.metrics.num_samples > 0
        else:
            assert cfg[group].name == (None if (group, option) == ("sampler", "default") else option), option


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


def test_a_key_of_another_method_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="cache.order") as info:
        compose_config("cache=fora", "cache.order=2")  # TaylorSeer's parameter
    assert "Key 'order' not in 'ForaConfig'" in str(info.value.__cause__)
    with pytest.raises(ConfigCompositionException, match="cache.interval=x") as info:
        compose_config("cache=fora", "cache.interval=x")  # typed from the method's own field
    assert isinstance(info.value.__cause__, ValidationError)
    cfg = compose_config("cache=taylorseer", "cache.order=2")
    assert cfg.cache.order == 2


def test_the_toy_table3_command_of_the_sweeps_readme_composes():
    """sweeps/README.md: Table 3 at toy scale swaps in the L2C preset with the learned router."""
    for point in ("table3_none", "table3_deepcache", "table3_faster_diffusion", "table3_l2c_auto"):
        cfg = compose_config(f"+point={point}", "+sweep=table3_uvit_cache_methods", "scale=toy")
        assert cfg.model.family == "uvit" and cfg.model.arch == "U-ViT-toy"
    assert cfg.cache.name == "l2c" and cfg.cache.router == "auto" and cfg.cache.threshold == 0.9
    with pytest.raises(ConfigCompositionException, match="cache.router"):
        compose_config("+point=table3_deepcache", "+sweep=table3_uvit_cache_methods", "cache.router=auto")


def test_each_method_composes_exactly_its_own_parameters():
    """The cache node is the method's schema: its name, then its dataclass fields in order."""
    from dataclasses import fields

    from l2c_bench.caching import CACHE_METHODS

    for name, method in CACHE_METHODS.items():
        cfg = compose_config(f"cache={name}")
        assert OmegaConf.get_type(cfg.cache).__name__ == f"{method.__name__}Config"
        if name != "none":
            assert list(cfg.cache) == ["name", *(f.name for f in fields(method))], name
    # the uncached point accepts every method's parameter, unset (a sweep's method settings reach it)
    every = {f.name for method in CACHE_METHODS.values() for f in fields(method)}
    uncached = compose_config("cache=none", "cache.shifted=false", "cache.router=official").cache
    assert set(uncached) == {"name"} | every and uncached.shifted is False and uncached.interval is None
    with pytest.raises(ConfigCompositionException, match="cache.ratoi"):
        compose_config("cache=none", "cache.ratoi=0.5")  # no method has it
    key_steps = compose_config("cache=faster_diffusion", "cache.key_steps=[0,3,5]").cache.key_steps
    assert list(key_steps) == [0, 3, 5]
    with pytest.raises(ConfigCompositionException):
        compose_config("cache=faster_diffusion", "cache.key_steps=[0,x]")  # list[int]


def test_unknown_group_option_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException, match="(?s)sampler.*ddim.*dpm_solver2"):
        compose_config("sampler=euler")


@pytest.mark.parametrize("overrides,lam,lr", [
    (["steps=20"], 5e-6, 1e-3), (["steps=50"], 1e-6, 1e-3), (["steps=10"], 1e-6, 1e-3),
    (["steps=50", "+model.overrides.input_size=64"], 5e-6, 1e-3),  # 512 px
    (["steps=20", "model.arch=DiT-L/2"], 5e-6, 1e-2), (["steps=50", "model.arch=DiT-L/2"], 1e-6, 1e-3),
    (["steps=30"], 5e-6, 1e-3),  # not in Table 8: the NFE-20 values
    (["steps=10", "model.arch=DiT-L/2"], 5e-6, 1e-2),  # ... of that model
    (["steps=50", "router.lam=3e-6", "router.lr=0.01"], 3e-6, 1e-2),  # an override wins
])
def test_paper_dit_router_recipe_follows_table_8(overrides, lam, lr):
    cfg = compose_config("scale=paper", "model=dit", *overrides)
    assert (cfg.router.lam, cfg.router.lr) == (lam, lr)
    uvit = compose_config("scale=paper", "model=uvit", *overrides[:1])
    assert (uvit.router.lam, uvit.router.lr) == (0.1, 1e-3)  # U-ViT-H/2: the same at NFE 20 and 50


def test_table_8_in_code_is_the_papers_table():
    import csv

    from l2c_bench.config import TABLE8_DIT

    with open(ROOT / "analysis" / "paper_numbers" / "table8_hyperparams.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["model"].startswith("DiT")]
    assert {(r["model"], int(r["resolution"]), int(r["nfe"])): (float(r["lambda"]), float(r["router_lr"]))
            for r in rows} == TABLE8_DIT


def readme_commands():
    """Every `l2c_bench.run` / `train_router` command in the bash blocks of the README and the
    docs/ pages, as override lists (a sweep's first value, `...` placeholders and comments dropped)."""
    import re
    import shlex

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            match = re.search(r"-m l2c_bench\.(run|train_router)\b(.*)", line)
            if match:
                words = shlex.split(match.group(2).split("#")[0])
                commands.append([_first_value(w) for w in words if w != "-m" and "..." not in w])
    return commands


def _first_value(override: str) -> str:
    key, _, value = override.partition("=")
    if value.startswith("range("):
        return f"{key}=0"
    return f"{key}={value.split(',')[0]}" if "," in value and not value.startswith(("[", "{")) else override


def test_every_readme_command_composes(tmp_path, monkeypatch):
    from docpages import write_page_files

    # in a folder holding docs/configuration.md's own config folder (its commands add `file://my_conf`)
    write_page_files(ROOT / "docs" / "configuration.md", "my_conf", tmp_path)
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert len(commands) >= 8  # the set-up command, paper runs, router learning, SLURM, shards
    for overrides in commands:
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        assert cfg.steps in (10, 20, 50), overrides
        resolved = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
        assert resolved["router"]["lam"] >= 0 and resolved["router"]["lr"] > 0, overrides  # interpolations resolve
