"""Every runnable example in examples/ runs to the end in its fast mode, in a fresh process;
``--help`` describes it without running it, and an unknown flag is an error."""

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
    "train_digits.py": [
        "fast mode: 1 epoch",
        "accuracy near chance (0.1) is expected",
        "test accuracy hybrid",
        "test accuracy global",
        "curves:",
    ],
}


def test_examples_are_found():
    assert {p.name for p in EXAMPLES} >= set(PRINTS)


def _missing(path: Path) -> list[str]:
    return [m for m in NEEDS.get(path.name, []) if importlib.util.find_spec(m) is None]


def _skip_if_missing(path: Path) -> None:
    if _missing(path):
        pytest.skip(f"{path.name} needs {_missing(path)} (pip install -e '.[test,examples]')")


def _start(path: Path, *args: str, fast: bool = True) -> subprocess.Popen:
    # this checkout's attnblocks first, whatever is installed; python puts the script's own
    # folder on the path, so examples import their helpers
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1")
    if fast:
        env["ATTNBLOCKS_FAST"] = "1"
    else:
        env.pop("ATTNBLOCKS_FAST", None)  # --help and flag errors must not depend on it
    env.setdefault("OMP_NUM_THREADS", "1")  # several processes share the cores
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(path), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("examples")


@pytest.fixture(scope="module")
def runs(out_dir) -> dict[str, subprocess.Popen]:
    """Start every example at once (they are mostly imports and waiting): the slowest one
    sets the time, not the sum."""
    extra = {"train_digits.py": ["--out", str(out_dir)]}
    fast = {p.name: ["--fast"] if "[--fast]" in p.read_text() else [] for p in EXAMPLES}
    procs = {
        p.name: _start(p, *fast[p.name], *extra.get(p.name, []))
        for p in EXAMPLES
        if not _missing(p)
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def flag_runs() -> dict[tuple[str, str], subprocess.Popen]:
    """Every example with ``--help`` and with a misspelt flag, all started at once."""
    procs = {
        (p.name, flag): _start(p, flag, fast=False)
        for p in EXAMPLES
        if not _missing(p)
        for flag in ("--help", "--fsat")
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_help_describes_it_without_running_it(path, flag_runs):
    _skip_if_missing(path)
    proc = flag_runs[(path.name, "--help")]
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"{path.name} --help failed:\n{stdout}\n{stderr}"
    assert stdout.startswith(f"usage: {path.name}"), stdout
    doc = path.read_text().split('"""')[1]
    first_line = doc.splitlines()[0]
    assert " ".join(first_line.split()[:4]) in " ".join(stdout.split()), stdout  # the docstring
    for text in PRINTS.get(path.name, []):  # nothing ran: none of its output lines
        if text not in doc:
            assert text not in stdout, f"{path.name} --help ran the example:\n{stdout}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_refuses_an_unknown_flag(path, flag_runs):
    _skip_if_missing(path)
    proc = flag_runs[(path.name, "--fsat")]
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, f"{path.name} --fsat did not fail:\n{stdout}\n{stderr}"
    assert "unrecognized arguments: --fsat" in stderr, stderr
    assert not stdout, f"{path.name} --fsat ran the example:\n{stdout}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_in_fast_mode(path, runs):
    _skip_if_missing(path)
    stdout, stderr = runs[path.name].communicate(timeout=300)
    assert runs[path.name].returncode == 0, f"{path.name} failed:\n{stdout}\n{stderr}"
    for text in PRINTS.get(path.name, []):
        assert text in stdout, f"{path.name} did not print {text!r}:\n{stdout}"


def test_train_digits_writes_its_curves(runs, out_dir):
    if _missing(ROOT / "examples" / "train_digits.py"):
        pytest.skip("train_digits.py needs sklearn and tqdm (pip install -e '.[test,examples]')")
    runs["train_digits.py"].wait(timeout=300)
    png = out_dir / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no PNG at {png}"
