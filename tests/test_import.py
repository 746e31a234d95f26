"""``import attnblocks`` stays light: no compile machinery until something compiles."""

import os
import subprocess
import sys

import attnblocks
from attnblocks import _cache


def test_import_does_not_load_dynamo():
    code = "import sys, attnblocks; print('torch._dynamo' in sys.modules)"
    root = os.path.dirname(os.path.dirname(attnblocks.__file__))
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"


def test_assume_constant_matches_dynamo():
    """``_cache`` marks constant functions as Dynamo's decorator does, without importing it."""
    import torch._dynamo

    def f():
        return 1

    def g():
        return 1

    marked = torch._dynamo.assume_constant_result(f)
    assert vars(marked) == vars(_cache._assume_constant(g)) == {"_dynamo_marked_constant": True}
    assert torch.compiler.is_compiling() is False
