"""The one command builder: the command line that composes a run's model, sampler and store again,
for every "make the missing artifact" message (a learned router, a TeaCache calibration).

Built from the run's description, so it round-trips: composing the printed overrides gives a run
that looks for the same artifact (tests/test_commands.py checks it for every model family at both
scales).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from . import ModelSpec, RunDescription

# A string Hydra reads back as this same string when written bare (no quotes): no grammar
# characters, and not a word or number it would parse as another type.
_BARE = re.compile(r"[A-Za-z0-9_./:~@-]+")
_OTHER_TYPES = re.compile(r"(?i)(null|true|false|nan|[-+]?inf|[-+]?[0-9_.]+(e[-+]?[0-9]+)?)")


def hydra_value(value: Any) -> str:
    """`value` in Hydra's override grammar (as it would read it back)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _BARE.fullmatch(value) and not _OTHER_TYPES.fullmatch(value):
            return value
        # in quotes Hydra unescapes backslashes only before a quote or at the string's end
        quoted = re.sub(r"(\\*)'", r"\1\1\\'", re.sub(r"(\\+)$", r"\1\1", value))
        return f"'{quoted}'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise TypeError(f"no Hydra override form for {type(value).__name__}: {value!r}")


def model_overrides(model: ModelSpec) -> list[str]:
    """The overrides that compose `model` again: its `model=` option, then every key the run set."""
    args = [f"scale={model.scale}", f"model={model.group}"]
    if model.diffusers_class:  # the class's family, default sampler and arch name follow from it
        args.append(f"model.diffusers_class={model.diffusers_class}")
    else:
        args.append(f"model.arch={hydra_value(model.arch)}")
    for key in ("checkpoint", "pretrained", "vae", "vae_checkpoint", "prompt_set"):
        if (value := getattr(model, key)) is not None:
            args.append(f"model.{key}={hydra_value(value)}")
    args += [f"model.guidance_scale={hydra_value(model.guidance_scale)}",
             f"model.guidance_channels={hydra_value(model.guidance_channels)}"]
    for group in ("overrides", "config", "zoo"):  # `++`: added, or set over a key the group file has
        args += [f"++model.{group}.{key}={hydra_value(value)}" for key, value in getattr(model, group).items()]
    return args


def run_overrides(run: RunDescription) -> list[str]:
    """The model, sampler, NFE, results store and shared reference store of `run` as overrides."""
    shared = [] if run.reference_dir is None else [f"reference_dir={hydra_value(run.reference_dir)}"]
    return [*model_overrides(run.model), f"sampler.name={run.sampler.name}", f"steps={run.steps}",
            f"results_dir={hydra_value(run.results_dir)}", *shared]


def group_overrides(group: str, values: Any) -> list[str]:
    """`<group>.<key>=<value>` for each field of a group's description (a recipe, a calibration)."""
    import dataclasses

    return [f"{group}.{f.name}={hydra_value(getattr(values, f.name))}" for f in dataclasses.fields(values)]


def command(module: str, overrides: Iterable[str]) -> str:
    """`python -m <module> <overrides>`, each shell-quoted."""
    return f"python -m {module} " + " ".join(shlex.quote(a) for a in overrides)
