"""Sliding windows of any rank, with NATTEN's stride and causal axes: the oracle against a
loop-written reference of the rule, the gather lowering against dense masked attention (float64,
1e-10, with input gradients), the stride == kernel case against Window, and the layer's eager
and dense backends on 1-D, 2-D and 3-D maps."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import Attention, AttnblocksError, Dilated, Neighborhood, RelPosBias, Window
from attnblocks.config import from_config, to_config
from attnblocks.families.sliding.cost import gather_cost
from attnblocks.families.sliding.kernels import (
    gather_attention,
    nd_tiles_attention,
    slices_attention,
    tiles_attention,
)
from attnblocks.families.sliding.plan import gather_plan, nd_tile_plan
from attnblocks.functional import attention
from attnblocks.masks import partition_oracle

TOL = {"atol": 1e-10, "rtol": 1e-9}

# ---------------------------------------------------------------------------------------------
# the rule, written out per axis with plain loops (from the Dilated docstring / NATTEN 0.21)
# ---------------------------------------------------------------------------------------------


def axis_slots_ref(p: int, L: int, k: int, r: int, s: int, causal: bool, border: str) -> list:
    """The key slots of position ``p`` along one axis: a list of positions, ``None`` for an
    out-of-map slot that is a zero key (``border="zeros"``); slots that are no key are left
    out."""
    g, i = p % r, p // r
    sub = [x for x in range(L) if x % r == g]  # the query's sub-grid, in order
    n = len(sub)
    if causal:
        leader = min((i // s) * s + s - 1, n - 1)
        return [sub[j] for j in range(n) if j <= i and leader - j < k]
    leader = min((i // s) * s + s // 2, n - 1)
    if border == "shift":
        start = leader - k // 2
        start = max(0, min(start, n - k))
        return [sub[j] for j in range(start, start + k)]
    out = []
    for j in range(leader - k // 2, leader + k // 2 + 1):
        if 0 <= j < n:
            out.append(sub[j])
        elif border == "zeros":
            out.append(None)
    return out


def facts(part: Dilated, rank: int):
    kernel, dilation, stride, causal = part.axes(rank)
    return list(zip(kernel, dilation, stride, causal))


def slots_ref(part: Dilated, shape: tuple[int, ...]) -> list[list]:
    """Per query (row-major), its key slots: flat key index or ``None`` (a zero key)."""
    per_axis = facts(part, len(shape))
    out = []
    for q in itertools.product(*(range(n) for n in shape)):
        axes = [
            axis_slots_ref(p, L, k, r, s, c, part.border)
            for p, L, (k, r, s, c) in zip(q, shape, per_axis)
        ]
        keys = []
        for combo in itertools.product(*axes):
            if any(x is None for x in combo):
                keys.append(None)
            else:
                keys.append(int(np.ravel_multi_index(combo, shape)))
        out.append(keys)
    return out


def oracle_ref(part: Dilated, shape: tuple[int, ...]) -> np.ndarray:
    """``(N, N)`` bool by loops over query and key pairs."""
    N = math.prod(shape)
    allowed = np.zeros((N, N), dtype=bool)
    for qi, keys in enumerate(slots_ref(part, shape)):
        for kj in keys:
            if kj is not None:
                allowed[qi, kj] = True
    return allowed


def reference_attention(qkv: torch.Tensor, part: Dilated, heads: int, scale: float):
    """Dense attention over all N tokens, masked by the loop-written key sets; zero keys (border
    "zeros") as one extra key of logit ``log(count)`` and value 0. ``(B, *shape, 3, c)``."""
    B, shape, c = qkv.shape[0], tuple(qkv.shape[1:-2]), qkv.shape[-1]
    N, d = math.prod(shape), c // heads
    slots = slots_ref(part, shape)
    allowed = torch.zeros(N, N + 1, dtype=torch.bool)
    zeros = torch.zeros(N, dtype=qkv.dtype)
    for qi, keys in enumerate(slots):
        for kj in keys:
            if kj is None:
                zeros[qi] += 1
            else:
                allowed[qi, kj] = True
    allowed[:, N] = zeros > 0
    t = qkv.reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
    q, k, v = (
        t[0],
        torch.nn.functional.pad(t[1], (0, 0, 0, 1)),
        torch.nn.functional.pad(t[2], (0, 0, 0, 1)),
    )
    logits = (q @ k.transpose(-2, -1)) * scale
    logits[..., N] = logits[..., N] + torch.log(zeros.clamp(min=1))
    logits = logits.masked_fill(~allowed, float("-inf"))
    out = logits.softmax(-1) @ v  # (B, h, N, d)
    return out.permute(0, 2, 1, 3).reshape(B, *shape, c)


def dense_from_oracle(qkv: torch.Tensor, part: Dilated, heads: int, scale: float):
    """Dense masked attention over the registered oracle, ``(B, *shape, 3, c)``."""
    B, shape, c = qkv.shape[0], tuple(qkv.shape[1:-2]), qkv.shape[-1]
    N, d = math.prod(shape), c // heads
    allowed = torch.from_numpy(partition_oracle(part, *shape))
    t = qkv.reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)
    logits = (t[0] @ t[1].transpose(-2, -1)) * scale
    out = logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ t[2]
    return out.permute(0, 2, 1, 3).reshape(B, *shape, c)


# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------


def _per_axis(values: list):
    """An int where every axis agrees (sometimes), else the tuple."""
    return values[0] if len(set(values)) == 1 else tuple(values)


@st.composite
def cases(draw, ranks=(1, 3), borders=("shift", "mask", "zeros"), plain: bool = False,
          max_tokens: int = 150):  # fmt: skip
    """A concrete Dilated / Neighborhood and a map it fits: odd, non-divisible and size-1 axes,
    per-axis kernel, dilation, stride and causal."""
    rank = draw(st.sampled_from(ranks))
    border = draw(st.sampled_from(borders))
    side = {1: 13, 2: 8, 3: 5}[rank]
    shape = tuple(draw(st.integers(1, side)) for _ in range(rank))
    while math.prod(shape) > max_tokens:
        shape = (*shape[:-1], max(1, shape[-1] - 1))
    ks, rs, ss, cs = [], [], [], []
    for L in shape:
        if border == "shift":
            r = draw(st.integers(1, max(1, min(3, L))))
            k = draw(st.integers(1, max(1, L // r)))
        else:
            r = draw(st.integers(1, 3))
            k = draw(st.sampled_from((1, 3, 5)))
        s = 1 if plain else draw(st.integers(1, k))
        c = False if plain or border != "shift" else draw(st.booleans())
        ks.append(k), rs.append(r), ss.append(s), cs.append(c)
    dilation = _per_axis(rs)
    dilation = (dilation,) if isinstance(dilation, tuple) else dilation
    kwargs = {"dilation": dilation, "stride": _per_axis(ss), "causal": _per_axis(cs)}
    if border == "shift" and draw(st.booleans()):
        part: Dilated = Neighborhood(_per_axis(ks), **kwargs)
    else:
        part = Dilated(_per_axis(ks), border=border, **kwargs)
    return part, shape


def _qkv(shape, heads=2, d=3, batch=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, 3, heads * d, generator=g, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# the oracle and the gather plan against the loops
# ---------------------------------------------------------------------------------------------


@given(cases(ranks=(1, 2, 3), borders=("shift", "mask")))
def test_oracle_equals_loop_reference(case):
    part, shape = case
    assert np.array_equal(partition_oracle(part, *shape), oracle_ref(part, shape))


@given(cases(ranks=(1, 2, 3)))
def test_gather_plan_slots_equal_loop_reference(case):
    part, shape = case
    plan = gather_plan(part, shape)
    N = math.prod(shape)
    valid = np.ones(plan.index.shape, dtype=bool) if plan.valid is None else plan.valid
    for qi, keys in enumerate(slots_ref(part, shape)):
        got = [-1 if j == N else int(j) for j, ok in zip(plan.index[qi], valid[qi]) if ok]
        assert sorted(got) == sorted(-1 if j is None else j for j in keys)


def test_oracle_2d_plain_is_unchanged_on_a_known_case():
    # NAT's 3x3 window on a 4x4 map: the corner query sees the top-left 3x3 block
    allowed = partition_oracle(Neighborhood(3), 4, 4)
    assert allowed[0].reshape(4, 4).astype(int).tolist() == [
        [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0],
    ]  # fmt: skip


def test_causal_1d_facts():
    # causal, kernel 3: a query sees itself and the two before it, fewer at the start
    allowed = partition_oracle(Neighborhood(3, causal=True), 5)
    assert allowed.astype(int).tolist() == [
        [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1],
    ]  # fmt: skip
    # stride 2: the tile {0, 1} shares the window ending at its last query (1), {2, 3} at 3
    allowed = partition_oracle(Neighborhood(3, stride=2, causal=True), 5)
    assert allowed.astype(int).tolist() == [
        [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1],
    ]  # fmt: skip


def test_stride_1d_facts():
    # kernel 3, stride 2 on 6 tokens: tiles {0,1} {2,3} {4,5}, leaders 1, 3, 5 (the right
    # centre of an even tile); leader 5's window shifts inward to 3..5
    allowed = partition_oracle(Neighborhood(3, stride=2), 6)
    rows = [np.nonzero(r)[0].tolist() for r in allowed]
    assert rows == [[0, 1, 2], [0, 1, 2], [2, 3, 4], [2, 3, 4], [3, 4, 5], [3, 4, 5]]


# ---------------------------------------------------------------------------------------------
# the gather lowering against dense masked attention, with gradients
# ---------------------------------------------------------------------------------------------


def _grads(fn, qkv: torch.Tensor, weight: torch.Tensor):
    x = qkv.clone().requires_grad_(True)
    out = fn(x)
    (g,) = torch.autograd.grad((out * weight).sum(), x)
    return out.detach(), g


def _nd_tiles(tile: int):
    return lambda t, part, heads, scale: nd_tiles_attention(t, part, heads, scale, tile=tile)


KERNELS = {
    "gather": gather_attention,
    "tiles1": _nd_tiles(1),
    "tiles2": _nd_tiles(2),
    "tiles4": _nd_tiles(4),
}


@pytest.mark.parametrize("ranks", [(1, 3), (2,)], ids=["1d-3d", "2d"])
@given(data=st.data(), kernel=st.sampled_from(sorted(KERNELS)), seed=st.integers(0, 2**16))
def test_gather_and_nd_tiles_equal_dense_oracle_with_grads(ranks, data, kernel, seed):
    """Strided and causal neighbourhoods of every rank (2-D drawn on its own, so the plain 2-D
    kernels' neighbours get their own examples)."""
    part, shape = data.draw(cases(ranks=ranks, borders=("shift", "mask")))
    qkv = _qkv(shape, seed=seed)
    weight = torch.randn(qkv.shape[0], *shape, qkv.shape[-1], dtype=torch.float64)
    out, grad = _grads(lambda t: KERNELS[kernel](t, part, 2, 0.7), qkv, weight)
    ref, ref_grad = _grads(lambda t: dense_from_oracle(t, part, 2, 0.7), qkv, weight)
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)  # q, k and v: one packed tensor


