"""The eager backend's gathered fast paths against its roll + pad + einops twin, and the layer's
window-order-first path against the per-group one."""

import pytest
import torch
from einops import rearrange
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    Global,
    Grid,
    LePE,
    RelPosBias,
    Split,
    Stripe,
    Window,
    kernels,
    rect_layout,
)
from attnblocks.families.rect import eager
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


def _check_grads(fast, slow, params):
    gy = torch.randn_like(fast)
    gf = torch.autograd.grad(fast, params, gy, allow_unused=True)
    gs = torch.autograd.grad(slow, params, gy, allow_unused=True, retain_graph=True)
    for a, b in zip(gf, gs):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


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
    """Unpadded maps: one gather + attention in window order == roll + einops, outputs and
    gradients (float64 1e-12)."""
    H, W = n[0] * size, n[1] * size
    layer = randomize_(_spec(kind, size, shift, pe).build(4, 2).double())
    qkv = torch.randn(B, H, W, 3, 4, dtype=torch.float64, requires_grad=True)
    for g in layer.groups:
        lay = rect_layout(g.partition, H, W, pad="mask")
        assert lay.pad == (0, 0)
        part = qkv[..., g.channels[0] : g.channels[1]]
        with torch.set_grad_enabled(grad):
            fast = eager._rect_attention_gathered(part, lay, g, layer.scale, layer.pe, 0.0)
            slow = eager._rect_attention_padded(part, lay, g, layer.scale, layer.pe, 0.0)
        torch.testing.assert_close(fast, slow, atol=1e-12, rtol=1e-10)
        if grad:
            _check_grads(fast, slow, [qkv, *layer.pe.parameters()])


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
    lay = rect_layout(part, H, W, pad="mask")
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


