"""Cost models of sliding windows and downsampled keys against FlopCounterMode and the oracle."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from attnblocks import (
    Attention,
    AttnblocksError,
    Dilated,
    Downsample,
    LocalConv,
    Neighborhood,
    Split,
    Window,
    dense_mask,
)
from attnblocks.cost import cost
from attnblocks.families.sliding.cost import sliding_cost
from attnblocks.models.summary import _custom_flops

aten = torch.ops.aten


def _elementwise_mac(a, b, *args, out_shape=None, **kwargs) -> int:
    """2 flops per output element of a product of two same-rank tensors (a q.k or w.v term of
    the slices lowering; a product with a scalar, such as the logit scale, is not a MAC)."""
    if not (isinstance(a, torch.Size) and isinstance(b, torch.Size)) or len(a) != len(b):
        return 0
    return 2 * out_shape.numel()


def _addcmul_mac(acc, a, b, *args, out_shape=None, **kwargs) -> int:
    return 2 * out_shape.numel()


# FlopCounterMode counts only the matmul family; the slices lowering does its products
# elementwise, so count those too (a multiply-add per output element). _custom_flops gives the
# CPU flash SDPA kernel its formula (torch 2.14's registry has none), as summary() does.
ELEMENTWISE = {aten.mul: _elementwise_mac, aten.addcmul: _addcmul_mac}
MAPPING = {**_custom_flops(), **ELEMENTWISE}


def _counted_macs(layer, x) -> int:
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=MAPPING) as counter:
        layer(x)
    return counter.get_total_flops() // 2


@st.composite
def sliding_specs(draw, borders=("zeros", "mask", "shift")):
    """A ``Dilated`` spec (one or two head groups) and an ``H x W`` map it fits."""
    border = draw(st.sampled_from(borders))
    k = draw(st.sampled_from([3, 4, 5] if border == "shift" else [3, 5]))
    rs = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    lo = k * max(rs) if border == "shift" else 1
    H, W = draw(st.integers(lo, lo + 5)), draw(st.integers(lo, lo + 5))
    part = Dilated(k, dilation=tuple(rs), border=border)
    heads = Split(len(rs)) if len(rs) > 1 else None
    return Attention(partition=part, heads=heads, backend="eager"), H, W


@settings(max_examples=15)
@given(
    case=sliding_specs(),
    B=st.integers(1, 2),
    lowering=st.sampled_from([None, "slices", "tiles"]),
)
def test_sliding_macs_equal_the_flop_counter(case, B, lowering):
    """Exact (tolerance 0), for the inference choice of lowering and for each forced one."""
    spec, H, W = case
    n = spec.heads.count if spec.heads else 1
    layer = spec.build(4 * n, 2 * n)
    x = torch.randn(B, H, W, 4 * n)
    c = cost(layer, (H, W), batch=B)
    macs = c.macs
    if lowering is not None:
        for r in layer.runners:
            r.lowering = lowering
        forced = sum(sliding_cost(g, H, W, B, 4, lowering).attention_macs for g in layer.groups)
        macs += forced - c.parts["attention"]
    assert macs == _counted_macs(layer, x)


@settings(max_examples=10)
@given(case=sliding_specs(borders=("mask", "shift")), B=st.integers(1, 2))
def test_sliding_dense_macs_equal_the_flop_counter(case, B):
    spec, H, W = case
    n = spec.heads.count if spec.heads else 1
    layer = Attention(partition=spec.partition, heads=spec.heads, backend="dense").build(4 * n, n)
    assert cost(layer, (H, W), batch=B).macs == _counted_macs(layer, torch.randn(B, H, W, 4 * n))


@given(case=sliding_specs(borders=("mask", "shift")))
def test_sliding_keys_per_query_equal_the_oracle(case):
    """Mean (rel 1e-12) and max (exact) of the dense oracle's row sums, per head group."""
    spec, H, W = case
    for g in spec.groups(4 * (spec.heads.count if spec.heads else 1), 2):
        keys = dense_mask(g.partition, H, W).sum(-1).double()
        for backend in ("eager", "dense"):
            one = Attention(partition=g.partition, backend=backend)
            mean, most = cost(one, (H, W), dim=4, num_heads=2).keys_per_query
            assert mean == pytest.approx(keys.mean().item(), rel=1e-12)
            assert most == keys.max().item()


def test_zero_border_counts_every_slot():
    """Under border='zeros' out-of-map keys are zero vectors in the softmax: k*k per query."""
    c = cost(Attention(partition=Dilated(5, dilation=2)), (3, 4), dim=4, num_heads=1)
    assert c.keys_per_query == (25.0, 25)


@st.composite
def downsample_specs(draw):
    ratios = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    part = Downsample(
        tuple(ratios), act=draw(st.sampled_from([None, "gelu"])), conv1x1=draw(st.booleans())
    )
    window = draw(st.booleans())  # a hybrid with a group reading the fused projection
    parts = [part.resolve(i, len(ratios)) for i in range(len(ratios))]
    parts += [Window(2)] if window else []
    heads = Split(*parts) if len(parts) > 1 else None
    pe = draw(st.sampled_from([None, LocalConv(), LocalConv(kernel=5)]))
    return Attention(partition=None if heads else part, heads=heads, pe=pe, backend="eager")


@settings(max_examples=15)
@given(spec=downsample_specs(), H=st.integers(3, 8), W=st.integers(3, 8), B=st.integers(1, 2))
def test_downsample_macs_equal_the_flop_counter(spec, H, W, B):
    """Exact: q, the fused kv of other groups, each group's strided conv, kv and LocalConv."""
    n = spec.heads.count if spec.heads else 1
    layer = spec.build(4 * n, 2 * n)
    x = torch.randn(B, H, W, 4 * n)
    c = cost(layer, (H, W), batch=B)
    assert c.macs == _counted_macs(layer, x)
    assert c.macs == sum(c.parts.values())


def test_downsample_counts_reduced_keys():
    c = cost(Attention(partition=Downsample(4)), (9, 10), dim=8, num_heads=2)
    assert c.keys_per_query == (4.0, 4)
    assert c.parts["attention"] == 2 * 90 * 4 * 8
    assert c.parts["qkv"] == 90 * 8 * 8  # q only: the group makes its own k and v
    assert c.parts["encoders"] == 4 * 8 * 8 * 16 + 4 * 8 * 16  # strided conv + kv


# --- errors -----------------------------------------------------------------------------------


def test_downsample_on_dense_raises():
    spec = Attention(partition=Downsample(2), backend="dense")
    with pytest.raises(AttnblocksError, match=r"backend='dense' has no lowering for Downsample"):
        cost(spec, (8, 8), dim=4, num_heads=1)


def test_downsample_pad_error_on_indivisible_map_raises():
    spec = Attention(partition=Downsample(2), pad="error")
    with pytest.raises(AttnblocksError, match=r"Downsample\(2\) cannot reduce a 7x8 token map"):
        cost(spec, (7, 8), dim=4, num_heads=1)


def test_sliding_cost_unknown_lowering_raises():
    g = Attention(partition=Neighborhood(3)).groups(4, 1)[0]
    with pytest.raises(
        AttnblocksError, match=r"lowering must be 'slices', 'tiles' or None, got 'x'"
    ):
        sliding_cost(g, 6, 6, 1, 4, "x")


def test_sliding_on_a_small_map_raises():
    with pytest.raises(AttnblocksError, match=r"Neighborhood\(5\) cannot fit its window on a 4x8"):
        cost(Attention(partition=Neighborhood(5)), (4, 8), dim=4, num_heads=1)