@given(cases(ranks=(1, 2, 3)), st.sampled_from((1, 2, 3, 8)))
def test_nd_tile_plan_covers_exactly_the_loop_key_sets(case, tile):
    part, shape = case
    plan = nd_tile_plan(part, shape, tile)
    N = math.prod(shape)
    got: dict[int, list] = {}
    for t in range(plan.query.shape[0]):
        for a, qi in enumerate(plan.query[t]):
            if qi < N:
                assert int(qi) not in got  # every query in one slot
                got[int(qi)] = sorted(
                    -1 if kj == N else int(kj)
                    for kj, ok in zip(plan.key[t], plan.allowed[t, a])
                    if ok
                )
    for qi, keys in enumerate(slots_ref(part, shape)):
        assert got[qi] == sorted(-1 if j is None else j for j in keys)
        assert plan.query.reshape(-1)[plan.inverse[qi]] == qi


@given(
    cases(ranks=(1, 2, 3), borders=("zeros", "shift")),
    st.sampled_from(sorted(KERNELS)),
    st.integers(0, 2**16),
)
def test_gather_and_nd_tiles_equal_loop_reference_with_zero_keys(case, kernel, seed):
    part, shape = case
    qkv = _qkv(shape, seed=seed)
    weight = torch.randn(qkv.shape[0], *shape, qkv.shape[-1], dtype=torch.float64)
    out, grad = _grads(lambda t: KERNELS[kernel](t, part, 2, 0.7), qkv, weight)
    ref, ref_grad = _grads(lambda t: reference_attention(t, part, 2, 0.7), qkv, weight)
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)


