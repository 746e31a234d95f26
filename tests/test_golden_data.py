"""The golden outputs the suite reads (attention cases and ``models/``) are copies, in
``tests/data/golden``, of the project's shared ``../shared/golden``: byte for byte, every file
present."""

import json

import pytest

from references.golden import GOLDEN_DIR, SHARED_GOLDEN_DIR

COPIES = sorted(p for p in GOLDEN_DIR.rglob("*") if p.is_file())


def test_index_lists_only_copied_cases():
    index = json.loads((GOLDEN_DIR / "index.json").read_text())
    assert index, "the golden index is empty"
    missing = [c["file"] for c in index if not (GOLDEN_DIR / c["file"]).is_file()]
    assert not missing, f"index.json names cases not copied into {GOLDEN_DIR}: {missing}"


@pytest.mark.skipif(not SHARED_GOLDEN_DIR.exists(), reason="no ../shared/golden beside the clone")
@pytest.mark.parametrize("path", COPIES, ids=lambda p: str(p.relative_to(GOLDEN_DIR)))
def test_copy_equals_shared(path):
    shared = SHARED_GOLDEN_DIR / path.relative_to(GOLDEN_DIR)
    assert shared.is_file(), f"{path} has no counterpart {shared}: regenerate, never add by hand"
    assert path.read_bytes() == shared.read_bytes(), f"{path} differs from {shared}: copy it anew"


@pytest.mark.skipif(not SHARED_GOLDEN_DIR.exists(), reason="no ../shared/golden beside the clone")
def test_every_shared_file_is_copied():
    shared = (p.relative_to(SHARED_GOLDEN_DIR) for p in SHARED_GOLDEN_DIR.rglob("*"))
    missing = [str(p) for p in shared if not (GOLDEN_DIR / p).exists()]
    assert not missing, f"copy these from {SHARED_GOLDEN_DIR} into {GOLDEN_DIR}: {missing}"
