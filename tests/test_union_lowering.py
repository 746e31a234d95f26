"""The fast eager lowering of ``p | q`` (:class:`~attnblocks.extend.UnionRunner`): disjoint key
sets as partial attentions merged by log-sum-exp, nested sets as the largest part alone.

Reference: dense masked attention over all ``N`` tokens with the union's mask, built here from
the parts' :func:`~attnblocks.dense_mask` (float64, ``atol=1e-10``), forward and input gradient,
under ``Split`` beside a window. Disjoint pairs are drawn as ``p | (q minus p)`` for drawn
built-in ``p`` and ``q`` (the difference a mask-only rule); nested ones as ``p | (p & q)``.
That the fast path runs is checked by making the dense lowering raise while the eager layer
runs, and by :func:`~attnblocks.explain`.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

import attnblocks.extend as extend
from attnblocks import (
    Attention,
    Dilated,
    Global,
    Grid,
    LePE,
    Neighborhood,
    Partition,
    RulePartition,
    Split,
    Stripe,
    Window,
    dense_mask,
    explain,
)
from attnblocks.extend import union_plan
from helpers import masked_reference as reference
from helpers import randomize_
from strategies import windows

CLOSE = {"atol": 1e-10, "rtol": 1e-9}


class _Minus(RulePartition):
    """``extra``'s keys that ``base`` does not allow: disjoint from ``base`` by construction."""

    base: Partition = Window(2)
    extra: Partition = Global()

    def oracle(self, *shape):
        return (dense_mask(self.extra, shape) & ~dense_mask(self.base, shape)).numpy()


class _Lattice(RulePartition):
    """Longformer-like global tokens: every ``step``-th row and column of the map."""

    step: int = 3

    def allows(self, q, k):
        return (k[0] % self.step == 0) & (k[1] % self.step == 0) & (q[0] >= 0)

    @classmethod
    def examples(cls):
        return (cls(2), cls(3))


class _RowBeyond(RulePartition):
    """The query's row outside its ``w``-wide column block: disjoint from ``Window(w)``."""

    w: int = 2

    def allows(self, q, k):
        return (q[0] == k[0]) & (q[1] // self.w != k[1] // self.w)


BASES = st.one_of(
    windows(4),
    st.builds(Stripe, st.integers(1, 4), st.sampled_from(["v", "h"])),
    st.builds(Grid, st.integers(1, 3)),
    st.builds(Neighborhood, st.sampled_from([1, 3, 5])),
    st.builds(
        Dilated,
        st.sampled_from([1, 3]),
        dilation=st.integers(1, 2),
        border=st.sampled_from(["mask", "shift"]),
    ),
)
EXTRAS = st.one_of(
    BASES, st.just(Global()), st.builds(_Lattice, st.integers(2, 3)), st.builds(_RowBeyond)
)


def check_fast(union: Partition, mask: torch.Tensor, H: int, W: int, B: int, gather: float = 1.0):
    """Eager (and auto) equal the dense reference, without running the dense lowering.

    ``gather``: :data:`~attnblocks.extend.GATHER_MAX` for the call (1: any part without
    windows or few columns gathers its keys, so small drawn maps take the fast path too).
    """

    def refuse(*args, **kwargs):
        raise AssertionError("the union ran the dense lowering")

    spec = Attention(heads=Split(Window(2), union))
    layer = randomize_(spec.build(8, 4).double())
    x = torch.randn(B, H, W, 8, dtype=torch.float64)
    masks = [dense_mask(Window(2), H, W), mask]
    xr = x.clone().requires_grad_(True)
    ref = reference(layer, xr, masks)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), xr)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(extend, "rule_dense_lowering", refuse)
        m.setattr(extend, "GATHER_MAX", gather)
        xe = x.clone().requires_grad_(True)
        out = layer(xe)
        (grad,) = torch.autograd.grad(out.square().sum(), xe)
        auto = layer(x)  # auto on CPU: the eager runner
    torch.testing.assert_close(out, ref, **CLOSE)
    torch.testing.assert_close(grad, ref_grad, **CLOSE)
    torch.testing.assert_close(auto, ref.detach(), **CLOSE)


def _side(p: Partition) -> int:
    return p.kernel * p.dilation if isinstance(p, Dilated) and p.border == "shift" else 1


@settings(max_examples=25, deadline=None)
@given(p=BASES, q=EXTRAS, data=st.data())
def test_disjoint_unions_merge_partial_attentions(p, q, data):
    lo = max(_side(p), _side(q))
    H, W = data.draw(st.integers(lo, 9), label="H"), data.draw(st.integers(lo, 9), label="W")
    rest = _Minus(p, q)
    union = p | rest
    a, b = dense_mask(p, H, W), dense_mask(rest, H, W)
    assert not (a & b).any()
    assert union_plan(union, H, W) == ("disjoint" if b.any() else 0)
    check_fast(union, a | b, H, W, data.draw(st.integers(0, 2), label="B"))


@settings(max_examples=15, deadline=None)
@given(p=BASES, q=EXTRAS, flip=st.booleans(), data=st.data())
def test_nested_unions_run_the_larger_part(p, q, flip, data):
    lo = max(_side(p), _side(q))
    H, W = data.draw(st.integers(lo, 9), label="H"), data.draw(st.integers(lo, 9), label="W")
    union = (p & q) | p if flip else p | (p & q)
    assert union_plan(union, H, W) in ((1, 0) if flip else (0,))  # p & q may equal p
    check_fast(union, dense_mask(p, H, W), H, W, data.draw(st.integers(1, 2)))