@given(cases(ranks=(2,), plain=True))
def test_gather_equals_slices_and_tiles_on_plain_2d(case):
    part, shape = case
    qkv = _qkv(shape)
    out = gather_attention(qkv, part, 2, 0.7)
    torch.testing.assert_close(slices_attention(qkv, part, 2, 0.7), out, **TOL)
    torch.testing.assert_close(tiles_attention(qkv, part, 2, 0.7, tile=4), out, **TOL)
    torch.testing.assert_close(nd_tiles_attention(qkv, part, 2, 0.7, tile=3), out, **TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gather_low_precision_softmax_in_fp32(dtype):
    part, shape = Neighborhood((2, 3, 3), stride=(1, 2, 1), causal=(True, False, False)), (3, 4, 5)
    qkv = _qkv(shape, d=8)
    out = gather_attention(qkv.to(dtype), part, 2, 8**-0.5)
    assert out.dtype == dtype
    ref = dense_from_oracle(qkv, part, 2, 8**-0.5)
    torch.testing.assert_close(out.double(), ref, atol=3e-2, rtol=3e-2)
    big = gather_attention((qkv * 300).to(dtype), part, 2, 8**-0.5)  # q.k overflows fp16
    assert torch.isfinite(big).all()


def test_gather_empty_batch():
    qkv = torch.randn(0, 4, 5, 3, 3, 8)
    assert gather_attention(qkv, Neighborhood(3, causal=True), 2, 0.5).shape == (0, 4, 5, 3, 8)


# ---------------------------------------------------------------------------------------------
# stride == kernel is blocked attention (Window)
# ---------------------------------------------------------------------------------------------


@given(
    st.integers(1, 3).flatmap(
        lambda rank: st.tuples(
            st.lists(st.integers(1, 4), min_size=rank, max_size=rank),
            st.lists(st.integers(1, {1: 4, 2: 3, 3: 2}[rank]), min_size=rank, max_size=rank),
        )
    )
)
def test_neighborhood_stride_kernel_equals_window(sizes):
    kernel, reps = sizes
    shape = tuple(k * n for k, n in zip(kernel, reps))
    k = _per_axis(kernel)
    window = partition_oracle(Window(k if isinstance(k, int) or len(k) > 1 else k[0]), *shape)
    assert np.array_equal(partition_oracle(Neighborhood(k, stride=k), *shape), window)


# ---------------------------------------------------------------------------------------------
# the layer and functional.attention, eager and dense
# ---------------------------------------------------------------------------------------------

LAYER_CASES = [
    (Neighborhood(3, causal=True), (9,)),
    (Neighborhood(4, dilation=2, stride=3), (11,)),
    (Dilated(5, border="mask", stride=2), (7,)),
    (Neighborhood((3, 5), stride=(2, 5), causal=(True, False)), (6, 7)),
    (
        Neighborhood(
            (2, 3, 3), dilation=((1, 2, 1),), stride=(1, 2, 3), causal=(True, False, False)
        ),
        (3, 6, 5),
    ),
    (Dilated(3, dilation=2, border="mask"), (4, 5, 3)),
    (Neighborhood((1, 3, 3)), (1, 5, 4)),
]


@pytest.mark.parametrize(("part", "shape"), LAYER_CASES, ids=repr)
def test_layer_eager_equals_dense_backend_and_oracle(part, shape):
    torch.manual_seed(0)
    eager = Attention(partition=part).build(12, 2).double()
    dense = Attention(partition=part, backend="dense").build(12, 2).double()
    dense.load_state_dict(eager.state_dict())
    x = torch.randn(2, *shape, 12, dtype=torch.float64, requires_grad=True)
    seq = x.reshape(2, -1, 12)
    out = eager(seq, hw=shape)
    torch.testing.assert_close(out, dense(seq, hw=shape), **TOL)
    if len(shape) > 1:  # (B, *shape, C) too
        torch.testing.assert_close(eager(x), out.view(x.shape), **TOL)
    # against the oracle by hand: the layer's own projections, dense masked attention
    qkv = eager.qkv(seq.detach()).view(2, *shape, 3, 12)
    ref = eager.proj(dense_from_oracle(qkv, part, 2, 6**-0.5).reshape(2, -1, 12))
    torch.testing.assert_close(out.detach(), ref, **TOL)
    (g,) = torch.autograd.grad(out.sum(), x)
    (gd,) = torch.autograd.grad(dense(seq, hw=shape).sum(), x)
    torch.testing.assert_close(g, gd, **TOL)


@pytest.mark.parametrize(("part", "shape"), LAYER_CASES, ids=repr)
def test_functional_attention_eager_equals_dense_and_oracle(part, shape):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, *shape, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_(True)
    out = attention(q, k, v, part, backend="eager")
    dense = attention(q, k, v, part, backend="dense")
    torch.testing.assert_close(out, dense, **TOL)
    qkv = torch.stack((q, k, v), dim=-3).flatten(-2)  # (B, *shape, 3, c)
    ref = dense_from_oracle(qkv, part, 2, 4**-0.5).view(out.shape)
    torch.testing.assert_close(out, ref, **TOL)
    w = torch.randn_like(out)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    for a, b in zip(grads, torch.autograd.grad((ref * w).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, **TOL)


def test_functional_attention_zeros_border_1d_equals_loop_reference():
    part, shape = Dilated(5, dilation=2), (9,)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, *shape, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
    out = attention(q, k, v, part)
    qkv = torch.stack((q, k, v), dim=-3).flatten(-2)
    torch.testing.assert_close(out, reference_attention(qkv, part, 2, 0.5).view(out.shape), **TOL)


def test_explain_and_cost_of_the_gather_lowering():
    from attnblocks import explain

    text = explain(Attention(partition=Neighborhood(3, causal=True)), (7,), dim=8, num_heads=2)
    assert "gather: 3 gathered keys per query, 7 queries, masked" in text
    assert "tiles: 1 tiles of 7 queries, 9 keys each" in text
    g = Attention(partition=Neighborhood(3, stride=2, causal=(True, False))).groups(8, 2)[0]
    gc = gather_cost(g, (5, 6), batch=2, itemsize=4)
    keys = partition_oracle(g.partition, 5, 6).sum(-1)
    assert gc.keys_mean == pytest.approx(keys.mean()) and gc.keys_max == keys.max()
    assert gc.attention_macs == 2 * 2 * 30 * 9 * 8


# ---------------------------------------------------------------------------------------------
# specs: storage, repr, config, errors
# ---------------------------------------------------------------------------------------------


def test_spec_storage_and_repr():
    # sizes are stored as Window stores them: an equal pair is the int (any rank), and every
    # other tuple is kept as written and fixes the rank
    assert Neighborhood((7, 7)) == Neighborhood(7) and Neighborhood(7).rank is None
    assert Neighborhood((7, 7, 7)) != Neighborhood(7) and Neighborhood((7, 7, 7)).rank == 3
    assert Neighborhood((7,)).rank == 1 and Neighborhood(3, causal=(True,)).rank == 1
    assert repr(Neighborhood((3, 7, 7), stride=(1, 1, 1))) == (
        "Neighborhood((3, 7, 7), stride=(1, 1, 1))"
    )
    assert Neighborhood(3, stride=(1, 1, 1), causal=(False,) * 3).is_plain
    assert not Neighborhood(3, causal=(False, False, True)).is_plain
    assert repr(Dilated(3, dilation=((1, 2, 2),))) == "Dilated(3, dilation=((1, 2, 2),))"
    assert repr(Neighborhood(5, causal=(True, True))) == "Neighborhood(5, causal=True)"
    assert Neighborhood((3, 5, 5)).rank == 3 and Neighborhood(5).rank is None
    assert Neighborhood(5, causal=(True, False)).rank == 2
    assert Neighborhood((3, 5), stride=2).axes(2) == ((3, 5), (1, 1), (2, 2), (False, False))
    p = Dilated(3, dilation=(1, (1, 2, 2)), border="mask", stride=(1, 3, 3))
    assert p.resolve(1, 2).axes(3)[1] == (1, 2, 2)


@pytest.mark.parametrize(
    "spec",
    [
        Neighborhood(
            (3, 7, 7), dilation=((1, 2, 2),), stride=(1, 2, 2), causal=(True, False, False)
        ),
        Dilated(5, border="mask", stride=3),
        Neighborhood(4, stride=(1, 4)),
    ],
    ids=repr,
)
def test_spec_config_round_trip(spec):
    assert from_config(to_config(spec)) == spec


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Neighborhood(3, stride=4), AttnblocksError, r"stride must be at most the kernel"),
        (lambda: Neighborhood((3, 5), stride=(1, 6)), AttnblocksError, r"stride must be at most"),
        (lambda: Neighborhood(3, stride=0), AttnblocksError, r"stride must be >= 1, got 0"),
        (lambda: Dilated(3, causal=True), AttnblocksError, r"causal=True needs border='shift'"),
        (lambda: Neighborhood(3, causal=1), TypeError, r"causal must be a bool, got 1"),
        (lambda: Neighborhood(3, causal=(True, 0)), TypeError, r"tuple of bools"),
        (lambda: Neighborhood((3, 5), causal=(True, False, True)), AttnblocksError,
         r"different ranks: kernel=\(3, 5\) \(2 axes\), causal=\(True, False, True\) \(3 axes\)"),
        (lambda: Neighborhood(3, dilation=((1, 2),), stride=(1, 2, 3)), AttnblocksError,
         r"different ranks"),
    ],
)  # fmt: skip
def test_spec_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_rank_mismatch_at_call_time_names_the_spec():
    part = Neighborhood((3, 5, 5))
    with pytest.raises(AttnblocksError, match=r"Neighborhood\(\(3, 5, 5\)\).*token map has 2"):
        Attention(partition=part).build(8, 2)(torch.randn(1, 6, 6, 8))
    with pytest.raises(AttnblocksError, match=r"kernel=\(3, 5, 5\) has 3 axes"):
        partition_oracle(part, 6, 6)
    # an equal 3-tuple fixes the rank too: never a silent 2-D reading of a 3-D kernel
    with pytest.raises(AttnblocksError, match=r"Neighborhood\(\(5, 5, 5\)\).*token map has 2"):
        Attention(partition=Neighborhood((5, 5, 5))).build(8, 2)(torch.randn(1, 6, 6, 8))


