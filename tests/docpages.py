"""A docs page's tested example: its fenced code blocks, a block's module loaded from a file
(tests/test_adding_a_method.py, tests/test_adding_a_metric.py), and blocks written as files."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path


def page_blocks(page: Path) -> dict[str, str]:
    """{title: code} of the page's fenced blocks (`file=<path>` or a bare word)."""
    return dict(re.findall(r"^```\w+ (?:file=)?(\S+)\n(.*?)^```", page.read_text(), flags=re.M | re.S))


def write_page_files(page: Path, folder: str, where: Path) -> list[str]:
    """Write the page's blocks titled `<folder>/...` under `where`, as their titles say; returns the
    titles (docs/configuration.md's user config folder: tests/test_searchpath.py, test_wheel.py)."""
    blocks = {name: code for name, code in page_blocks(page).items() if name.startswith(folder + "/")}
    for name, code in blocks.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(code)
    return sorted(blocks)


def load_module(path: Path, name: str):
    """The module in `path`, imported under `name` (registered in sys.modules, as an import would)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_page_tests(code: str, path: Path, name: str) -> list[str]:
    """Write a page's test block to `path`, import it as `name` and call each `test_*` in it (they take
    no fixtures); returns their names."""
    path.write_text(code)
    tests = load_module(path, name)
    names = [n for n in dir(tests) if n.startswith("test_")]
    for n in names:
        getattr(tests, n)()
    return names
