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
    CPE,
    Attention,
    AttnblocksError,
    AxialRoPE,
    Downsample,
    Global,
    Grid,
    LePE,
    Neighborhood,
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


def test_functional_attention_on_sequences_and_video():
    """``functional.attention`` takes ``(B, *map, heads, D)`` of any rank (NATTEN's layout):
    it equals masked softmax attention over the reference mask, and Global takes keys of
    another length."""
    from attnblocks.functional import attention

    for part, shape in [(Window((2, 3, 2), shift=(1, 1, 0)), (3, 5, 4)), (Grid((3,)), (7,))]:
        q, k, v = torch.randn(3, 2, *shape, 2, 4, dtype=torch.float64).unbind(0)
        got = attention(q, k, v, part)
        N = math.prod(shape)
        qt, kt, vt = (t.reshape(2, N, 2, 4).transpose(1, 2) for t in (q, k, v))
        logits = (qt @ kt.transpose(-1, -2) * 4**-0.5).masked_fill(
            ~reference_mask(part, shape), float("-inf")
        )
        want = (logits.softmax(-1) @ vt).transpose(1, 2).reshape(got.shape)
        torch.testing.assert_close(got, want, **TOL)
    q = torch.randn(2, 6, 2, 4, dtype=torch.float64)
    kv = torch.randn(2, 3, 2, 4, dtype=torch.float64)
    want = torch.softmax(q.transpose(1, 2) @ kv.permute(0, 2, 3, 1) * 0.5, -1) @ kv.transpose(1, 2)
    torch.testing.assert_close(attention(q, kv, kv, Global()), want.transpose(1, 2), **TOL)


def _reduced_reference(runner, x: torch.Tensor) -> torch.Tensor:
    """The reduction from the facts: each reduced token is ``sum(weight * patch) + bias`` over
    its ``r``-cube of input tokens (the last ``n % r`` per axis dropped), then LayerNorm."""
    r, n = runner.ratio, x.dim() - 2
    shape = [s // r for s in x.shape[1:-1]]
    crop = x[(slice(None), *(slice(0, s * r) for s in shape))]
    view = [x.shape[0]] + [v for s in shape for v in (s, r)] + [x.shape[-1]]
    order = [0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1]
    patches = crop.reshape(view).permute(order)  # (B, *reduced, r, ..., r, C)
    letters = "ijk"[:n]
    w = runner.sr.weight  # (C_out, C_in, r, ..., r)
    red = torch.einsum(f"b...{letters}c,oc{letters}->b...o", patches, w) + runner.sr.bias
    return runner.norm(red)


@pytest.mark.parametrize("ndim, shape", [(1, (11,)), (3, (4, 7, 5)), (3, (2, 2, 3))])
def test_downsample_in_1d_and_3d_equals_the_reference(ndim, shape):
    """Downsampled keys (PVTv2's reduction) on sequences and clips: ``Downsample(r, ndim=n)``
    reduces with a ``Conv{n}d``, alone and beside a window group under a split."""
    split = Split(Window((2,) * ndim), Downsample(2, ndim=ndim))
    layer = Attention(heads=split).build(16, 4).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, *shape, 16, dtype=torch.float64, requires_grad=True)
    got = layer(x, hw=shape)
    N = math.prod(shape)
    q = layer.q(x).reshape(2, N, 4, 4).transpose(1, 2)
    kv0 = layer.kv(x).reshape(2, N, 2, 2, 4)  # the window group's k, v: [k | v] of its channels
    k0, v0 = kv0[:, :, 0].transpose(1, 2), kv0[:, :, 1].transpose(1, 2)
    runner = layer.runners[1]
    assert type(runner.sr).__name__ == f"Conv{ndim}d"
    kv1 = runner.kv(_reduced_reference(runner, x))
    kv1 = kv1.reshape(2, -1, 2, 2, 4)
    k1, v1 = kv1[:, :, 0].transpose(1, 2), kv1[:, :, 1].transpose(1, 2)
    mask = reference_mask(Window((2,) * ndim), shape)
    a0 = (q[:, :2] @ k0.transpose(-1, -2) / 2).masked_fill(~mask, float("-inf")).softmax(-1)
    a1 = (q[:, 2:] @ k1.transpose(-1, -2) / 2).softmax(-1)
    o = torch.cat([a0 @ v0, a1 @ v1], 1).transpose(1, 2).reshape(2, *shape, 16)
    want = layer.proj(o)
    torch.testing.assert_close(got, want, **TOL)
    g = torch.randn_like(got)
    torch.testing.assert_close(
        torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], **TOL
    )
    with pytest.raises(AttnblocksError, match=f"written for {ndim}-D|{ndim}-D token maps"):
        layer(torch.randn(1, *(3,) * (5 - ndim), 16, dtype=torch.float64))


