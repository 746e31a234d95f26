"""NATTEN compatibility: per-axis kernel and dilation tuples, and functional.attention on
NATTEN's layout against ``natten.functional.na2d`` (skipped where natten is not installed)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    AttnblocksError,
    Dilated,
    Neighborhood,
    RelPosBias,
    Split,
    dense_mask,
    explain,
    from_config,
    to_config,
)
from attnblocks.functional import attention
from helpers import oracle_forward, randomize_

f64 = {"atol": 1e-10, "rtol": 1e-9}


def test_per_axis_specs_normalise_and_round_trip():
    n = Neighborhood((7, 5), dilation=((2, 3),))
    assert n.kernel_size == (7, 5) and n.dilation_size == (2, 3)
    assert Neighborhood((7, 7), dilation=((2, 2),)) == Neighborhood(7, dilation=2)
    assert eval(repr(n)) == n
    assert from_config(to_config(n)) == n
    assert not n.is_generic()
    generic = Dilated(3, dilation=(1, (2, 3)))
    assert generic.is_generic()
    assert generic.resolve(1, 2) == Dilated(3, dilation=((2, 3),))
    assert generic.resolve(0, 2) == Dilated(3)
    assert "7x5 keys 2x3 apart" in explain(Attention(partition=n), (20, 20), 8, 2)


def test_per_axis_fit_error_names_the_axis_and_the_size_needed():
    layer = Attention(partition=Neighborhood((3, 5), dilation=((1, 2),))).build(8, 2)
    with pytest.raises(AttnblocksError, match=r"(?s)size 9 \(width\).*at least 3x10"):
        layer(torch.randn(1, 7, 9, 8))


def test_a_bare_pair_of_dilations_stays_per_group():
    """``dilation=(2, 3)`` keeps its meaning (one per head group): without a split it is
    refused, never read silently as per-axis."""
    with pytest.raises(AttnblocksError, match="one form per head group"):
        Attention(partition=Neighborhood((7, 5), dilation=(2, 3)))
    q = torch.randn(1, 12, 12, 2, 4)
    with pytest.raises(AttnblocksError, match="no head split"):
        attention(q, q, q, Neighborhood((7, 5), dilation=(2, 3)))


@given(
    H=st.integers(1, 10),
    W=st.integers(1, 10),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    ry=st.integers(1, 3),
    rx=st.integers(1, 3),
)
def test_per_axis_oracle_is_the_product_of_one_axis_oracles(H, W, kh, kw, ry, rx):
    """A 2-D neighbourhood is separable: key (y', x') is in the window of (y, x) iff y' is in
    the 1-D window of y (an H x 1 map) and x' in that of x (1 x W)."""
    if kh * ry > H or kw * rx > W:
        with pytest.raises(AttnblocksError, match="cannot fit"):
            dense_mask(Neighborhood((kh, kw), dilation=((ry, rx),)), H, W)
        return
    m = dense_mask(Neighborhood((kh, kw), dilation=((ry, rx),)), H, W)
    rows = dense_mask(Neighborhood((kh, 1), dilation=((ry, 1),)), H, 1)
    cols = dense_mask(Neighborhood((1, kw), dilation=((1, rx),)), 1, W)
    assert torch.equal(m, torch.kron(rows.int(), cols.int()).bool())


@pytest.mark.parametrize("lowering", ["slices", "tiles"])
@settings(max_examples=10)
@given(
    H=st.integers(5, 10),
    W=st.integers(5, 10),
    kernel=st.sampled_from([(3, 5), (5, 3), (4, 2), (1, 3)]),
    dilation=st.sampled_from([(1, 1), (1, 2), (2, 1)]),
    rpb=st.booleans(),
)
def test_per_axis_layer_equals_oracle_both_lowerings(lowering, H, W, kernel, dilation, rpb):
    part = Neighborhood(kernel, dilation=(dilation,))
    if kernel[0] * dilation[0] > H or kernel[1] * dilation[1] > W:
        return
    spec = Attention(partition=part, pe=RelPosBias() if rpb else None)
    layer = randomize_(spec.build(8, 2).double(), seed=1)
    if rpb:
        assert layer.pe[0].tables[0].shape == (2, 2 * kernel[0] - 1, 2 * kernel[1] - 1)
    layer.runners[0].lowering = lowering
    x = torch.randn(2, H, W, 8, dtype=torch.float64, requires_grad=True)
    out, ref = layer(x), oracle_forward(layer, x)
    torch.testing.assert_close(out, ref, **f64)
    g = torch.randn_like(out)
    torch.testing.assert_close(
        torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0], **f64
    )


def test_per_axis_under_a_split_with_rpb():
    spec = Attention(
        partition=Neighborhood((3, 5), dilation=(1, (2, 1))), heads=Split(2), pe=RelPosBias()
    )
    layer = randomize_(spec.build(8, 2).double(), seed=2)
    x = torch.randn(1, 7, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), oracle_forward(layer, x), **f64)


# ---------------------------------------------------------------------------------------------
# natten.functional.na2d (optional): functional.attention on the same tensors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "dilation", "hw"),
    [
        ((3, 5), (1, 2), (10, 11)),
        ((7, 3), (2, 3), (15, 10)),
        ((4, 6), (1, 1), (9, 8)),  # even kernels: the extra key on the low side
        (5, 2, (11, 10)),
        ((2, 7), (3, 1), (6, 9)),  # NATTEN takes kernels >= 2
    ],
)
def test_functional_attention_equals_na2d(kernel, dilation, hw):
    pytest.importorskip("natten")
    from natten.functional import na2d

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, *hw, 2, 16, generator=gen) for _ in range(3))
    ref = na2d(q, k, v, kernel_size=kernel, dilation=dilation)
    dil = (dilation,) if isinstance(dilation, tuple) else dilation
    out = attention(q, k, v, Neighborhood(kernel, dilation=dil))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_functional_attention_scale_equals_na2d():
    pytest.importorskip("natten")
    from natten.functional import na2d

    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 8, 9, 3, 8, generator=gen) for _ in range(3))
    ref = na2d(q, k, v, kernel_size=(3, 5), scale=0.3)
    out = attention(q, k, v, Neighborhood((3, 5)), scale=0.3)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