def test_shift_needs_the_window_to_fit_per_axis():
    with pytest.raises(AttnblocksError, match=r"dilation=2 for an input of size 5 \(axis 2\)"):
        gather_plan(Neighborhood(3, dilation=2), (6, 7, 5))


def test_relpos_bias_with_stride_or_rank_3_raises_naming_the_spec():
    layer = Attention(partition=Neighborhood(3, stride=2), pe=RelPosBias()).build(8, 2)
    with pytest.raises(AttnblocksError, match=r"RelPosBias: Neighborhood\(3, stride=2\)"):
        layer(torch.randn(1, 6, 6, 8))


@pytest.mark.parametrize(("part", "shape"), [c for c in LAYER_CASES if c[0].border != "zeros"],
                         ids=repr)  # fmt: skip
def test_flex_equals_dense_at_any_rank(part, shape):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, *shape, 2, 8, generator=g) for _ in range(3))
    with torch.no_grad(), warnings.catch_warnings():  # uncompiled flex on CPU: unfused
        warnings.simplefilter("ignore")
        out = attention(q, k, v, part, backend="flex")
    torch.testing.assert_close(out, attention(q, k, v, part, backend="dense"), atol=1e-5, rtol=0)


def test_relpos_bias_on_1d_and_3d_maps_raises_naming_the_spec():
    layer = Attention(partition=Neighborhood(3), pe=RelPosBias()).build(8, 2)
    with pytest.raises(AttnblocksError, match=r"RelPosBias: Neighborhood\(3\) .* rank-3 map"):
        layer(torch.randn(1, 4, 5, 6, 8))
    with pytest.raises(AttnblocksError, match=r"RelPosBias: Neighborhood\(3\) .* rank-1 map"):
        layer(torch.randn(1, 9, 8), hw=(9,))
    with pytest.raises(AttnblocksError, match=r"kernel=\(3, 5, 5\) is written for 3-D token maps"):
        Attention(partition=Neighborhood((3, 5, 5)), pe=RelPosBias()).build(8, 2)
    # a forced gather on a 2-D plain window has no offset bias either: refused, never dropped
    layer.runners[0].lowering = "gather"
    with pytest.raises(AttnblocksError, match=r"with lowering='gather' has no offset bias"):
        layer(torch.randn(1, 7, 7, 8))


