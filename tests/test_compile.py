"""torch.compile(fullgraph=True): the zoo one-liners and a hybrid compile, forward and backward,
and match eager. Kept to a few tiny cases: compiling is slow on 2 cores.
"""

import dataclasses

import pytest
import torch

from attnblocks import (
    Attention,
    AttnblocksError,
    Dilated,
    LePE,
    Neighborhood,
    RelPosBias,
    Split,
    Stripe,
    Window,
    zoo,
)
from helpers import randomize_

pytestmark = pytest.mark.filterwarnings("error:Dynamo detected a call to a `functools.lru_cache")

CASES = {
    "swin": zoo.swin(3, shift=1),
    "cswin": zoo.cswin(2),
    "hybrid": Attention(
        heads=Split(Window(3, shift=1), Stripe(2, axis="h")), pe=(LePE(), RelPosBias(size=8))
    ),
    "swinv2": zoo.swinv2(3, shift=1),
    "maxvit_block": zoo.maxvit_block(3),
    "maxvit_grid": zoo.maxvit_grid(3),
    "dilateformer": zoo.dilateformer(3, (1, 2)),
    "nat": zoo.nat(3),
    "dinat": zoo.dinat(3, 2),
    "pvtv2": zoo.pvtv2(2),
    "shunted": zoo.shunted(4),
    "shunted_sr1": zoo.shunted(1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fullgraph_forward_backward_matches_eager(name):
    """Dynamo's "eager" backend: the full graph, without the time of AOT tracing or codegen."""
    torch._dynamo.reset()
    layer = randomize_(CASES[name].build(8, 2).double(), seed=1)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    for hw in ((6, 7),):  # a map that needs padding (and shift masks)
        x = torch.randn(2, *hw, 8, dtype=torch.float64, requires_grad=True)
        g = torch.randn(2, *hw, 8, dtype=torch.float64)
        y, yc = layer(x), compiled(x)
        torch.testing.assert_close(yc, y, atol=1e-12, rtol=1e-12)
        params = [x, *layer.parameters()]
        for a, b in zip(torch.autograd.grad(yc, params, g), torch.autograd.grad(y, params, g)):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["nat", "dilateformer"])
def test_successive_sizes_recompile_with_their_own_plans(name):
    """Sliding-window plans are constants per map size: a new size recompiles (a guard on the
    size), it never reuses another size's indices or masks, and nothing breaks the graph."""
    torch._dynamo.reset()
    layer = randomize_(CASES[name].build(8, 2).double(), seed=4)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    for hw in ((6, 7), (9, 5), (3, 11), (6, 7)):
        x = torch.randn(1, *hw, 8, dtype=torch.float64)
        torch.testing.assert_close(compiled(x), layer(x), atol=1e-12, rtol=1e-12)


def test_aot_backward_matches_eager():
    """AOT autograd traces the backward graph too (functionalised masks, gathers, rolls)."""
    torch._dynamo.reset()
    layer = randomize_(CASES["swin"].build(4, 1).double(), seed=3)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(1, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    y, yc = layer(x), compiled(x)
    torch.testing.assert_close(yc, y, atol=1e-12, rtol=1e-12)
    params = [x, *layer.parameters()]
    grads = torch.autograd.grad(y.sum(), params)
    for a, b in zip(torch.autograd.grad(yc.sum(), params), grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_inductor_forward_matches_eager():
    torch._dynamo.reset()
    layer = randomize_(zoo.swin(2, shift=1).build(4, 1), seed=2).eval()
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)


def test_inductor_dilateformer_matches_eager():
    """Inductor with several sliding-window groups: each group's plan is its own graph constant
    (constants of one function once clashed in AOT autograd)."""
    torch._dynamo.reset()
    layer = randomize_(CASES["dilateformer"].build(8, 2), seed=6).eval()
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(1, 6, 7, 8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)


def test_inductor_flex_on_cpu_matches_eager():
    """backend='flex' compiled by inductor on CPU: shifted windows on a padded map (the mask
    enters the fused kernel as a graph constant) and stripes (once silently wrong there: the
    kernel read v's base buffer) match the eager lowering."""
    torch._dynamo.reset()
    spec = Attention(heads=Split(Window(3, shift=1), Stripe(2, axis="h")), backend="flex")
    layer = randomize_(spec.build(8, 2), seed=5).eval()
    eager = dataclasses.replace(spec, backend="eager").build(8, 2).eval()
    eager.load_state_dict(layer.state_dict())
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(2, 5, 7, 8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), atol=1e-5, rtol=1e-5)


def test_inductor_flex_sliding_on_cpu_matches_eager():
    """Sliding windows on flex, compiled by inductor on CPU (sub-grid-major tokens, the
    coordinates as graph constants), two groups: equal to the eager lowering."""
    torch._dynamo.reset()
    parts = Split(Neighborhood(3), Dilated(3, dilation=2, border="mask"))
    spec = Attention(heads=parts, backend="flex")
    layer = randomize_(spec.build(8, 2), seed=7).eval()
    eager = dataclasses.replace(spec, backend="eager").build(8, 2).eval()
    eager.load_state_dict(layer.state_dict())
    x = torch.randn(2, 9, 7, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            torch.compile(layer, fullgraph=True)(x), eager(x), atol=1e-5, rtol=1e-5
        )


def test_inductor_flex_with_bias_on_cpu_raises():
    torch._dynamo.reset()
    spec = Attention(partition=Window(3), pe=RelPosBias(), backend="flex")
    compiled = torch.compile(spec.build(8, 2).eval(), fullgraph=True)
    # fullgraph Dynamo re-raises a user error as Unsupported("Observed exception") with our text
    expected = r"backend='flex' under torch.compile on CPU cannot add the encoders' per-window bias"
    with torch.no_grad(), pytest.raises((AttnblocksError, RuntimeError), match=expected):
        compiled(torch.randn(1, 6, 6, 8))


@pytest.mark.parametrize("name", ["swin", "swinv2", "hybrid"])
def test_first_call_under_no_grad_at_divisible_sizes(name):
    """Compiled, first called under no_grad on maps the windows divide (the standard case; the
    lookup of a weight-keyed bias cache once made a data-dependent expression here), then
    under grad; eager calls after it return what they returned before."""
    torch._dynamo.reset()
    layer = randomize_(CASES[name].build(8, 2).double(), seed=8)
    x = torch.randn(2, 6, 6, 8, dtype=torch.float64)
    before = layer(x).detach()
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), before, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(compiled(x), before, atol=1e-12, rtol=1e-12)
    after = layer(x)
    assert type(after) is torch.Tensor
    torch.testing.assert_close(after, before, atol=0, rtol=0)


def test_inductor_cswin_across_map_sizes():
    """Inductor with the default dynamic settings on CSWin's second map size (the recompile
    marks the sizes dynamic; it once failed with "cannot determine truth value of
    Relational")."""
    torch._dynamo.reset()
    layer = randomize_(CASES["cswin"].build(8, 2), seed=9).eval()
    compiled = torch.compile(layer, fullgraph=True)
    with torch.no_grad():
        for hw in ((4, 6), (6, 8)):
            x = torch.randn(1, *hw, 8)
            torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)
