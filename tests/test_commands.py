"""The one command builder round-trips: the command a "make the missing artifact" message prints
composes, with Hydra, to a run that looks for the very artifact the message was about; for every
model family (dit, uvit, each diffusers class) at both scales, for both artifacts (an L2C router, a
TeaCache calibration)."""

import shlex

import pytest

from l2c_bench.caching.methods.l2c.learning.job import name_for as router_name
from l2c_bench.caching.methods.l2c.learning.job import resolve_auto, training_command
from l2c_bench.caching.methods.teacache.calibration import calibration_command, calibration_for
from l2c_bench.caching.methods.teacache.calibration import name_for as calibration_name
from l2c_bench.config import compose
from l2c_bench.description.commands import hydra_value
from l2c_bench.models.loading import RunConfigError
from l2c_bench.models.zoo import ADAPTERS
from l2c_bench.runs.prepare import describe

FAMILIES = ["dit", "uvit", *(f"diffusers:{cls}" for cls in ADAPTERS)]
ARTIFACTS = {  # artifact -> (the run's cache, the name it looks for, the command that makes it)
    "router": ("cache=l2c", router_name, training_command, "l2c_bench.train_router"),
    "calibration": ("cache=teacache", calibration_name, calibration_command, "l2c_bench.calibrate"),
}


def compose_config(results_dir, *overrides):
    """The project's config with these overrides (the results folder written as a command would)."""
    return compose([f"results_dir={hydra_value(str(results_dir))}", *overrides])


def model_overrides(family: str, scale: str, tmp_path) -> list[str]:
    """A run of `family` at `scale` away from every default the command must carry: weights in a
    folder whose name needs quoting, a non-default guidance and NFE."""
    weights = tmp_path / "my weights"
    weights.mkdir(exist_ok=True)
    if family.startswith("diffusers:"):
        args = ["model=diffusers", f"model.diffusers_class={family.split(':')[1]}"]
        if scale == "paper":  # a from_pretrained folder: its config and weight files are hashed
            (weights / "config.json").write_text("{}")
            (weights / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
            args += [f"model.pretrained={weights}", "model.vae=none", "router.data=/data/latents it trains on.pt"]
        return args + ["model.guidance_scale=3.5"]
    args = [f"model={family}"]
    if scale == "paper":
        (weights / f"{family}.pt").write_bytes(b"a checkpoint")
        args += [f"model.checkpoint={weights / f'{family}.pt'}", "model.vae_checkpoint=random",
                 "router.data=/data/imagenet/train"]
    return args + ["model.guidance_scale=2.25", "+model.overrides.learn_sigma=true"] * (family == "dit")


@pytest.mark.parametrize("artifact", ARTIFACTS)
@pytest.mark.parametrize("scale", ["toy", "paper"])
@pytest.mark.parametrize("family", FAMILIES)
def test_the_printed_command_composes_to_the_artifact_the_run_looked_for(family, scale, artifact, tmp_path):
    cache, name_for, command_for, module = ARTIFACTS[artifact]
    results = tmp_path / "results, with a comma"
    run = describe(compose_config(results, f"scale={scale}", *model_overrides(family, scale, tmp_path), cache,
                                  "steps=10", "router.lam=2e-05", "calibration.samples=3", "tracker=none"))
    command = command_for(run)
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", module]
    again = describe(compose_config(tmp_path / "elsewhere", *words[3:]))  # the printed results_dir wins
    assert name_for(again) == name_for(run)
    assert (again.results_dir, again.model, again.sampler, again.steps) == (run.results_dir, run.model, run.sampler,
                                                                            run.steps)


def test_a_missing_paper_scale_artifact_prints_its_whole_command(tmp_path):
    """TeaCache on Flux and L2C on DiT at paper scale, nothing stored: the error prints the command,
    which composes (the Flux one used to name `model=flow`, which does not exist)."""
    flux = describe(compose_config(tmp_path, "scale=paper", *model_overrides("diffusers:FluxTransformer2DModel", "paper",
                                                                           tmp_path), "cache=teacache", "tracker=none"))
    with pytest.raises(RunConfigError, match="Make it with") as caught:
        calibration_for(flux, model=None)
    line = next(li.strip() for li in str(caught.value).splitlines() if li.strip().startswith("python -m"))
    assert "model=diffusers" in line and "model=flow" not in line
    assert calibration_name(describe(compose_config(tmp_path, *shlex.split(line)[3:]))) == calibration_name(flux)
    dit = describe(compose_config(tmp_path, "scale=paper", *model_overrides("dit", "paper", tmp_path), "tracker=none"))
    with pytest.raises(RunConfigError, match="Train it with") as caught:
        resolve_auto(dit)
    line = next(li.strip() for li in str(caught.value).splitlines() if li.strip().startswith("python -m"))
    assert router_name(describe(compose_config(tmp_path, *shlex.split(line)[3:]))) == router_name(dit)


@pytest.mark.parametrize("value", ["plain", "with space", "1.5", "true", "null", "it's", "a,b", "x=y", "[1]", "",
                                   "C:\\dir", "end\\", "q\\'x", 3, 2.5e-06, None, True, [1, "a b"], {"k": "v w"}])
def test_values_read_back_as_written(value, tmp_path):
    """`hydra_value` writes what Hydra parses back to the same value (strings that look like other
    types stay strings)."""
    from omegaconf import OmegaConf

    cfg = compose_config(tmp_path, f"++model.zoo.probe={hydra_value(value)}")
    assert OmegaConf.to_container(cfg.model.zoo)["probe"] == value


def test_a_failed_point_prints_its_whole_reason(tmp_path, caplog):
    """The terminal line of a failed point keeps its one-line form; the command below it is printed
    in full (in the run's log and in the sweep summary), and it composes."""
    from l2c_bench.models.loading import TOY_ASSETS
    from l2c_bench.run import run_point
    from l2c_bench.runs.summary import sweep_table

    cfg = compose_config(tmp_path, "scale=paper", "scale.features=toy", "model=dit", "model.arch=DiT-toy",
                         f"model.checkpoint={TOY_ASSETS / 'dit_toy.pt'}", "model.vae=none", "cache=teacache",
                         "steps=10", "metrics.num_samples=2", "metrics.batch_size=2", "metrics.fid=false",
                         "tracker=none", "device=cpu")
    with caplog.at_level("ERROR", logger="l2c_bench.run"):
        row = run_point(cfg)
    assert row["status"] == "failed"
    logged = caplog.text.splitlines()
    first = next(i for i, line in enumerate(logged) if line.startswith("ERROR") or "failed" in line)
    assert "Make it with" in logged[first] and "python -m l2c_bench.calibrate" in "\n".join(logged[first + 1:])
    table = sweep_table([row], results_dir=str(tmp_path))
    line = next(li.strip() for li in table.splitlines() if li.strip().startswith("python -m l2c_bench.calibrate"))
    assert calibration_name(describe(compose_config(tmp_path, *shlex.split(line)[3:]))) == \
        calibration_name(describe(cfg))
