"""tools/import_graph: the cycle finder on a known graph, and the report on this checkout."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.import_graph import report, scan, strongly_connected

ROOT = Path(__file__).resolve().parents[1] / "attnblocks"


def test_strongly_connected_components_of_a_known_graph():
    edges = {"a": {"b": False}, "b": {"c": True}, "c": {"a": False, "d": False}, "d": {}}
    assert strongly_connected(edges)[0] == ["a", "b", "c"]
    assert sorted(map(len, strongly_connected(edges))) == [1, 3]


def test_report_names_the_cycle_registries_and_lookups():
    text = report()
    assert text.startswith("largest import cycle:")
    assert "attnblocks.hooks._HOOKS" in text
    assert "attnblocks.extend" not in text.splitlines()[0]  # the contract adds no cycle


def test_one_type_registry_and_one_class_hierarchy_lookup():
    data = scan(ROOT)
    type_registries = [r for r in data["registries"] if not r.startswith("attnblocks.models.")]
    # functional._RUNNERS is a cache of runner instances per head group, not a registry
    assert sorted(type_registries) == ["attnblocks.functional._RUNNERS", "attnblocks.hooks._HOOKS"]
    assert [loc.split(":")[0] for loc in data["lookups"]] == ["attnblocks.hooks"]


def test_no_import_cycle_longer_than_two_modules():
    cycles = [c for c in strongly_connected(scan(ROOT)["edges"]) if len(c) > 1]
    assert all(len(c) <= 2 for c in cycles), cycles
