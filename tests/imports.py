"""The import graph of `l2c_bench` (and `analysis`), read from the source: every `import`, at module
level or inside a function, as an edge between modules. `test_architecture.py` checks it has no
cycle; `python tests/imports.py` prints it, package by package."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("l2c_bench", "analysis")


def modules() -> dict[str, Path]:
    """{dotted name: file}; a package is its `__init__.py`."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` (a module or a module.attribute) names."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    """{module: modules it imports (within the packages)}; `from pkg import sub` counts sub."""
    known = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" for alias in node.names]
            for target in targets:
                found = _resolve(target, known)
                if found is not None and found != name:
                    edges[name].add(found)
        edges.setdefault(name, set())
    return dict(edges)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def package_graph(edges: dict[str, set[str]], depth: int = 2) -> dict[str, set[str]]:
    """The graph between packages (names cut to `depth` parts)."""
    cut = lambda m: ".".join(m.split(".")[:depth])  # noqa: E731
    out: dict[str, set[str]] = defaultdict(set)
    for v, ws in edges.items():
        out[cut(v)] |= {cut(w) for w in ws if cut(w) != cut(v)}
    return dict(out)


if __name__ == "__main__":
    edges = graph()
    for v, ws in sorted(package_graph(edges).items()):
        print(f"{v} -> {', '.join(sorted(ws)) or '-'}")
    found = cycles(edges)
    print(f"\n{len(edges)} modules, {sum(map(len, edges.values()))} imports, cycles: {found or 'none'}")
