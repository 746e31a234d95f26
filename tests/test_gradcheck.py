"""``torch.autograd.gradcheck`` in float64 on tiny shapes, through every primitive."""

import pytest
import torch

from attnblocks import Attention, Global, Grid, LePE, RelPosBias, Split, Stripe, Window
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