def _lepe_reference(layer, part, shape, v: torch.Tensor) -> torch.Tensor:
    """LePE from the facts: the depthwise conv of each window's frame (the map rolled by
    ``-shift``, padded at its end, cut into windows; zeros beyond the frame and on padding): a
    token at frame position ``f`` adds ``sum_o w[c, o] * v[f + o - k//2]`` over the kernel
    offsets ``o``, plus the bias. ``v: (B, N, C)`` -> ``(B, N, C)``."""
    conv = layer.pe[0].conv
    k, n = conv.weight.shape[-1], len(shape)
    if isinstance(part, Stripe):
        axis = part.axis % n
        size = tuple(m if a == axis else part.width for a, m in enumerate(shape))
        shift = (0,) * n
    else:
        size, shift = part.size, part.shift
    cs = _coords(shape)
    index = {p: i for i, p in enumerate(cs)}
    out = conv.bias.expand_as(v).clone()
    for i, p in enumerate(cs):
        rolled = [(a - s) % m for a, s, m in zip(p, shift, shape)]
        for o in itertools.product(range(k), repeat=n):
            frame = [r % w + b - k // 2 for r, w, b in zip(rolled, size, o)]
            target = [r - r % w + f for r, w, f in zip(rolled, size, frame)]
            if all(0 <= f < w for f, w in zip(frame, size)) and all(
                t < m for t, m in zip(target, shape)
            ):
                q = tuple((t + s) % m for t, s, m in zip(target, shift, shape))
                out[:, i] = out[:, i] + conv.weight[(slice(None), 0, *o)] * v[:, index[q]]
    return out


@pytest.mark.parametrize(
    "part, shape",
    [
        (Window((2, 3, 2), shift=(1, 1, 1)), (3, 5, 4)),
        (Stripe(1, axis=0), (3, 3, 4)),
        (Window((4,), shift=(1,)), (9,)),
    ],
)
@pytest.mark.parametrize("backend", ["eager", "dense"])
def test_lepe_in_1d_and_3d_equals_the_loop_reference(part, shape, backend):
    """CSWin's LePE on windows of any rank: ``LePE(ndim=n)`` is a depthwise ``Conv{n}d`` over
    each window's frame."""
    layer = Attention(partition=part, pe=LePE(ndim=len(shape)), backend=backend).build(8, 2)
    layer = layer.double()
    with torch.no_grad():
        layer.pe[0].conv.weight.normal_()
        layer.pe[0].conv.bias.normal_()
    x = torch.randn(2, *shape, 8, dtype=torch.float64)
    with torch.no_grad():
        B, N = 2, math.prod(shape)
        v = layer.qkv(x.reshape(B, N, 8))[..., 16:]
        attn = reference(layer, x)
        extra = layer.proj.weight @ _lepe_reference(layer, part, shape, v)[..., None]
        torch.testing.assert_close(layer(x, hw=shape), attn + extra[..., 0].view(attn.shape), **TOL)


@pytest.mark.parametrize("shape, d", [((7,), 4), ((3, 4, 2), 12), ((2, 3, 4), 24)])
def test_axial_rope_in_1d_and_3d_follows_the_formula(shape, d):
    """RoPE on ``n`` axes: channel pair ``i`` turns by ``coord[i // m] * f_(i % m)`` with
    ``m = d / 2n`` frequencies ``f_j = T ** (-j / m)``; the logit of a query and a key then
    depends on their offset only (checked by moving both by one token along every axis)."""
    from attnblocks.functional import attention

    n, T = len(shape), 100.0
    m = d // (2 * n)
    layer = Attention(partition=Global(), pe=AxialRoPE(temperature=T)).build(2 * d, 2).double()
    rope = layer.pe[0]
    q = torch.randn(1, *shape, 2, d, dtype=torch.float64)
    got, _ = rope.rotate(q, q)
    want = torch.empty_like(q)
    for p in _coords(shape):
        for i in range(d // 2):
            # the frequency in float32, as timm computes it; the angle in float64
            f = 1.0 / torch.tensor(T, dtype=torch.float32) ** torch.tensor((i % m) / m)
            angle = p[i // m] * f.double()
            a, b = q[(0, *p, slice(None), 2 * i)], q[(0, *p, slice(None), 2 * i + 1)]
            want[(0, *p, slice(None), 2 * i)] = a * angle.cos() - b * angle.sin()
            want[(0, *p, slice(None), 2 * i + 1)] = b * angle.cos() + a * angle.sin()
    torch.testing.assert_close(got, want, **TOL)
    # offsets only: the same vectors one token further along every axis of a larger map give
    # the same logits between every query and every key
    k = torch.randn_like(q)
    big = tuple(s + 1 for s in shape)
    hi = (slice(None), *(slice(1, s + 1) for s in shape))
    qb = torch.zeros(1, *big, 2, d, dtype=torch.float64)
    kb = torch.zeros_like(qb)
    qb[hi], kb[hi] = q, k
    rq, rk = rope.rotate(q, k)
    bq, bk = rope.rotate(qb, kb)

    def logits(a, b):
        return torch.einsum("qhd,khd->hqk", a.reshape(-1, 2, d), b.reshape(-1, 2, d))

    torch.testing.assert_close(logits(bq[hi], bk[hi]), logits(rq, rk), **TOL)
    x = torch.randn(2, *shape, 2 * d, dtype=torch.float64)
    assert layer(x, hw=shape).shape == x.shape
    out = attention(q, q, q, Global(), pe=layer.pe)
    assert out.shape == q.shape


@pytest.mark.parametrize("shape", [(9,), (3, 4, 5)])
def test_cpe_in_1d_and_3d_equals_the_loop_reference(shape):
    """CPE(ndim=n): ``x + DWConv(x)`` over the whole map, zero padding, from the facts."""
    n = len(shape)
    layer = Attention(partition=Global(), pe=CPE(ndim=n)).build(4, 2).double()
    conv = layer.pe[0].conv
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
    x = torch.randn(2, *shape, 4, dtype=torch.float64)
    want = x + conv.bias
    for p in _coords(shape):
        for o in itertools.product(range(3), repeat=n):
            q = tuple(a + b - 1 for a, b in zip(p, o))
            if all(0 <= v < m for v, m in zip(q, shape)):
                want[(slice(None), *p)] += conv.weight[(slice(None), 0, *o)] * x[(slice(None), *q)]
    with torch.no_grad():
        torch.testing.assert_close(layer.pe[0].prepare(x), want, **TOL)
        torch.testing.assert_close(layer(x, hw=shape), reference(layer, want), **TOL)
    with pytest.raises(AttnblocksError, match="CPEModule runs on"):
        layer(torch.randn(1, 3, 3, 4, dtype=torch.float64))


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec, shapes",
    [
        (Attention(partition=Window(4, shift=2)), [(8, 8), (12, 8), (12, 12)]),
        (
            Attention(
                partition=Window((2, 3, 3), shift=(1, 1, 1), clamp="timm"),
                pe=RelPosBias(index="torchvision"),
                pad="torchvision",
            ),
            [(3, 7, 6), (4, 6, 6), (2, 9, 9)],
        ),
    ],
    ids=["2d", "3d"],
)
def test_compiled_layer_across_map_sizes(spec, shapes):
    """One compiled layer called at three map sizes (the third after Dynamo's automatic
    dynamic recompile) equals eager, forward and input gradient."""
    layer = spec.build(16, 2)
    compiled = torch.compile(layer, fullgraph=True)
    for s in shapes:
        x = torch.randn(2, *s, 16, requires_grad=True)
        got, want = compiled(x), layer(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        g = torch.randn_like(got)
        torch.testing.assert_close(
            torch.autograd.grad(got, x, g)[0],
            torch.autograd.grad(want, x, g)[0],
            atol=1e-5,
            rtol=1e-5,
        )


@pytest.mark.parametrize("backend", ["eager", "dense"])
@pytest.mark.parametrize(
    "part, shape",
    [(Neighborhood(3), (7,)), (Neighborhood(3, causal=True), (5, 5)), (Neighborhood(3), (3, 4, 4))],
)
def test_nat_offset_bias_is_refused_beyond_plain_2d(backend, part, shape):
    """NAT's ``rpb`` is a plain 2-D table: every backend refuses it by name elsewhere."""
    layer = Attention(partition=part, pe=RelPosBias(), backend=backend).build(8, 2)
    with pytest.raises(AttnblocksError, match="RelPosBias"):
        layer(torch.randn(1, *shape, 8), hw=shape)


def test_cost_of_maps_of_any_rank():
    """``cost`` counts 1-D and 3-D maps: a 3-D window attends ``T`` keys per query."""
    from attnblocks.cost import cost

    c = cost(Attention(partition=Window((2, 7, 7))), (4, 14, 14), dim=96, num_heads=3)
    assert c.keys_per_query == (98.0, 98)
    assert c.parts["attention"] == 2 * (4 * 14 * 14) * 98 * 96
    c1 = cost(Attention(partition=Downsample(2, ndim=1)), (16,), dim=8, num_heads=2)
    assert c1.keys_per_query == (8.0, 8)


@pytest.mark.parametrize(
    "part, shape",
    [
        (Window((2, 3, 2), shift=(1, 1, 1)), (3, 5, 4)),
        (Grid((2, 2, 3)), (4, 4, 5)),
        (Stripe(1, axis=0), (3, 3, 2)),
        (Window((3,), shift=(1,)), (8,)),
        (Neighborhood((2, 3, 3), causal=(True, False, False)), (3, 4, 5)),
    ],
)
def test_flex_export_masks_of_any_rank(part, shape):
    """``attnblocks.flex``: the exported ``mask_mod`` (row-major) is the dense mask, the lowering
    order's ``token_order`` is a permutation onto the windows, and ``block_mask`` has the map's
    token count."""
    from torch.nn.attention.flex_attention import create_mask

    from attnblocks import flex

    N = math.prod(shape)
    m = create_mask(flex.mask_mod(part, shape), None, None, N, N, "cpu")[0, 0]
    assert torch.equal(m, dense_mask(part, shape))
    perm, inverse = flex.token_order(part, shape)
    real = perm < N
    assert torch.equal(perm[inverse], torch.arange(N))
    assert sorted(perm[real].tolist()) == list(range(N))
    assert flex.block_mask(part, shape).shape == (1, 1, N, N)


@pytest.mark.parametrize("backend", ["eager", "dense", "flex"])
def test_causal_rule_in_3d_equals_the_loop_reference(backend):
    """A rule partition on a 3-D map: windows causal in time (``Window & Causal(axes=(0,))``)
    and the row-major causal rule, against masks written pair by pair."""
    from attnblocks import Causal

    shape = (3, 4, 3)
    cs = _coords(shape)
    win = Window((2, 2, 2), shift=(1, 1, 0))
    for part, rule in [
        (win & Causal(axes=(0,)), lambda p, q: _same_set(win, shape, p, q) and q[0] <= p[0]),
        (Causal(), lambda p, q: q <= p),
    ]:
        want_mask = torch.tensor([[rule(p, q) for q in cs] for p in cs])
        assert torch.equal(dense_mask(part, shape), want_mask)
        layer = Attention(partition=part, backend=backend).build(8, 2).double()
        x = torch.randn(2, *shape, 8, dtype=torch.float64)
        N = math.prod(shape)
        q, k, v = layer.qkv(x.reshape(2, N, 8)).view(2, N, 3, 2, 4).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-1, -2) / 2).masked_fill(~want_mask, float("-inf")).softmax(-1)
        want = layer.proj((a @ v).transpose(1, 2).reshape(2, *shape, 8))
        with torch.no_grad():
            torch.testing.assert_close(layer(x), want, **TOL)


def test_set_operations_take_their_parts_rank_and_explain_any_rank():
    """``Window((4,)) & Causal()`` is 1-D (its window says so), so a ``(B, L, C)`` sequence needs
    no ``hw``; parts of different ranks are refused; ``explain`` says a union or an
    intersection off 2-D runs the dense lowering (it raised a TypeError)."""
    from attnblocks import Causal, explain

    part = Window((4,)) & Causal()
    assert part.rank == 1 and (Window(4) | Causal()).rank is None
    layer = Attention(partition=part).build(8, 2).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    N, allowed = 9, dense_mask(part, (9,))
    assert torch.equal(allowed, torch.tensor([[j <= i and i // 4 == j // 4 for j in range(N)]
                                             for i in range(N)]))  # fmt: skip
    q, k, v = layer.qkv(x).view(2, N, 3, 2, 4).permute(2, 0, 3, 1, 4)
    a = (q @ k.transpose(-1, -2) / 2).masked_fill(~allowed, float("-inf")).softmax(-1)
    with torch.no_grad():
        want = layer.proj((a @ v).transpose(1, 2).reshape(2, N, 8))
        torch.testing.assert_close(layer(x), want, **TOL)
    with pytest.raises(AttnblocksError, match=r"KeyUnion: .*Window\(\(4,\)\) \(1-D\), "
                       r"Window\(\(2, 2, 2\)\) \(3-D\)"):  # fmt: skip
        Window((4,)) | Window((2, 2, 2))
    text = explain(Attention(partition=part), (9,), dim=8, num_heads=2)
    want = "dense lowering (N x N): declared layouts and sliding windows are 2-D, this map is 1-D"
    assert want in text, text
    union = Attention(partition=Window((2, 3, 3)) | Grid((2, 3, 3)))
    text = explain(union, (4, 6, 6), dim=8, num_heads=2)
    assert "eager/auto: overlapping key sets: runs the dense lowering" in text, text
    text = explain(Attention(partition=Window((2, 3, 3)) | Global()), (4, 6, 6), 8, 2)
    assert "nested key sets: runs Global() alone" in text, text


@pytest.mark.parametrize("shape, size", [((4, 6, 4), (2, 3, 2)), ((9,), (3,))])
def test_continuous_pos_bias_in_1d_and_3d_equals_the_formula(shape, size):
    """SwinV2's CPB on windows of any rank: per axis the offset ``d`` maps to
    ``sign(8d/(M-1)) log2(|8d/(M-1)| + 1) / 3``; an MLP of ``ndim`` inputs, ``16 sigmoid``."""
    from attnblocks import ContinuousPosBias

    n = len(shape)
    spec = Attention(partition=Window(size), pe=ContinuousPosBias(hidden=16, ndim=n))
    layer = spec.build(8, 2).double()
    with torch.no_grad():
        for p in layer.pe[0].parameters():
            p.normal_()
    mlp = layer.pe[0].cpb_mlp
    assert mlp[0].weight.shape == (16, n)
    cs = _coords(shape)
    bias = torch.zeros(2, len(cs), len(cs), dtype=torch.float64)
    for i, p in enumerate(cs):
        for j, q in enumerate(cs):
            d = torch.tensor(
                [(a % m) - (b % m) for a, b, m in zip(p, q, size)], dtype=torch.float64
            )
            t = 8 * d / torch.tensor([max(m - 1, 1) for m in size], dtype=torch.float64)
            bias[:, i, j] = 16 * torch.sigmoid(mlp(torch.sign(t) * torch.log2(t.abs() + 1) / 3))
    x = torch.randn(2, *shape, 8, dtype=torch.float64)
    N = math.prod(shape)
    qh, kh, vh = layer.qkv(x.reshape(2, N, 8)).view(2, N, 3, 2, 4).permute(2, 0, 3, 1, 4)
    mask = reference_mask(Window(size), shape)
    logits = (qh @ kh.transpose(-1, -2) * layer.scale + bias).masked_fill(~mask, float("-inf"))
    want = layer.proj((logits.softmax(-1) @ vh).transpose(1, 2).reshape(2, *shape, 8))
    with torch.no_grad():
        torch.testing.assert_close(layer(x, hw=shape), want, atol=1e-6, rtol=0)


def test_local_conv_on_reduced_keys_in_3d():
    """Shunted's LocalConv on a 3-D Downsample group: ``v <- v + DWConv3d(v)`` on the reduced
    V map before attention, from the facts (zero padding, loops over the kernel)."""
    from attnblocks import LocalConv

    layer = Attention(partition=Downsample(2, ndim=3), pe=LocalConv(ndim=3)).build(8, 2)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 4, 6, 4, 8, dtype=torch.float64)
    runner, conv = layer.runners[0], layer.pe[0].conv
    red = _reduced_reference(runner, x)  # (2, 2, 3, 2, 8)
    k, v = runner.kv(red).split(8, dim=-1)
    rshape = tuple(red.shape[1:-1])
    v2 = v + conv.bias
    for p in _coords(rshape):
        for o in itertools.product(range(3), repeat=3):
            q = tuple(a + b - 1 for a, b in zip(p, o))
            if all(0 <= c < m for c, m in zip(q, rshape)):
                v2[(slice(None), *p)] += conv.weight[(slice(None), 0, *o)] * v[(slice(None), *q)]
    M, N = math.prod(rshape), 4 * 6 * 4
    qh = layer.q(x).reshape(2, N, 2, 4).transpose(1, 2)
    kh, vh = (t.reshape(2, M, 2, 4).transpose(1, 2) for t in (k, v2))
    o = ((qh @ kh.transpose(-1, -2) / 2).softmax(-1) @ vh).transpose(1, 2).reshape(x.shape)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.proj(o), **TOL)


@pytest.mark.parametrize("ndim", [0, 4, True, "3"])
def test_ndim_is_checked_at_construction(ndim):
    from attnblocks import ContinuousPosBias, LocalConv

    for make in (Downsample, LePE, CPE, LocalConv, ContinuousPosBias):
        kwargs = {"ratio": 2} if make is Downsample else {}
        with pytest.raises(AttnblocksError, match=rf"{make.__name__}: ndim must be 1, 2 or 3"):
            make(ndim=ndim, **kwargs)
