"""Token maps of any rank: windows, stripes, grids and global attention on 1-D ``(B, L, C)``
and 3-D ``(B, T, H, W, C)`` maps, on every backend, against a reference written from the
facts with plain loops over token pairs (float64, 1e-10, input gradients included)."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    AttnblocksError,
    Global,
    Grid,
    RelPosBias,
    Split,
    Stripe,
    Window,
    dense_mask,
    explain,
)
from attnblocks.functional import partition_windows, unpartition_windows
from attnblocks.lowering import rect_layout

TOL = {"atol": 1e-10, "rtol": 0}


def _coords(shape):
    return list(itertools.product(*(range(n) for n in shape)))


def _same_set(part, shape, p, q) -> bool:
    """Whether tokens at ``p`` and ``q`` share a token set, axis by axis (the facts)."""
    n = len(shape)
    if isinstance(part, Global):
        return True
    if isinstance(part, Stripe):
        axis = part.axis % n if isinstance(part.axis, int) else n - 2 + (part.axis == "h")
        return all(p[a] // part.width == q[a] // part.width for a in range(n) if a != axis)
    if isinstance(part, Grid):
        g = part.size * n if len(part.size) == 1 else part.size
        g = (g[0],) * n if len(g) == 2 and g[0] == g[1] else g
        return all(
            p[a] % math.ceil(shape[a] / g[a]) == q[a] % math.ceil(shape[a] / g[a]) for a in range(n)
        )
    size = part.size if len(part.size) == n else (part.size[0],) * n
    shift = part.shift if len(part.shift) == n else (part.shift[0],) * n
    for a in range(n):  # the map rolled by -shift: wrapped tokens stay apart from the others
        rp, rq = (p[a] - shift[a]) % shape[a], (q[a] - shift[a]) % shape[a]
        if rp // size[a] != rq // size[a]:
            return False
        if shift[a] and (rp >= shape[a] - shift[a]) != (rq >= shape[a] - shift[a]):
            return False
    return True


def reference_mask(part, shape) -> torch.Tensor:
    cs = _coords(shape)
    return torch.tensor([[_same_set(part, shape, p, q) for q in cs] for p in cs])


def _window_bias(table, part, shape) -> torch.Tensor:
    """Swin's bias for every token pair of a window partition, from each token's position in
    its window frame (rolled map), offsets read time-first as mixed-radix digits."""
    n = len(shape)
    size = part.size if len(part.size) == n else (part.size[0],) * n
    shift = part.shift if len(part.shift) == n else (part.shift[0],) * n
    cs = _coords(shape)
    index = torch.zeros(len(cs), len(cs), dtype=torch.long)
    for i, p in enumerate(cs):
        for j, q in enumerate(cs):
            flat = 0
            for a in range(n):
                fp = (p[a] - shift[a]) % shape[a] % size[a]
                fq = (q[a] - shift[a]) % shape[a] % size[a]
                flat = flat * (2 * size[a] - 1) + (fp - fq + size[a] - 1)
            index[i, j] = flat
    return table[index].permute(2, 0, 1)


def reference(layer, x, pe: bool = False):
    """The layer's projections around masked softmax attention over all tokens."""
    B, *shape, C = x.shape
    N, h = math.prod(shape), layer.num_heads
    q, k, v = layer.qkv(x.reshape(B, N, C)).view(B, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
    outs = []
    for g in layer.groups:
        h0, h1 = g.heads
        logits = q[:, h0:h1] @ k[:, h0:h1].transpose(-1, -2) * layer.scale
        if pe:
            logits = logits + _window_bias(layer.pe[0].tables[g.index], g.partition, shape)
        allowed = reference_mask(g.partition, tuple(shape))
        weights = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
        outs.append(weights @ v[:, h0:h1])
    o = torch.cat(outs, 1).transpose(1, 2).reshape(B, N, C)
    return layer.proj(o).view(x.shape)


@st.composite
def maps(draw, rank):
    top = 9 if rank == 1 else 4
    return tuple(draw(st.integers(1, top)) for _ in range(rank))


@st.composite
def partitions(draw, rank):
    kind = draw(st.sampled_from(["window", "shifted", "stripe", "grid", "global", "int"]))
    if kind == "global":
        return Global()
    if kind == "int":  # an int holds for every axis of any rank
        w = draw(st.integers(1, 3))
        return Window(w, shift=draw(st.integers(0, w - 1)))
    sizes = tuple(draw(st.integers(1, 4 if rank == 1 else 3)) for _ in range(rank))
    if kind == "window":
        return Window(sizes)
    if kind == "shifted":
        return Window(sizes, shift=tuple(draw(st.integers(0, s - 1)) for s in sizes))
    if kind == "grid":
        return Grid(sizes)
    return Stripe(draw(st.integers(1, 3)), axis=draw(st.integers(-rank, rank - 1)))


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("backend", ["eager", "dense"])
@given(data=st.data())
def test_every_rect_partition_equals_the_loop_reference(rank, backend, data):
    part = data.draw(partitions(rank), label="partition")
    shape = data.draw(maps(rank), label="shape")
    heads = data.draw(st.sampled_from([1, 2, 3]))
    batch = data.draw(st.integers(0, 2))
    layer = Attention(partition=part, backend=backend).build(4 * heads, heads)
    layer = layer.double()
    x = torch.randn(batch, *shape, 4 * heads, dtype=torch.float64, requires_grad=True)
    got, want = layer(x, hw=shape), reference(layer, x)  # hw: (B, L, C) is ambiguous
    torch.testing.assert_close(got, want, **TOL)
    if batch:
        g = torch.randn_like(got)
        torch.testing.assert_close(
            torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], **TOL
        )
    assert torch.equal(dense_mask(part, shape), reference_mask(part, shape))


