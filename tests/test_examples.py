"""Every runnable example in examples/ runs to the end in its fast mode, in a fresh process."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# an example is a script whose docstring says how to run it; other files are its helpers
EXAMPLES = sorted(
    p for p in (ROOT / "examples").glob("*.py") if "Run: python examples/" in p.read_text()
)
NEEDS = {"compose_published.py": ["timm"], "train_digits.py": ["sklearn", "tqdm"]}
PRINTS = {
    "quickstart.py": ["CSWin", "group 1: heads [2, 4)"],
    "compose_published.py": ["Swin SW-MSA", "timm SwinTransformerBlock vs attnblocks"],
    "hybrids.py": ["windows + grid", "stem grad"],
    "custom_partition.py": [
        "custom partition: Axial()",
        "backend='flex' vs eager",
        "trained 4 steps",
    ],
    "train_digits.py": ["test accuracy hybrid", "test accuracy global"],
}


def test_examples_are_found():
    assert {p.name for p in EXAMPLES} >= set(PRINTS)


def _missing(path: Path) -> list[str]:
    return [m for m in NEEDS.get(path.name, []) if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.Popen]:
    """Start every example at once (they are mostly imports and waiting): the slowest one
    sets the time, not the sum."""
    # this checkout's attnblocks first, whatever is installed; python puts the script's own
    # folder on the path, so examples import their helpers
    env = dict(os.environ, ATTNBLOCKS_FAST="1", MPLBACKEND="Agg", TQDM_DISABLE="1")
    env.setdefault("OMP_NUM_THREADS", "1")  # several processes share the cores
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    procs = {
        p.name: subprocess.Popen(
            [sys.executable, str(p), "--fast"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in EXAMPLES
        if not _missing(p)
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_in_fast_mode(path, runs):
    if _missing(path):
        pytest.skip(f"{path.name} needs {_missing(path)} (pip install -e '.[test,examples]')")
    stdout, stderr = runs[path.name].communicate(timeout=300)
    assert runs[path.name].returncode == 0, f"{path.name} failed:\n{stdout}\n{stderr}"
    for text in PRINTS.get(path.name, []):
        assert text in stdout, f"{path.name} did not print {text!r}:\n{stdout}"
