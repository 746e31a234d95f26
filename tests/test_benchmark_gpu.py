"""benchmarks/gpu.py runs end to end (on the CPU here, ``--quick``); on a GPU machine
``benchmarks/gpu_check.sh`` runs it with ``--device cuda --dtype bf16``."""

import json
import sys

import pytest

from benchmarks import gpu


@pytest.mark.filterwarnings("ignore")
def test_quick_run_writes_every_row(tmp_path):
    result = gpu.main(
        ["--device", "cpu", "--dtype", "fp32", "--quick", "--no-compile", "--cases", "nat",
         "--out", str(tmp_path)]
    )  # fmt: skip
    impls = {(r["case"], r["impl"], r["mode"]) for r in result["rows"]}
    assert ("nat", "layer eager", "fwd+bwd") in impls
    assert ("nat", "layer flex", "fwd") in impls
    assert ("nat", "flex+export", "fwd") in impls
    assert ("nat", "core eager", "fwd") in impls
    assert ("nat", "natten na2d", "fwd") in impls or "natten" not in sys.modules
    assert all(r["ms"] > 0 for r in result["rows"])
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert saved["machine"]["device"] == "cpu" and len(saved["rows"]) == len(result["rows"])
    assert (tmp_path / "gpu.md").read_text().startswith("# Device benchmark: cpu")
