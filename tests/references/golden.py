"""Loaders for the golden outputs of the authors' own attention code.

The golden cases are copied into the repository, ``tests/data/golden`` (one ``.npz`` per case
plus ``index.json``), from the project's shared ``../shared/golden``;
``tests/test_golden_data.py`` checks the copies against it where it is present. Every array is
float64; parameters are stored under the authors' key names as ``param/<key>``. Loading never
unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"
SHARED_GOLDEN_DIR = Path(__file__).resolve().parents[3] / "shared" / "golden"


def golden_cases(family: str | None = None) -> list[dict[str, Any]]:
    """Entries of ``index.json`` (optionally of one family)."""
    cases: list[dict[str, Any]] = json.loads((GOLDEN_DIR / "index.json").read_text())
    if family is not None:
        cases = [c for c in cases if c["family"] == family]
    return cases


def _resolve(name_or_file: str | Path | dict[str, Any]) -> Path:
    """Path of a case given its index entry, file name, path or case name."""
    if isinstance(name_or_file, dict):
        return GOLDEN_DIR / name_or_file["file"]
    path = Path(name_or_file)
    if path.is_absolute() and path.exists():
        return path
    if (GOLDEN_DIR / path).exists():
        return GOLDEN_DIR / path
    for case in golden_cases():
        if case["name"] == str(name_or_file) or Path(case["file"]).stem == str(name_or_file):
            return GOLDEN_DIR / case["file"]
    raise FileNotFoundError(f"no golden case {name_or_file!r} in {GOLDEN_DIR}")


def load_golden(name_or_file: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Load one case.

    Returns ``{"meta": dict, "params": {key: float64 tensor}, "x": tensor, "y": tensor,
    "grad_y": tensor | None, "grad_x": tensor | None}``; ``x, y, grad_*: (B, H, W, C)``.
    """
    with np.load(_resolve(name_or_file), allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        params = {
            key[len("param/") :]: torch.from_numpy(f[key].astype(np.float64))
            for key in f.files
            if key.startswith("param/")
        }

        def get(key: str) -> torch.Tensor | None:
            return torch.from_numpy(f[key].astype(np.float64)) if key in f.files else None

        return {
            "meta": meta,
            "params": params,
            "x": get("x"),
            "y": get("y"),
            "grad_y": get("grad_y"),
            "grad_x": get("grad_x"),
        }
