"""NAT's learned relative position bias (``RelPosBias`` on sliding-window groups): both
lowerings against a per-query loop reference written from the formula, the dense backend and
the oracle; gradients through the table; its sign convention; sizes; the zoo and NAT-T."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    AttnblocksError,
    Dilated,
    Neighborhood,
    RelPosBias,
    Split,
    Window,
    zoo,
)
from attnblocks.families.sliding.kernels import (
    offset_bias,
    slices_attention,
    tile_bias,
    tiles_attention,
)
from helpers import oracle_forward, randomize_

try:
    from tests.references import plain
except ImportError:  # pytest's rootdir insertion of tests/
    from references import plain  # type: ignore[no-redef]

LOWERINGS = ("slices", "tiles")
TOL = {"atol": 1e-10, "rtol": 1e-9}


@st.composite
def nat_cases(draw, borders=("shift", "mask"), max_reach: int = 9):
    """A concrete Dilated partition (kernel 3..7, dilation 1..3) and a map it fits.

    ``kernel * dilation <= max_reach`` keeps the loop reference fast; maps are odd or
    non-square, down to 1x1 for ``border="mask"``.
    """
    border = draw(st.sampled_from(borders))
    k = draw(st.integers(3, 7) if border == "shift" else st.sampled_from([3, 5, 7]))
    r = draw(st.integers(1, max(1, min(3, max_reach // k))))
    lo = k * r if border == "shift" else 1
    H = draw(st.integers(lo, lo + 3))
    W = draw(st.integers(lo, lo + 3))
    return Dilated(k, dilation=r, border=border), H, W


def _heads_first(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, H, W, heads * d)`` -> ``(B, heads, H, W, d)``."""
    return t.unflatten(-1, (heads, -1)).permute(0, 3, 1, 2, 4)


def _reference_layer(layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's forward with the attention from the plain loop reference."""
    g = layer.groups[0]
    q, k, v = layer.qkv(x).unflatten(-1, (3, -1)).unbind(-2)
    q, k, v = (_heads_first(t, layer.num_heads) for t in (q, k, v))
    p = g.partition
    o = plain.neighborhood_attention_rpb(
        q, k, v, layer.pe[0].tables[0], p.kernel, p.dilation, p.border
    )
    return layer.proj(o.permute(0, 2, 3, 1, 4).flatten(-2))


def _layer(part: Dilated, heads: int, d: int, seed: int = 0, **kw):
    spec = Attention(partition=part, pe=RelPosBias(), **kw)
    return randomize_(spec.build(heads * d, heads).double(), std=0.5, seed=seed)


@given(case=nat_cases(), lowering=st.sampled_from(LOWERINGS), heads=st.integers(1, 2))
def test_layer_equals_plain_reference(case, lowering, heads):
    part, H, W = case
    layer = _layer(part, heads, 3)
    layer.runners[0].lowering = lowering
    x = torch.randn(1, H, W, heads * 3, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _reference_layer(layer, x), **TOL)


@given(
    case=nat_cases(borders=("shift", "mask", "zeros"), max_reach=8),
    tile=st.integers(1, 5),
    lowering=st.sampled_from(LOWERINGS),
)
def test_kernels_equal_plain_reference_any_tile(case, tile, lowering):
    """The kernels with their bias argument, any tile size, all three borders (under "zeros"
    an out-of-map slot is a zero key whose logit is its offset's bias)."""
    part, H, W = case
    gen = torch.Generator().manual_seed(H * 100 + W)
    qkv = torch.randn(1, H, W, 3, 4, dtype=torch.float64, generator=gen)
    k = part.kernel
    table = torch.randn(2, 2 * k - 1, 2 * k - 1, dtype=torch.float64, generator=gen)
    if lowering == "slices":
        bias = offset_bias(table, part, H, W)
        out = slices_attention(qkv, part, 2, 0.5**0.5, bias=bias)
    else:
        bias = tile_bias(table, part, H, W, tile)
        out = tiles_attention(qkv, part, 2, 0.5**0.5, tile=tile, bias=bias)
    q, kk, v = (_heads_first(qkv[..., i, :], 2) for i in range(3))
    ref = plain.neighborhood_attention_rpb(q, kk, v, table, k, part.dilation, part.border)
    torch.testing.assert_close(out, ref.permute(0, 2, 3, 1, 4).flatten(-2), **TOL)


@given(case=nat_cases(max_reach=10), lowering=st.sampled_from(LOWERINGS), B=st.integers(1, 2))
def test_dense_backend_and_oracle_equal_eager(case, lowering, B):
    part, H, W = case
    layer = _layer(part, 2, 2)
    layer.runners[0].lowering = lowering
    dense = Attention(partition=part, pe=RelPosBias(), backend="dense").build(4, 2).double()
    dense.load_state_dict(layer.state_dict())
    x = torch.randn(B, H, W, 4, dtype=torch.float64)
    out = layer(x)
    torch.testing.assert_close(dense(x), out, **TOL)
    torch.testing.assert_close(oracle_forward(layer, x), out, **TOL)


def test_hybrid_of_windows_and_neighbourhoods_one_module():
    """One RelPosBias on Split(Window, Neighborhood): Swin's table for the window group, NAT's
    for the other, under the same key pattern; eager equals dense."""
    spec = Attention(heads=Split(Window(3), Neighborhood(3, dilation=2)), pe=RelPosBias())
    layer = randomize_(spec.build(8, 4).double(), std=0.5)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items() if k.startswith("pe.")}
    assert shapes == {"pe.0.tables.0": (25, 2), "pe.0.tables.1": (2, 5, 5)}
    dense = Attention(heads=spec.heads, pe=RelPosBias(), backend="dense").build(8, 4).double()
    dense.load_state_dict(layer.state_dict())
    x = torch.randn(2, 9, 7, 8, dtype=torch.float64)
    for lowering in LOWERINGS:
        layer.runners[1].lowering = lowering
        torch.testing.assert_close(layer(x), dense(x), **TOL)


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("r", [1, 2])
def test_bias_is_indexed_by_key_minus_query(lowering, r):
    """With zero logits, a table that is large at one offset only makes every query copy the
    value of the key at that offset: (+1, -1) steps, i.e. one dilation step down and left."""
    part = Neighborhood(3, dilation=r)
    layer = Attention(partition=part, pe=RelPosBias()).build(2, 1).double()
    H, W = 3 * r + 2, 3 * r + 3
    with torch.no_grad():
        layer.qkv.weight.zero_()
        layer.qkv.weight[4:, :] = torch.eye(2, dtype=torch.float64)  # v = x, q = k = 0
        layer.qkv.bias.zero_()
        layer.proj.weight.copy_(torch.eye(2))
        layer.proj.bias.zero_()
        layer.pe[0].tables[0].zero_()
        layer.pe[0].tables[0][0, 2 + 1, 2 - 1] = 100.0  # [dy + k-1, dx + k-1]
    layer.runners[0].lowering = lowering
    x = torch.randn(1, H, W, 2, dtype=torch.float64)
    out = layer(x)
    inner = out[:, r : H - 2 * r, 2 * r : W - r]  # queries whose window is centred
    torch.testing.assert_close(inner, x[:, 2 * r : H - r, r : W - 2 * r], atol=1e-12, rtol=0)


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize(
    ("part", "hw"),
    [(Neighborhood(3), (3, 4)), (Neighborhood(2, dilation=2), (4, 5)), (Dilated(3), (3, 3))],
    ids=repr,
)
def test_gradcheck_through_table_float64(part, hw, lowering):
    """Full Jacobian w.r.t. the table (the queries' path is checked in test_neighborhood)."""
    gen = torch.Generator().manual_seed(0)
    H, W = hw
    qkv = torch.randn(1, H, W, 3, 2, dtype=torch.float64, generator=gen)
    k = part.kernel
    table = torch.randn(1, 2 * k - 1, 2 * k - 1, dtype=torch.float64, generator=gen)
    table.requires_grad_(True)

    def fn(tab):
        if lowering == "slices":
            bias = offset_bias(tab, part, H, W)
            return slices_attention(qkv, part, 1, 0.7, bias=bias)
        bias = tile_bias(tab, part, H, W, 2)
        return tiles_attention(qkv, part, 1, 0.7, tile=2, bias=bias)

    assert torch.autograd.gradcheck(fn, (table,))