@pytest.mark.parametrize("order", ["row-major", "lowering"])
def test_flex_mask_mod_takes_stride_and_causal(order):
    from attnblocks.families.sliding.flex import subgrid_order
    from attnblocks.flex import mask_mod

    part = Neighborhood(3, dilation=((1, 2),), stride=(2, 3), causal=(True, False))
    mod = mask_mod(part, (6, 7), order=order)
    n = torch.arange(42)
    got = mod(0, 0, n[:, None], n[None, :])
    want = torch.from_numpy(partition_oracle(part, 6, 7))
    if order == "lowering":
        perm = subgrid_order(6, 7, (1, 2), torch.device("cpu"))[0]
        want = want[perm][:, perm]
    assert torch.equal(got, want)


@pytest.mark.parametrize(("part", "shape"), LAYER_CASES[:6], ids=repr)
def test_runner_lowerings_agree(part, shape):
    torch.manual_seed(0)
    layer = Attention(partition=part).build(12, 2).double()
    x = torch.randn(2, math.prod(shape), 12, dtype=torch.float64)
    outs = []
    for lowering in ("auto", "tiles", "gather"):
        layer.runners[0].lowering = lowering
        outs.append(layer(x, hw=shape))
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], **TOL)
    if len(shape) != 2 or not part.is_plain:
        layer.runners[0].lowering = "slices"
        with pytest.raises(AttnblocksError, match=r"lowering='slices' has no form"):
            layer(x, hw=shape)


def test_cost_of_strided_2d_counts_the_nd_tiles():
    from attnblocks.families.sliding.cost import nd_tiles_cost, sliding_cost

    g = Attention(partition=Neighborhood(3, stride=2, causal=(True, False))).groups(8, 2)[0]
    plan = nd_tile_plan(g.partition, (6, 7), 8)
    nT, Tq, Tk = plan.allowed.shape
    gc = sliding_cost(g, 6, 7, 1, 4)
    assert gc == nd_tiles_cost(g, (6, 7), 1, 4)
    assert gc.attention_macs == 2 * 2 * nT * Tq * Tk * 4
    assert gc.keys_mean == pytest.approx(partition_oracle(g.partition, 6, 7).sum(-1).mean())
