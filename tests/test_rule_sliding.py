"""A rule that declares it is a sliding window (``RulePartition.sliding``) runs on the sliding
family's eager kernels, checked once per size against the rule.

Reference: dense masked attention with the rule's own mask (float64, ``atol=1e-10``), forward
and input gradient; the kernels run is checked by making the dense lowering raise.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnblocks.extend as extend
from attnblocks import (
    Attention,
    AttnblocksError,
    Dilated,
    Neighborhood,
    RelPosBias,
    RulePartition,
    Split,
    Window,
    cost,
    dense_mask,
    explain,
)
from helpers import masked_reference as reference
from helpers import randomize_

CLOSE = {"atol": 1e-10, "rtol": 1e-9}


class _Ball(RulePartition):
    """Keys at most ``radius * dilation`` away on each axis, on the query's dilation sub-grid:
    ``Dilated(2 * radius + 1, dilation, border="mask")`` stated as a rule."""

    radius: int = 1
    dilation: int = 1
    wrong: bool = False  # declare a window one step too large (refused)

    def allows(self, q, k):
        dy, dx, r = q[0] - k[0], q[1] - k[1], self.radius * self.dilation
        near = (dy.abs() <= r) & (dx.abs() <= r)
        return near & (dy % self.dilation == 0) & (dx % self.dilation == 0)

    def sliding(self, H, W):
        k = 2 * (self.radius + self.wrong) + 1
        return Dilated(k, dilation=self.dilation, border="mask")


@settings(max_examples=15, deadline=None)
@given(
    radius=st.integers(0, 2),
    dilation=st.integers(1, 2),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    B=st.integers(0, 2),
)
def test_a_declared_sliding_window_runs_the_sliding_kernels(radius, dilation, H, W, B):
    part = _Ball(radius, dilation)
    spec = Attention(heads=Split(Window(2), part))
    layer = randomize_(spec.build(8, 4).double())
    x = torch.randn(B, H, W, 8, dtype=torch.float64)
    masks = [dense_mask(Window(2), H, W), dense_mask(part, H, W)]
    xr = x.clone().requires_grad_(True)
    ref = reference(layer, xr, masks)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), xr)

    def refuse(*args, **kwargs):
        raise AssertionError("the rule ran the dense lowering")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(extend, "rule_dense_lowering", refuse)
        xe = x.clone().requires_grad_(True)
        out = layer(xe)
        (grad,) = torch.autograd.grad(out.square().sum(), xe)
    torch.testing.assert_close(out, ref, **CLOSE)
    torch.testing.assert_close(grad, ref_grad, **CLOSE)


def test_a_sliding_declaration_that_contradicts_the_rule_is_refused():
    layer = Attention(partition=_Ball(1, wrong=True)).build(8, 2)
    with pytest.raises(AttnblocksError, match="sliding\\(\\) declares Dilated\\(5"):
        layer(torch.randn(1, 6, 6, 8))

    class _Zeros(_Ball):
        def sliding(self, H, W):
            return Dilated(3)  # border="zeros": not a key set

    with pytest.raises(AttnblocksError, match="border='mask' or 'shift'"):
        Attention(partition=_Zeros()).build(8, 2)(torch.randn(1, 6, 6, 8))


def test_with_an_encoder_the_rule_runs_densely_and_explain_cost_say_so():
    part = _Ball(1)
    text = explain(Attention(partition=part), (9, 9), 8, 2)
    assert "sliding window Dilated(3, border='mask') (checked against the rule)" in text
    # the eager cost counts the sliding window's 9 keys per query, not N x N
    mine = cost(Attention(partition=part), (9, 9), dim=8, num_heads=2)
    theirs = cost(Attention(partition=Dilated(3, border="mask")), (9, 9), dim=8, num_heads=2)
    assert (mine.parts, mine.attn_bytes) == (theirs.parts, theirs.attn_bytes)
    spec = Attention(partition=part, pe=RelPosBias(size=3))
    eager = randomize_(spec.build(8, 2).double())
    dense = Attention(partition=part, pe=RelPosBias(size=3), backend="dense").build(8, 2).double()
    dense.load_state_dict(eager.state_dict())
    x = torch.randn(2, 7, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(eager(x), dense(x), **CLOSE)


def test_neighborhood_declared_on_a_clamped_rule():
    """NAT's clamped window, as a rule from the built-in's own mask, declared as itself."""

    class _Clamped(RulePartition):
        def oracle(self, H, W):
            return dense_mask(Neighborhood(3), H, W).numpy()

        def sliding(self, H, W):
            return Neighborhood(3)

    part = _Clamped()
    layer = randomize_(Attention(partition=part).build(4, 1).double())
    x = torch.randn(1, 5, 6, 4, dtype=torch.float64)
    ref = reference(layer, x, [dense_mask(part, 5, 6)])
    torch.testing.assert_close(layer(x), ref, **CLOSE)