def test_grouped_qkv_cache_follows_parameter_updates():
    """Inference caches each group's rows of the qkv weight; an in-place update of the weight
    (an optimizer step) is seen by the next call."""
    layer = Attention(partition=Stripe(2), heads=Split(2)).build(8, 2).double().eval()
    x = torch.randn(1, 4, 4, 8, dtype=torch.float64)
    with torch.no_grad():
        before = layer(x)
        assert torch.equal(layer(x), before)
        layer.qkv.weight.add_(torch.randn_like(layer.qkv.weight))
        after = layer(x)
    fresh = layer(x)  # grad mode: gathered afresh, not cached
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("T", [3, 70])
def test_matmul_and_fused_attention_agree(T):
    q, k, v = (torch.randn(2, 3, T, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.randn(1, 3, T, T, dtype=torch.float64, requires_grad=True)
    a = kernels.attend_matmul(q, k, v, mask, 0.3)
    b = kernels.attend(q, k, v, mask, 0.3)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    assert kernels.use_matmul(q, mask)  # a learned bias in training: matmuls
    assert kernels.use_matmul(q, None) == (T <= kernels.MATMUL_MAX_TOKENS)
    with torch.no_grad():
        assert not kernels.use_matmul(q, mask)


@pytest.mark.parametrize("pe", [None, RelPosBias(size=(12, 12))])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize(
    "part, hw",
    [
        (Window((9, 8)), (18, 16)),  # 72 tokens: head loop
        (Window((9, 8), shift=(4, 3)), (18, 16)),  # masked: head loop, mask per window
        (Window(12, shift=6), (24, 12)),  # 144 tokens, masked: folded heads
        (Grid((12, 11)), (24, 11)),  # 132 tokens, unmasked: SDPA on views (loop: learned bias)
    ],
)
def test_long_windows_equal_padded_path(part, hw, grad, pe):
    """Windows past the head-loop thresholds == roll + einops, outputs and gradients (float64
    1e-12): through the gathered path (SDPA on strided views; long masked windows folded into
    the head axis) and through :func:`ordered_attention` itself (masks per window on views)."""
    layer = randomize_(Attention(partition=part, pe=pe).build(4, 2).double())
    qkv = torch.randn(2, *hw, 3, 4, dtype=torch.float64, requires_grad=True)
    (g,) = layer.groups
    lay = rect_layout(g.partition, *hw, pad="mask")
    perm, inv = eager.window_order(lay)
    with torch.set_grad_enabled(grad):
        slow = eager._rect_attention_padded(qkv, lay, g, layer.scale, layer.pe, 0.0)
        fast = eager._rect_attention_gathered(qkv, lay, g, layer.scale, layer.pe, 0.0)
        tokens = qkv.reshape(2, -1, 3, 4)[:, perm]
        views = eager.ordered_attention(tokens, lay, g, layer.scale, layer.pe)[:, inv]
    for out in (fast, views.view(slow.shape)):
        torch.testing.assert_close(out, slow, atol=1e-12, rtol=1e-10)
        if grad:
            _check_grads(out, slow, [qkv, *layer.pe.parameters()])


@given(
    kind=st.sampled_from(["window", "grid", "stripe", "global", "split", "hybrid"]),
    size=st.integers(1, 5),
    n=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    shift=st.integers(0, 4),
    pe=st.sampled_from(["none", "bias", "lepe"]),
    B=st.integers(1, 2),
    grad=st.booleans(),
)
def test_window_order_first_equals_per_group_path(kind, size, n, shift, pe, B, grad):
    """Groups of windows: x gathered into each group's window order before its qkv projection
    (one group: the output projected there too) == qkv projected on the map and gathered per
    group; outputs and the gradients of x and of every parameter (float64 1e-12)."""
    H, W = n[0] * size, n[1] * size
    B = B if kind != "window" else B * 8  # enough shifted windows to take the head loop
    heads = None
    part = {
        "window": Window(size, shift=shift % size),
        "grid": Grid(size),
        "stripe": Stripe(size, axis="v" if shift % 2 else "h"),
        "global": Global(),
        "split": Stripe(size),  # CSWin: a horizontal and a vertical group
        "hybrid": None,
    }[kind]
    if kind == "split":
        heads = Split(2)
    if kind == "hybrid":  # two groups of one layout share the gathered x, a third its own
        heads = Split(
            Window(size, shift=shift % size), Window(size, shift=shift % size), Grid(size)
        )
    enc = {"none": None, "bias": RelPosBias(size=(12, 12)), "lepe": LePE()}[pe]
    if kind == "global" and pe == "bias":
        enc = None  # the table is for windows up to 12x12
    layer = randomize_(Attention(partition=part, heads=heads, pe=enc).build(12, 6).double())
    assert layer._orderable
    x = torch.randn(B, H, W, 12, dtype=torch.float64, requires_grad=True)
    with torch.set_grad_enabled(grad):
        fast = layer._forward_ordered(layer._as_map(x, None))
        slow = layer._forward_groups(layer._as_map(x, None))
    few = any(  # masked windows too few to loop over heads fold instead (per-group path)
        rect_layout(g.partition, H, W).needs_mask and B * (H // size) * (W // size) < 16
        for g in layer.groups
    )
    assert (fast is None) == few
    if fast is not None:
        torch.testing.assert_close(fast, slow, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(layer(x), slow, atol=1e-12, rtol=1e-10)
    if grad and fast is not None:
        _check_grads(fast, slow, [x, *layer.parameters()])


def test_window_order_first_where_it_applies():
    """Groups of unpadded windows take it; padded maps, groups with their own keys, rotary
    encoders and scores that transform q and k on the map keep the per-group path."""
    from attnblocks import AxialRoPE, Cosine, Downsample

    x = torch.randn(4, 8, 8, 8)  # 16 shifted windows: enough to loop over heads
    for spec in (
        Attention(partition=Window(4, shift=2)),
        Attention(partition=Stripe(2), heads=Split(2)),
    ):
        layer = spec.build(8, 2)
        assert layer._orderable and layer._forward_ordered(x) is not None
        assert layer._forward_ordered(torch.randn(4, 9, 8, 8)) is None  # needs padding
    shifted = Attention(partition=Window(4, shift=2)).build(8, 2)
    assert shifted._forward_ordered(x[:1]) is None  # 4 masked windows: folded heads instead
    for spec in (
        Attention(heads=Split(Window(4), Downsample(2))),
        Attention(partition=Window(4), pe=AxialRoPE()),
        Attention(partition=Window(4), score=Cosine()),
    ):
        assert not spec.build(8, 2)._orderable


@given(
    H=st.integers(1, 12),
    W=st.integers(1, 12),
    wh=st.integers(1, 4),
    ww=st.integers(1, 4),
    grid=st.booleans(),
)
def test_identity_order_is_detected_exactly(H, W, wh, ww, grid):
    """``is_identity_order`` (a rule on the geometry) == the permutation being the identity."""
    H, W = H * wh, W * ww
    lay = rect_layout(Grid((wh, ww)) if grid else Window((wh, ww)), H, W, pad="mask")
    perm, _ = eager.window_order(lay)
    assert eager.is_identity_order(lay) == torch.equal(perm, torch.arange(H * W))


def test_head_loop_rule_is_cpu_and_short_windows():
    """The measured rule: on CPU, enough windows of up to LOOP_MAX_TOKENS loop over heads;
    longer windows, fewer windows and other devices take one SDPA call."""
    n, m = eager.LOOP_MAX_TOKENS, eager.LOOP_MIN_WINDOWS
    assert eager.loops_per_head(n, m) and not eager.loops_per_head(n + 1, m)
    assert not eager.loops_per_head(n, m - 1)
    assert not eager.loops_per_head(49, m, "meta")
