"""docs/configuration.md, "Your own config folder", is real: its files, written into a folder, add
a cache preset and a sweep through `hydra.searchpath`, composing the point the page says, and a
file named like a shipped one is not read. (tests/test_wheel.py runs the example from a wheel.)"""

from conftest import ROOT
from docpages import write_page_files
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from l2c_bench.config import CONF_DIR, compose
from l2c_bench.records.store import run_id_for

PAGE = ROOT / "docs" / "configuration.md"


def resolved(overrides):
    return OmegaConf.to_container(compose(overrides), resolve=True)


def test_the_pages_folder_adds_a_preset_and_a_sweep(tmp_path, monkeypatch):
    written = write_page_files(PAGE, "my_conf", tmp_path)
    assert written == ["my_conf/cache/fora_every3.yaml", "my_conf/sweep/my_fora_steps.yaml"]
    monkeypatch.chdir(tmp_path)  # `file://my_conf` is relative to the current folder, as on the page
    search = "hydra.searchpath=[file://my_conf]"
    preset = resolved([search, "cache=fora_every3", "tracker=none"])
    assert preset["cache"] == {"name": "fora", "interval": 3}
    # the preset is the same point as the shipped method with that parameter set
    assert run_id_for(preset) == run_id_for(resolved(["cache=fora", "cache.interval=3", "tracker=none"]))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # as the entry points do
        sweep = hydra_compose("config", overrides=[search, "+sweep=my_fora_steps"], return_hydra_config=True)
    assert sweep.cache.interval == 3
    assert dict(sweep.hydra.sweeper.params) == {"model": "dit,uvit", "steps": "10,20,50"}


def test_a_file_named_like_a_shipped_one_is_not_read(tmp_path, monkeypatch):
    (tmp_path / "my_conf" / "cache").mkdir(parents=True)
    (tmp_path / "my_conf" / "cache" / "fora.yaml").write_text(
        "defaults:\n  - fora_schema\n  - _self_\nname: fora\ninterval: 7\n")
    monkeypatch.chdir(tmp_path)
    assert compose(["hydra.searchpath=[file://my_conf]", "cache=fora"]).cache.interval == 2  # the shipped one
