"""Every zoo layer and two hybrids compile with ``fullgraph=True`` under grad and no_grad, at a
map size the windows divide and one they do not, equal to eager; ``torch.export`` with dynamic
H, W works or refuses clearly."""

import pytest
import torch

from attnblocks import (
    AttnblocksError,
)
from helpers import SMALL_HYBRIDS, SMALL_ZOO, randomize_

pytestmark = pytest.mark.slow  # ~85 s on 2 cores: CI runs it as a step of its own (-m slow)

LAYERS = {**SMALL_ZOO, **SMALL_HYBRIDS}


@pytest.mark.parametrize("name", list(LAYERS))
def test_compile_fullgraph_grad_and_no_grad(name):
    """A map the windows (3) and stripes (2) divide and one they do not, one under grad (the
    input gradient too) and the other under no_grad, the pairing alternating over the layers
    so that every layer family meets both: the compiled layer equals eager. One graph per
    size (``dynamic=False``: the symbolic re-trace of automatic dynamic shapes would triple
    this test's time; tests/test_compile.py covers size changes with default settings)."""
    torch._dynamo.reset()
    layer = randomize_(LAYERS[name].build(8, 2), seed=1)
    compiled = torch.compile(layer, fullgraph=True, backend="eager", dynamic=False)
    sizes = [(6, 6), (7, 8)]
    if list(LAYERS).index(name) % 2:
        sizes.reverse()
    for hw, grad in zip(sizes, [True, False]):
        x = torch.randn(2, *hw, 8)
        if not grad:
            with torch.no_grad():
                torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)
            continue
        xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
        yc, ye = compiled(xc), layer(xe)
        torch.testing.assert_close(yc, ye, atol=1e-5, rtol=1e-5)
        yc.square().sum().backward()
        ye.square().sum().backward()
        torch.testing.assert_close(xc.grad, xe.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["swin", "nat", "pvtv2"])
def test_export_dynamic_hw_works_or_refuses_clearly(name):
    """Dynamic H, W: the partitions' plans are per map size, so the export either holds for
    other sizes or raises an AttnblocksError that names the partition and says to export per
    size; never an obscure torch error."""
    layer = randomize_(LAYERS[name].build(8, 2), seed=2).eval()
    x = torch.randn(1, 6, 9, 8)
    H, W = torch.export.Dim("H", min=4, max=30), torch.export.Dim("W", min=4, max=30)
    try:
        ep = torch.export.export(layer, (x,), dynamic_shapes=({1: H, 2: W},))
    except AttnblocksError as e:
        assert "export once per map size" in str(e), e
        assert repr(layer.runners[0].group.partition) in str(e), e
        return
    for hw in [(6, 9), (9, 12)]:
        x = torch.randn(1, *hw, 8)
        torch.testing.assert_close(ep.module()(x), layer(x), atol=1e-5, rtol=1e-5)