@pytest.mark.parametrize("rank", [1, 3])
@given(data=st.data())
def test_windows_with_relpos_bias_equal_the_loop_reference(rank, data):
    sizes = tuple(data.draw(st.integers(1, 3)) for _ in range(rank))
    shift = tuple(data.draw(st.integers(0, s - 1)) for s in sizes)
    shape = tuple(s * data.draw(st.integers(1, 2)) for s in sizes)  # divisible: no padding
    backend = data.draw(st.sampled_from(["eager", "dense"]))
    spec = Attention(partition=Window(sizes, shift=shift), pe=RelPosBias(), backend=backend)
    layer = spec.build(8, 2).double()
    with torch.no_grad():
        layer.pe[0].tables[0].normal_()
    assert layer.pe[0].tables[0].shape == (math.prod(2 * s - 1 for s in sizes), 2)
    x = torch.randn(2, *shape, 8, dtype=torch.float64, requires_grad=True)
    got, want = layer(x, hw=shape), reference(layer, x, pe=True)
    torch.testing.assert_close(got, want, **TOL)
    g = torch.randn_like(got)
    torch.testing.assert_close(
        torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], **TOL
    )


def test_flex_and_split_hybrid_in_3d():
    """FlexAttention (forward) and a head split of a 3-D window and a time stripe."""
    split = Split(Window((2, 3, 2), shift=(1, 1, 1)), Stripe(1, axis=0))
    eager = Attention(heads=split).build(8, 2).double()
    x = torch.randn(2, 3, 5, 4, 8, dtype=torch.float64)
    flex = Attention(heads=split, backend="flex").build(8, 2).double()
    flex.load_state_dict(eager.state_dict())
    with torch.no_grad():
        want = reference(eager, x)
        torch.testing.assert_close(eager(x), want, **TOL)
        torch.testing.assert_close(flex(x), want, **TOL)


def test_one_dimensional_input_forms():
    """``(B, L, C)`` is a 1-D map when the partition says so (a 1-tuple), else ``hw=(L,)``."""
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    pinned = Attention(partition=Window((4,), shift=(2,))).build(8, 2).double()
    free = Attention(partition=Window(4, shift=2)).build(8, 2).double()
    free.load_state_dict(pinned.state_dict())
    torch.testing.assert_close(pinned(x), free(x, hw=(10,)), **TOL)
    with pytest.raises(AttnblocksError, match=r"hw=\(L,\) for a 1-D sequence"):
        free(x)
    with pytest.raises(AttnblocksError, match="written for 1-D token maps"):
        pinned(x.view(2, 2, 5, 8))


def test_rank_errors_name_the_spec():
    with pytest.raises(AttnblocksError, match=r"Window\(\(8, 7, 7\)\) is written for 3-D"):
        rect_layout(Window((8, 7, 7)), 7, 7)
    with pytest.raises(AttnblocksError, match=r"table for 2-D windows[\s\S]*Window\(\(2, 2, 2\)\)"):
        Attention(partition=Window(2), pe=RelPosBias()).build(8, 2)(torch.randn(1, 2, 2, 2, 8))
    with pytest.raises(AttnblocksError, match="axis 3 does not exist"):
        rect_layout(Stripe(2, axis=3), 4, 4, 4)
    with pytest.raises(AttnblocksError, match="names the height or width"):
        rect_layout(Stripe(2, axis="v"), 8)


@pytest.mark.parametrize("part", [Window((2, 3, 2), shift=(1, 2, 0)), Grid((2, 2, 3))])
def test_partition_windows_round_trip_in_3d(part):
    lay = rect_layout(part, 3, 5, 4)
    x = torch.randn(2, 3, 5, 4, 6)
    w = partition_windows(x, lay, heads=2)
    assert w.shape == (2, lay.num_windows, 2, lay.tokens, 3)
    torch.testing.assert_close(unpartition_windows(w, lay), x)


def test_explain_a_video_window():
    text = explain(Attention(partition=Window((8, 7, 7), shift=(4, 3, 3))), (8, 14, 14), 96, 3)
    assert "on a 8x14x14 map" in text and "windows 1x2x2 of 8x7x7 tokens" in text
