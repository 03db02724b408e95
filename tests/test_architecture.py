"""The tree shows the design: no import cycle, few modules loose at the package root, and every
registered method complete (its config file, label, and its rows in the method tables, which are
written from the registry)."""

import yaml
from conftest import ROOT
from imports import cycles, graph, package_graph

from l2c_bench import catalog
from l2c_bench.caching import CACHE_METHODS


def test_no_import_cycle_between_modules_or_packages():
    """In-function imports count: a cycle hidden in a function body is still a cycle."""
    edges = graph()
    assert len(edges) > 80 and sum(map(len, edges.values())) > 200  # the graph really was read
    assert cycles(edges) == []
    assert cycles(package_graph(edges)) == []  # l2c_bench.caching, .engine, .runs, ... and root modules


def test_an_import_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_at_most_six_modules_loose_at_the_package_root():
    loose = sorted(p.stem for p in (ROOT / "l2c_bench").glob("*.py") if p.stem != "__init__")
    assert len(loose) <= 6, loose


def test_no_method_declares_a_class_attribute_as_a_parameter():
    """`name`, `label`, ... are class attributes (CacheMethod); written with a type annotation in a
    method they would become dataclass fields: parameters in its schema, rows and run ids."""
    from dataclasses import fields

    reserved = {"name", "label", "decides_at_run_time", "identity_neutral", "not_in_identity", "config_groups"}
    for name, method in CACHE_METHODS.items():
        assert not reserved & {f.name for f in fields(method)}, name


def test_every_registered_method_has_its_config_file_label_and_table_rows():
    readme = (ROOT / "README.md").read_text()
    caching_doc = (ROOT / "docs" / "caching.md").read_text()
    for name, method in CACHE_METHODS.items():
        path = ROOT / "conf" / "cache" / f"{name}.yaml"
        assert path.is_file(), f"{name}: add conf/cache/{name}.yaml (docs/adding_a_method.md)"
        config = yaml.safe_load(path.read_text())
        assert config["name"] == name and config["defaults"] == [f"{name}_schema", "_self_"], name
        assert method.name == name and method.label not in ("", "base"), name
        assert method.summary and method.description, f"{name}: give it a `summary` and a `description`"
    for doc, text in (("README.md", readme), ("docs/caching.md", caching_doc)):
        assert catalog.generated(text, catalog.method_tables()[doc], doc) == text, \
            f"{doc}'s method table is not the registry's: run python -m l2c_bench.catalog --write-docs"
