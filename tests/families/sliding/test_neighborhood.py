"""Sliding-window lowerings (slices, tiles) against the dense oracle, the plain loop reference
and NATTEN; border semantics; gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    AttnblocksError,
    Dilated,
    Global,
    LePE,
    Neighborhood,
    Split,
    dense_mask,
)
from attnblocks.families.sliding.kernels import slices_attention, tiles_attention
from attnblocks.families.sliding.plan import check_fits
from helpers import oracle_forward, randomize_

try:
    from tests.references import plain
except ImportError:  # pytest's rootdir insertion of tests/
    from references import plain  # type: ignore[no-redef]

LOWERINGS = ("slices", "tiles")
TOL = {"atol": 1e-10, "rtol": 1e-9}


@st.composite
def fitting(draw, borders=("zeros", "mask", "shift"), max_map: int = 11):
    """A concrete Dilated partition and a map size it fits (H, W >= 1, non-square, tiny)."""
    border = draw(st.sampled_from(borders))
    r = draw(st.integers(1, 3))
    if border == "shift":
        k = draw(st.integers(1, 4))
        H = draw(st.integers(k * r, max(k * r, max_map)))
        W = draw(st.integers(k * r, max(k * r, max_map)))
    else:
        k = draw(st.sampled_from([1, 3, 5]))
        H, W = draw(st.integers(1, max_map)), draw(st.integers(1, max_map))
    return Dilated(k, dilation=r, border=border), H, W


def _heads_first(qkv: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """``(B, H, W, 3, c)`` -> q, k, v as ``(B, heads, H, W, d)``."""
    return [qkv[..., i, :].unflatten(-1, (heads, -1)).permute(0, 3, 1, 2, 4) for i in range(3)]


def _plain(qkv: torch.Tensor, part: Dilated, heads: int) -> torch.Tensor:
    q, k, v = _heads_first(qkv, heads)
    o = plain.neighborhood_attention(q, k, v, part.kernel, part.dilation, part.border)
    return o.permute(0, 2, 3, 1, 4).flatten(-2)


def _run(qkv: torch.Tensor, part: Dilated, heads: int, lowering: str, tile: int = 8):
    scale = (qkv.shape[-1] // heads) ** -0.5
    if lowering == "slices":
        return slices_attention(qkv, part, heads, scale)
    return tiles_attention(qkv, part, heads, scale, tile=tile)


@given(
    case=fitting(borders=("mask", "shift")),
    lowering=st.sampled_from(LOWERINGS),
    B=st.integers(1, 2),
    heads=st.integers(1, 2),
    d=st.integers(1, 4),
)
def test_layer_equals_dense_oracle(case, lowering, B, heads, d):
    part, H, W = case
    layer = randomize_(Attention(partition=part).build(heads * d, heads).double())
    layer.runners[0].lowering = lowering
    x = torch.randn(B, H, W, heads * d, dtype=torch.float64)
    torch.testing.assert_close(layer(x), oracle_forward(layer, x), **TOL)


@given(case=fitting(max_map=8), lowering=st.sampled_from(LOWERINGS), tile=st.integers(1, 5))
def test_lowerings_equal_plain_reference(case, lowering, tile):
    """All three borders, any tile size, against the explicit per-query loop."""
    part, H, W = case
    qkv = torch.randn(1, H, W, 3, 4, dtype=torch.float64)
    out = _run(qkv, part, 2, lowering, tile)
    torch.testing.assert_close(out, _plain(qkv, part, 2), **TOL)


@given(case=fitting(borders=("mask", "shift"), max_map=9))
def test_oracle_equals_reference_key_sets(case):
    part, H, W = case
    allowed = dense_mask(part, H, W).numpy()
    for y in range(H):
        for x in range(W):
            keys = plain.neighborhood_keys(H, W, y, x, part.kernel, part.dilation, part.border)
            expected = np.zeros(H * W, dtype=bool)
            expected[[a * W + b for a, b in keys]] = True
            assert (allowed[y * W + x] == expected).all(), (y, x)
    if part.border == "shift":  # exactly k*k real keys per query
        assert (allowed.sum(1) == part.kernel**2).all()


@given(k=st.integers(1, 6), lowering=st.sampled_from(LOWERINGS), d=st.integers(1, 3))
def test_shift_kernel_equal_to_map_is_global(k, lowering, d):
    layer = randomize_(Attention(partition=Dilated(k, border="shift")).build(2 * d, 2).double())
    ref = Attention(partition=Global()).build(2 * d, 2).double()
    ref.load_state_dict(layer.state_dict())
    layer.runners[0].lowering = lowering
    x = torch.randn(2, k, k, 2 * d, dtype=torch.float64)
    torch.testing.assert_close(layer(x), ref(x), **TOL)


@given(
    k=st.sampled_from([1, 3, 5]),
    r=st.integers(1, 3),
    extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    lowering=st.sampled_from(LOWERINGS),
)
def test_interior_queries_agree_across_borders(k, r, extra, lowering):
    """Where the centred window lies inside the map, all three borders see the same keys."""
    c = r * (k // 2)
    H, W = k * r + extra[0], k * r + extra[1]
    qkv = torch.randn(1, H, W, 3, 6, dtype=torch.float64)
    outs = [_run(qkv, Dilated(k, dilation=r, border=b), 3, lowering) for b in ("zeros", "mask")]
    outs.append(_run(qkv, Neighborhood(k, dilation=r), 3, lowering))
    inner = (slice(None), slice(c, H - c), slice(c, W - c))
    for o in outs[1:]:
        torch.testing.assert_close(o[inner], outs[0][inner], **TOL)


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize(
    "part",
    [
        Dilated(3),
        Dilated(3, dilation=2),
        Dilated(3, border="mask"),
        Dilated(3, dilation=2, border="mask"),
        Neighborhood(3),
        Neighborhood(2, dilation=2),
    ],
    ids=repr,
)
def test_gradcheck_float64(part, lowering):
    qkv = torch.randn(1, 4, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    fn = lambda t: _run(t, part, 1, lowering, tile=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (qkv,), fast_mode=True)
    if part == Dilated(3):  # one full (slow) Jacobian check per lowering
        assert torch.autograd.gradcheck(fn, (qkv,))


def test_layer_backward_same_in_both_lowerings():
    spec = Attention(partition=Dilated(3, dilation=(1, 2)), heads=Split(2))
    grads = []
    for lowering in LOWERINGS:
        layer = randomize_(spec.build(8, 2).double())
        for r in layer.runners:
            r.lowering = lowering
        x = torch.randn(2, 6, 7, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        x.requires_grad_(True)
        layer(x).square().sum().backward()
        grads.append((x.grad, layer.qkv.weight.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **TOL)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_shift_too_small_map_names_kernel_dilation_and_size():
    layer = Attention(partition=Neighborhood(7, dilation=4)).build(8, 2)
    with pytest.raises(AttnblocksError, match=r"kernel_size=7, dilation=4 for an input of size 20"):
        layer(torch.randn(1, 20, 40, 8))
    with pytest.raises(AttnblocksError, match=r"Neighborhood\(3\).*size 2 \(width\)"):
        check_fits(Neighborhood(3), 5, 2)


def test_zeros_border_has_no_dense_mask():
    with pytest.raises(AttnblocksError, match=r"border='zeros' is not a mask"):
        dense_mask(Dilated(3), 4, 4)


def test_window_encoders_are_refused():
    layer = Attention(partition=Dilated(3), pe=LePE()).build(8, 2)
    with pytest.raises(AttnblocksError, match=r"LePEModule adds per-window biases or values"):
        layer(torch.randn(1, 4, 4, 8))


def test_unknown_lowering():
    layer = Attention(partition=Dilated(3)).build(8, 2)
    layer.runners[0].lowering = "fast"
    with pytest.raises(AttnblocksError, match=r"lowering must be one of .* got 'fast'"):
        layer(torch.randn(1, 4, 4, 8))


# ---------------------------------------------------------------------------------------------
# NATTEN (optional): NAT / DiNAT forward against NATTEN's functional na2d on CPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize(
    ("kernel", "dilation", "hw"),
    [(7, 1, (9, 12)), (7, 2, (15, 14)), (3, 3, (10, 9)), (5, 1, (5, 5))],
)
def test_matches_natten(kernel, dilation, hw, lowering):
    natten = pytest.importorskip("natten")
    from natten.functional import na2d

    gen = torch.Generator().manual_seed(0)
    B, heads, d = 2, 2, 16
    qkv = torch.randn(B, *hw, 3, heads * d, generator=gen)
    q, k, v = (qkv[..., i, :].unflatten(-1, (heads, d)).contiguous() for i in range(3))
    ref = na2d(q, k, v, kernel_size=kernel, dilation=dilation).flatten(-2)
    out = _run(qkv, Neighborhood(kernel, dilation=dilation), heads, lowering)
    assert natten.__version__
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
