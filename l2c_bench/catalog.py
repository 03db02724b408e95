"""What can be run: the config groups and their options, generated from the registries and the
config files (`python -m l2c_bench.catalog`; docs/configuration.md has the prose).

    python -m l2c_bench.catalog            # everything
    python -m l2c_bench.catalog cache      # one section: model, sampler, cache, sweep, other
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"


def _comment(path: Path) -> str:
    """A config file's leading comment (without '#' and the `@package` line), as one paragraph."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text.startswith("@package"):
            lines.append(text)
    return " ".join(lines)


def _options(group: str) -> dict[str, str]:
    """{option: description} of a config group's files."""
    return {p.stem: _comment(p) for p in sorted((CONF / group).glob("*.yaml"))}


def _wrap(name: str, text: str, width: int = 100) -> str:
    return textwrap.fill(text or "-", width=width, initial_indent=f"  {name:<17} ", subsequent_indent=" " * 20)


def models() -> str:
    return "model=  (the model family; scale=toy|paper picks its size)\n" + "\n".join(
        _wrap(name, text) for name, text in _options("model").items())


def samplers() -> str:
    from .sampling import SAMPLERS

    lines = ["sampler=  (default: the family's own, DiT -> ddim, U-ViT -> dpm_solver2)"]
    for name, spec in SAMPLERS.items():
        kind = "stochastic" if spec.stochastic else "deterministic"
        lines.append(_wrap(name, f"{spec.family} models, {kind}: {spec.description}"))
    return "\n".join(lines)


def caches() -> str:
    """Each method of caching.CACHE_METHODS with its config file's description and its parameters."""
    from .caching import CACHE_METHODS

    described = _options("cache")
    lines = ["cache=  (each method's parameters are cache.<name>=..., defaults shown)"]
    for name, cls in CACHE_METHODS.items():
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls)
                           if f.default is not dataclasses.MISSING)
        lines.append(_wrap(name, described.get(name, "")))
        if params:
            lines.append(" " * 20 + f"parameters: {params}")
    return "\n".join(lines)


def sweeps() -> str:
    return ("+sweep=  (python -m l2c_bench.run -m +sweep=<name>; sweeps/README.md)\n"
            + "\n".join(_wrap(name, text) for name, text in _options("sweep").items()))


def other() -> str:
    groups = {"scale": "scale=", "tracker": "tracker=", "metrics": "metrics=", "hydra/launcher": "hydra/launcher="}
    lines = []
    for group, key in groups.items():
        lines.append(f"{key}  " + ", ".join(_options(group)))
    lines.append("steps=<NFE>  seed=<int>  device=auto|cpu|cuda  results_dir=<dir>  force=true  "
                 "(docs/configuration.md)")
    return "\n".join(lines)


SECTIONS = {"model": models, "sampler": samplers, "cache": caches, "sweep": sweeps, "other": other}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    print("\n\n".join(SECTIONS[name]() for name in (args.sections or SECTIONS)))


if __name__ == "__main__":
    main()
