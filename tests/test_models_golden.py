"""Whole models: the authors' small full models load through the public loader and give their
logits; the authors' Tiny key layouts load with no missing or unexpected key."""

import filecmp

import pytest
from golden_models import MODELS_DIR, SHARED_MODELS_DIR


def test_golden_models_copy_is_exact():
    """The repository's copy equals ``../shared/golden/models`` (skipped only without it)."""
    if not SHARED_MODELS_DIR.exists():
        pytest.skip(f"{SHARED_MODELS_DIR} is absent")
    theirs = sorted(p.name for p in SHARED_MODELS_DIR.iterdir())
    ours = sorted(p.name for p in MODELS_DIR.iterdir())
    assert ours == theirs
    for name in theirs:
        assert filecmp.cmp(MODELS_DIR / name, SHARED_MODELS_DIR / name, shallow=False), name
