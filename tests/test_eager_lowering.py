"""The eager backend's gathered fast path against its roll + pad + einops twin."""

import pytest
import torch
from einops import rearrange
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import Attention, Grid, LePE, RelPosBias, Split, Stripe, Window, rect_layout
from attnblocks.backends import eager
from helpers import randomize_


def _spec(kind: str, size: int, shift: int, pe: str):
    part = {
        "window": Window(size, shift=shift % size),
        "grid": Grid(size),
        "stripe": Stripe(size),
    }[kind]
    enc = {"none": None, "bias": RelPosBias(size=(12, 12)), "lepe": LePE()}[pe]
    heads = Split(2) if kind == "stripe" else None
    return Attention(partition=part, heads=heads, pe=enc)


@given(
    kind=st.sampled_from(["window", "grid", "stripe"]),
    size=st.integers(1, 4),
    n=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    shift=st.integers(0, 3),
    pe=st.sampled_from(["none", "bias", "lepe"]),
    B=st.integers(1, 2),
    grad=st.booleans(),
)
def test_gathered_equals_padded_path(kind, size, n, shift, pe, B, grad):
    """Unpadded maps: one gather + folded heads == roll + einops, outputs and gradients."""
    H, W = n[0] * size, n[1] * size
    layer = randomize_(_spec(kind, size, shift, pe).build(4, 2).double())
    qkv = torch.randn(B, H, W, 3, 4, dtype=torch.float64, requires_grad=True)
    for g in layer.groups:
        lay = rect_layout(g.partition, H, W, "mask")
        assert lay.pad == (0, 0)
        part = qkv[..., g.channels[0] : g.channels[1]]
        with torch.set_grad_enabled(grad):
            fast = eager._rect_attention_gathered(part, lay, g, layer.scale, layer.pe, 0.0)
            slow = eager._rect_attention_padded(part, lay, g, layer.scale, layer.pe, 0.0)
        torch.testing.assert_close(fast, slow, atol=1e-12, rtol=1e-10)
        if grad:
            gy = torch.randn_like(fast)
            params = [qkv, *layer.pe.parameters()]
            gf = torch.autograd.grad(fast, params, gy, allow_unused=True)
            gs = torch.autograd.grad(slow, params, gy, allow_unused=True)
            for a, b in zip(gf, gs):
                if a is not None or b is not None:
                    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@given(
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    size=st.integers(1, 3),
    shift=st.integers(0, 2),
    grid=st.booleans(),
)
def test_window_order_is_roll_then_partition(H, W, size, shift, grid):
    H, W = H * size, W * size
    part = Grid(size) if grid else Window(size, shift=shift % size)
    lay = rect_layout(part, H, W, "mask")
    perm, inv = eager.window_order(lay)
    tokens = torch.arange(H * W).view(1, H, W, 1)
    rolled = torch.roll(tokens, (-lay.shift[0], -lay.shift[1]), (1, 2))
    expected = rearrange(rolled, lay.pattern, h=1, wh=lay.window[0], ww=lay.window[1])
    assert torch.equal(perm, expected.reshape(-1))
    assert torch.equal(perm[inv], torch.arange(H * W))


def test_inference_cache_follows_parameter_updates():
    """The cached bias + mask of inference is rebuilt after the table changes in place."""
    layer = Attention(partition=Window(2, shift=1), pe=RelPosBias()).build(4, 2).double().eval()
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        before = layer(x)
        assert torch.equal(layer(x), before)
        layer.pe[0].tables[0].copy_(torch.randn_like(layer.pe[0].tables[0]))
        after = layer(x)
    with torch.enable_grad():
        fresh = layer(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("T", [3, 70])
def test_matmul_and_fused_attention_agree(T):
    q, k, v = (torch.randn(2, 3, T, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.randn(1, 3, T, T, dtype=torch.float64, requires_grad=True)
    a = eager.attend_matmul(q, k, v, mask, 0.3)
    b = eager.attend(q, k, v, mask, 0.3)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    assert eager.use_matmul(q, mask)  # a learned bias in training: matmuls
    assert eager.use_matmul(q, None) == (T <= eager.MATMUL_MAX_TOKENS)
    with torch.no_grad():
        assert not eager.use_matmul(q, mask)
