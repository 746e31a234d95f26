"""tools/import_graph: the cycle finder on a known graph, and the report on this checkout."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.import_graph import report, strongly_connected


def test_strongly_connected_components_of_a_known_graph():
    edges = {"a": {"b": False}, "b": {"c": True}, "c": {"a": False, "d": False}, "d": {}}
    assert strongly_connected(edges)[0] == ["a", "b", "c"]
    assert sorted(map(len, strongly_connected(edges))) == [1, 3]


def test_report_names_the_cycle_registries_and_lookups():
    text = report()
    assert text.startswith("largest import cycle:")
    assert "attnblocks.masks._ORACLES" in text and "attnblocks.runners._RUNNERS" in text
    assert "attnblocks.extend" not in text.splitlines()[0]  # the contract adds no cycle
