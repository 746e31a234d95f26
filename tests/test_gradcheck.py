"""``torch.autograd.gradcheck`` in float64 on tiny shapes, through every primitive."""

import pytest
import torch

from attnblocks import Attention, Global, Grid, LePE, RelPosBias, Split, Stripe, Window, zoo
from helpers import randomize_

SPECS = [
    Attention(partition=Window(2)),
    Attention(partition=Window(2, shift=1), pe=RelPosBias()),
    Attention(partition=Window(2, shift=1), pad="timm"),
    Attention(partition=Window(3), pad="zeros"),
    Attention(partition=Stripe(2), heads=Split(2), pe=LePE()),
    Attention(partition=Global(), pe=LePE()),
    Attention(partition=Grid(2), pe=RelPosBias()),
    Attention(
        heads=Split(Window(2, shift=1), Stripe(1, axis="h")), pe=(RelPosBias(size=5), LePE())
    ),
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_gradcheck_input_and_parameters(spec):
    layer = randomize_(spec.build(4, 2).double(), std=0.5)
    x = torch.randn(1, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    params = [p for p in layer.parameters()]

    def f(x, *ps):
        with torch.nn.utils.stateless._reparametrize_module(
            layer, dict(zip([n for n, _ in layer.named_parameters()], ps))
        ):
            return layer(x)

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in params])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "spec",
    [zoo.cswin(2), zoo.swin(3, shift=1), zoo.nat(3), zoo.dilateformer(3, (1, 2))],
    ids=["cswin", "swin", "nat", "dilateformer"],
)
def test_double_backward_matches_math_kernel(spec):
    """A gradient penalty (``create_graph=True``) through the fused kernels: the second
    derivative equals the one torch's math SDPA (which has one) gives."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    layer = randomize_(spec.build(8, 2).double(), std=0.5, seed=3)
    x0 = torch.randn(2, 7, 7, 8, dtype=torch.float64)

    def penalty_grads():
        x = x0.clone().requires_grad_()
        (g,) = torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
        return torch.autograd.grad(g.square().sum(), [x, *layer.parameters()])

    got = penalty_grads()
    with sdpa_kernel(SDPBackend.MATH):
        want = penalty_grads()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