@pytest.mark.parametrize(
    ("union", "H", "W"),  # maps large enough for the default thresholds to take the fast path
    [
        (Window(3) | _RowBeyond(3), 40, 12),
        (Neighborhood(3) | _Minus(Neighborhood(3), _Lattice(3)), 18, 19),
    ],
    ids=["window+row", "neighborhood+lattice"],
)
def test_named_disjoint_pairs(union, H, W):
    assert union_plan(union, H, W) == "disjoint"
    assert "dense" not in {extend._part_kind(p, H, W) for p in union.parts}
    mask = dense_mask(union.parts[0], H, W) | dense_mask(union.parts[1], H, W)
    check_fast(union, mask, H, W, 2, gather=extend.GATHER_MAX)


def _sizes(rank: int):
    return st.tuples(*[st.integers(1, 3 if rank == 3 else 6)] * rank)


@st.composite
def _nd_parts(draw, rank: int):
    """A rectangular built-in of ``rank`` axes (windows, grids, stripes along any axis)."""
    kind = draw(st.sampled_from(["window", "grid", "stripe", "global"]))
    if kind == "window":
        size = draw(_sizes(rank))
        return Window(size, shift=tuple(draw(st.integers(0, w - 1)) for w in size))
    if kind == "grid":
        return Grid(draw(_sizes(rank)))
    if kind == "stripe" and rank > 1:
        return Stripe(draw(st.integers(1, 3)), axis=draw(st.integers(0, rank - 1)))
    return Global()


@settings(max_examples=30, deadline=None)
@given(rank=st.sampled_from([1, 3]), data=st.data())
def test_fast_unions_at_any_rank(rank, data):
    """1-D sequences and 3-D clips: a disjoint pair ``p | (q minus p)`` merges partial
    attentions and a nested pair ``p | (p & q)`` runs ``p`` alone, without the dense lowering;
    equal to dense masked attention (float64, 1e-10, input gradient included)."""
    p = data.draw(_nd_parts(rank), label="p")
    q = data.draw(st.one_of(st.just(Global()), _nd_parts(rank)), label="q")  # q minus p: not {}
    top = 12 if rank == 1 else 5
    shape = tuple(data.draw(st.integers(1, top), label=f"axis {i}") for i in range(rank))
    nested = data.draw(st.booleans(), label="nested")
    union = p | (p & q) if nested else p | _Minus(p, q)
    mask = dense_mask(union, shape)
    plan = union_plan(union, *shape)
    assert plan == 0 or (plan == "disjoint" and not nested), plan
    event(f"rank {rank}: {'nested' if plan == 0 else plan}")

    def refuse(*args, **kwargs):
        raise AssertionError("the union ran the dense lowering")

    layer = randomize_(Attention(partition=union).build(8, 2).double())
    B, N = data.draw(st.integers(0, 2), label="B"), math.prod(shape)
    x = torch.randn(B, *shape, 8, dtype=torch.float64, requires_grad=True)
    q_, k_, v_ = layer.qkv(x.reshape(B, N, 8)).view(B, N, 3, 2, 4).permute(2, 0, 3, 1, 4)
    a = (q_ @ k_.transpose(-1, -2) * layer.scale).masked_fill(~mask, float("-inf"))
    ref = layer.proj((a.softmax(-1) @ v_).transpose(1, 2).reshape(B, *shape, 8))
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), x) if B else (torch.zeros_like(x),)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(extend, "rule_dense_lowering", refuse)
        m.setattr(extend, "GATHER_MAX", 1.0)
        out = layer(x, hw=shape)  # hw: a union of rank-free parts on a (B, L, C) sequence
        (grad,) = torch.autograd.grad(out.square().sum(), x) if B else (torch.zeros_like(x),)
    torch.testing.assert_close(out, ref, **CLOSE)
    torch.testing.assert_close(grad, ref_grad, **CLOSE)


def test_overlapping_sets_and_encoders_take_the_dense_lowering():
    over = Window(3) | Stripe(1, axis="h")
    assert union_plan(over, 7, 8) is None
    text = explain(Attention(partition=over), (7, 8), 8, 2)
    assert "overlapping key sets: runs the dense lowering" in text
    disjoint = Window(3) | _RowBeyond(3)
    text = explain(Attention(partition=disjoint), (40, 12), 8, 2)
    assert "disjoint key sets: each part's" in text and "(windows, gathered keys)" in text
    text = explain(Attention(partition=Neighborhood(3) | _Lattice(4)), (18, 19), 8, 2)
    assert "overlapping" in text  # the lattice holds some neighbours
    lattice = Neighborhood(3) | _Minus(Neighborhood(3), _Lattice(4))
    assert "(gathered keys, columns)" in explain(Attention(partition=lattice), (18, 19), 8, 2)
    # on a small map a part's key list is longer than N / 32: no gain, the dense lowering
    text = explain(Attention(partition=disjoint), (7, 8), 8, 2)
    assert "has no form cheaper than N x N keys: runs the dense lowering" in text
    nested = Window(3) | (Window(3) & Stripe(1, axis="h"))
    assert "runs Window(3) alone" in explain(Attention(partition=nested), (7, 8), 8, 2)
    # with an encoder the union's own frames apply: the dense lowering, equal to backend="dense"
    spec = Attention(partition=disjoint, pe=LePE())
    eager = randomize_(spec.build(8, 2).double())
    dense = Attention(partition=disjoint, pe=LePE(), backend="dense").build(8, 2).double()
    dense.load_state_dict(eager.state_dict())
    x = torch.randn(2, 7, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(eager(x), dense(x), **CLOSE)


def test_a_query_without_keys_takes_the_dense_lowering():
    class _Nothing(RulePartition):
        def allows(self, q, k):
            return (q[0] < 0) & (k[0] < 0)

    class _FirstRow(RulePartition):
        def allows(self, q, k):
            return (q[0] == 0) & (k[0] == 0)

    assert union_plan(_FirstRow() | _Nothing(), 3, 3) is None