def test_layer_table_gets_gradients_in_both_lowerings():
    grads = []
    for lowering in LOWERINGS:
        layer = _layer(Neighborhood(3, dilation=2), 2, 2)
        layer.runners[0].lowering = lowering
        x = torch.randn(2, 7, 8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        layer(x).square().sum().backward()
        grads.append(layer.pe[0].tables[0].grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], **TOL)


# ---------------------------------------------------------------------------------------------
# sizes, errors, the zoo
# ---------------------------------------------------------------------------------------------


def test_table_is_heads_by_2k_minus_1():
    layer = zoo.dinat(5, dilation=3).build(12, 3)
    assert tuple(layer.pe[0].tables[0].shape) == (3, 9, 9)
    split = Attention(partition=Neighborhood(7, dilation=(1, 2)), heads=Split(2), pe=RelPosBias())
    assert [tuple(t.shape) for t in split.build(16, 4).pe[0].tables] == [(2, 13, 13)] * 2


def test_size_must_match_the_kernel():
    spec = Attention(partition=Neighborhood(3), pe=RelPosBias(size=5))
    with pytest.raises(
        AttnblocksError,
        match=r"RelPosBias\(size=5\) does not fit head group 0: Neighborhood\(3\) sizes its "
        r"table by its kernel, 3x3 .* but size=5x5 was given",
    ):
        spec.build(8, 2)
    assert Attention(partition=Neighborhood(3), pe=RelPosBias(size=3)).build(8, 2)


def test_zoo_nat_and_dinat_have_the_bias_unless_turned_off():
    assert repr(zoo.nat()) == "Attention(partition=Neighborhood(7), pe=RelPosBias())"
    assert repr(zoo.dinat(7, 2)) == (
        "Attention(partition=Neighborhood(7, dilation=2), pe=RelPosBias())"
    )
    assert repr(zoo.nat(rpb=False)) == "Attention(partition=Neighborhood(7))"
    assert repr(zoo.dinat(7, 2, rpb=False)) == "Attention(partition=Neighborhood(7, dilation=2))"
