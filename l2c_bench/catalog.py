"""What can be run: the config groups and their options, generated from the registries and the
config files (`python -m l2c_bench.catalog`; docs/configuration.md has the prose).

    python -m l2c_bench.catalog            # everything
    python -m l2c_bench.catalog cache      # one section: model, sampler, cache, sweep, other
    python -m l2c_bench.catalog --write-docs   # the method tables of README.md and docs/caching.md
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from pathlib import Path

from .config import CONF_DIR

CONF = CONF_DIR  # the config tree the entry points read (the package's conf/)


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


def group_options(group: str) -> list[str]:
    """Every option of a config group: its files and the configs registered in Hydra's store
    (the per-method `*_schema` nodes of `cache`)."""
    from hydra.core.config_store import ConfigStore

    stored = ConfigStore.instance().repo.get(group, {})  # {name.yaml: node}, or {} for none
    return sorted({p.stem for p in (CONF / group).glob("*.yaml")} | {Path(n).stem for n in stored})


def sweep_values(override) -> list[str]:
    """The values one sweep override takes, as `run -m` expands it, written as on the command line:
    `a,b,c`, a single value, or `glob(include, exclude=[...])` over the options of the config group
    the key names. `override`: a parsed override, or its text `key=value`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, Glob, Override

    if isinstance(override, str):
        override = OverridesParser.create().parse_override(override)
    value = override.value()
    if isinstance(value, Glob):
        return value.filter(group_options(override.get_key_element().lstrip("+")))
    if isinstance(value, ChoiceSweep):
        text = (override.input_line or "").partition("=")[2]
        if text and not any(c in text for c in "[]{}()'\""):  # a plain a,b,c list: its words as written
            return [part.strip() for part in text.split(",")]
        return [Override._get_value_element_as_str(v) for v in value.list]
    if override.is_sweep_override():  # ranges, intervals: as Hydra iterates them
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def sweep_points(name: str) -> list[tuple[str, ...]]:
    """The points of sweep file `name`: one tuple of `key=value` overrides each, the product of
    its `hydra.sweeper.params` as `run -m` expands them (before the command line's own)."""
    import itertools

    import yaml

    params = yaml.safe_load((CONF / "sweep" / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]
    return list(itertools.product(*[[f"{k}={v}" for v in sweep_values(f"{k}={vals}")] for k, vals in params.items()]))


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
        params = ", ".join(f"{name}={default!r}" for name, default in cls.defaults().items())
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

# The cache-method tables of the docs, written from the registry (each method's `summary`,
# `description`, fields and `parameter_notes`) between these two lines.
TABLE_BEGIN = "<!-- the cache methods: written by python -m l2c_bench.catalog --write-docs -->"
TABLE_END = "<!-- end of the cache methods -->"
ROOT = CONF.parent


def default_method() -> str:
    """The `cache` option conf/config.yaml selects."""
    import yaml

    defaults = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    return next(entry["cache"] for entry in defaults if isinstance(entry, dict) and "cache" in entry)


def _value(value) -> str:
    """A default as a config file writes it."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return f"`{value}`" if isinstance(value, str) else str(value)


def parameter_cell(cls) -> str:
    """`name` (default, or what its values mean) for each parameter of a method."""
    cells = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        cells.append(f"`{f.name}` ({cls.parameter_notes.get(f.name) or _value(default)})")
    return ", ".join(cells)


def method_tables() -> dict[str, str]:
    """{doc path: its method table} from caching.CACHE_METHODS."""
    from .caching import CACHE_METHODS

    default = default_method()
    readme = ["| `cache=` | what it does |", "|---|---|"]
    caching = ["| `cache=` | parameters | what it does |", "|---|---|---|"]
    for name, cls in CACHE_METHODS.items():
        key = f"`{name}`" + (" (default)" if name == default else "")
        readme.append(f"| {key} | {cls.summary} |")
        caching.append(f"| {key} | {parameter_cell(cls)} | {cls.description} |")
    return {"README.md": "\n".join(readme), "docs/caching.md": "\n".join(caching)}


def generated(text: str, table: str, doc: str) -> str:
    """`text` with its method table (between TABLE_BEGIN and TABLE_END) replaced by `table`."""
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise ValueError(f"{doc} has no method table markers ({TABLE_BEGIN} ... {TABLE_END})")
    head, rest = text.split(TABLE_BEGIN, 1)
    return f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{rest.split(TABLE_END, 1)[1]}"


def write_docs(root: Path = ROOT) -> list[str]:
    """Write the method tables into README.md and docs/caching.md; the docs that changed."""
    changed = []
    for doc, table in method_tables().items():
        path = root / doc
        text = path.read_text()
        new = generated(text, table, doc)
        if new != text:
            path.write_text(new)
            changed.append(doc)
    return changed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the cache-method tables of README.md and docs/caching.md from the registry")
    args = parser.parse_args(argv)
    if args.write_docs:
        changed = write_docs()
        print(f"wrote {', '.join(changed)}" if changed else "the method tables are up to date")
        return
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    print("\n\n".join(SECTIONS[name]() for name in (args.sections or SECTIONS)))


if __name__ == "__main__":
    main()
