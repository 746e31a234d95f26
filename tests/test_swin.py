"""Swin W-MSA / SW-MSA: equal to timm 1.0, the authors' golden outputs and a plain reference."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import zoo
from attnblocks.convert import load_swin, load_timm_swin
from helpers import randomize_
from references.golden import golden_cases, load_golden
from references.plain import swin_attention

timm_swin = pytest.importorskip("timm.models.swin_transformer")


@given(
    H=st.integers(1, 20),
    W=st.integers(1, 20),
    M=st.integers(1, 8),
    shift=st.integers(0, 7),
    heads=st.integers(1, 3),
    d=st.integers(1, 4),
    B=st.integers(1, 2),
    fused=st.booleans(),
)
def test_equals_timm_block_attention(H, W, M, shift, heads, d, B, fused):
    shift = shift % M
    C = heads * d
    block = timm_swin.SwinTransformerBlock(
        C, input_resolution=(H, W), num_heads=heads, window_size=M, shift_size=shift
    ).double()
    randomize_(block, seed=H * 100 + W)
    block.attn.fused_attn = fused
    layer = zoo.swin(M, shift, clamp="timm", pad="timm").build(C, heads).double()
    load_timm_swin(layer, block)
    x = torch.randn(B, H, W, C, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), block._attn(x), atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("case", golden_cases("swin"), ids=lambda c: c["name"])
def test_equals_authors_golden(case):
    g = load_golden(case)
    meta = g["meta"]
    layer = (
        zoo.swin(meta["window"], meta["shift"], pad="error")
        .build(g["x"].shape[-1], meta["heads"])
        .double()
    )
    load_swin(layer, g["params"])
    x = g["x"].clone().requires_grad_(True)
    y = layer(x)
    torch.testing.assert_close(y, g["y"], atol=1e-10, rtol=1e-9)
    if g["grad_x"] is not None:
        (gx,) = torch.autograd.grad(y, x, g["grad_y"])
        torch.testing.assert_close(gx, g["grad_x"], atol=1e-10, rtol=1e-9)


@given(
    n=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    M=st.integers(1, 5),
    shift=st.integers(0, 4),
    heads=st.integers(1, 3),
)
def test_equals_plain_reference(n, M, shift, heads):
    """Divisible maps, no clamp: the authors' algorithm written as loops."""
    shift = shift % M
    H, W, C = n[0] * M, n[1] * M, 2 * heads
    layer = zoo.swin(M, shift, clamp=None).build(C, heads).double()
    randomize_(layer)
    params = {
        "qkv.weight": layer.qkv.weight,
        "qkv.bias": layer.qkv.bias,
        "proj.weight": layer.proj.weight,
        "proj.bias": layer.proj.bias,
        "relative_position_bias_table": layer.pe[0].tables[0],
    }
    x = torch.randn(1, H, W, C, dtype=torch.float64)
    with torch.no_grad():
        ref = swin_attention(params, x, window=M, shift=shift, num_heads=heads)
        torch.testing.assert_close(layer(x), ref, atol=1e-10, rtol=1e-9)
