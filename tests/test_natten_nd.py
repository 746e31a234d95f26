"""Neighbourhood attention of any rank against NATTEN 0.21: ``natten.functional.na1d``,
``na2d`` and ``na3d`` (CPU, fp32; on CPU NATTEN runs its flex-fna backend) with per-axis
``kernel_size``, ``stride``, ``dilation`` and ``is_causal`` equal :class:`~attnblocks.Neighborhood`
with ``kernel``, ``stride``, ``dilation`` and ``causal`` (atol 2e-5). Skipped where natten is not
importable; CI runs them with ``-k "natten or na2d"`` after installing it.

NATTEN's CPU backend needs a head dim that is a power of two in [8, 512] and kernels >= 2; it
has no backward on CPU (FlexAttention's), so gradients are checked against the dense oracle in
``tests/families/sliding/test_nd.py``; and a causal 1-D window as long as the sequence is its
self-attention shortcut, a causal FMHA that CPU flex cannot run, so those cases are left out.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from attnblocks import Attention, Neighborhood
from attnblocks.families.sliding.kernels import gather_attention
from attnblocks.functional import attention

natten = pytest.importorskip("natten")
from natten.functional import na1d, na2d, na3d  # noqa: E402

NA = {1: na1d, 2: na2d, 3: na3d}
ATOL = 2e-5


def _single(values: list):
    return values[0] if len(set(values)) == 1 else tuple(values)


@st.composite
def natten_cases(draw, ranks=(1, 2, 3)):
    """Per-axis kernel (>= 2), dilation, stride and causal on a map they fit."""
    rank = draw(st.sampled_from(ranks))
    side = {1: 16, 2: 9, 3: 6}[rank]
    shape = tuple(draw(st.integers(2, side)) for _ in range(rank))
    ks, rs, ss, cs = [], [], [], []
    for L in shape:
        k = draw(st.integers(2, L))
        r = draw(st.integers(1, L // k))
        ks.append(k), rs.append(r)
        ss.append(draw(st.integers(1, k))), cs.append(draw(st.booleans()))
    assume(not (rank == 1 and cs[0] and ks[0] == shape[0]))  # NATTEN's causal FMHA shortcut
    return shape, tuple(ks), tuple(rs), tuple(ss), tuple(cs)


def _natten(q, k, v, kernel, dilation, stride, causal):
    with warnings.catch_warnings():  # uncompiled flex on CPU: a performance warning
        warnings.simplefilter("ignore")
        return NA[q.dim() - 3](
            q, k, v, kernel_size=kernel, stride=stride, dilation=dilation, is_causal=causal
        )


def _spec(kernel, dilation, stride, causal) -> Neighborhood:
    r = _single(list(dilation))
    return Neighborhood(
        _single(list(kernel)),
        dilation=(r,) if isinstance(r, tuple) else r,
        stride=_single(list(stride)),
        causal=_single(list(causal)),
    )


def _qkv(shape, heads=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, *shape, heads, d, generator=g) for _ in range(3))


def _gather(q, k, v, part):
    """``(B, *shape, heads, D)`` through the gather lowering (NATTEN's layout in and out)."""
    qkv = torch.stack((q, k, v), dim=-3).flatten(-2)  # (B, *shape, 3, heads * D)
    out = gather_attention(qkv, part, q.shape[-2], q.shape[-1] ** -0.5)
    return out.view(q.shape)


@given(natten_cases(), st.integers(0, 2**16))
def test_natten_nd_equals_gather(case, seed):
    shape, kernel, dilation, stride, causal = case
    q, k, v = _qkv(shape, seed=seed)
    ref = _natten(q, k, v, kernel, dilation, stride, causal)
    out = _gather(q, k, v, _spec(kernel, dilation, stride, causal))
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


@given(natten_cases(), st.integers(0, 2**16))
def test_natten_nd_equals_functional_attention(case, seed):
    shape, kernel, dilation, stride, causal = case
    q, k, v = _qkv(shape, seed=seed)
    ref = _natten(q, k, v, kernel, dilation, stride, causal)
    part = _spec(kernel, dilation, stride, causal)
    for backend in ("eager", "dense"):
        out = attention(q, k, v, part, backend=backend)
        torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("shape", "kernel", "dilation", "stride", "causal"),
    [
        ((13,), (4,), (3,), (3,), (False,)),
        ((12,), (5,), (2,), (5,), (True,)),
        ((7, 9), (3, 4), (2, 2), (3, 2), (True, False)),
        ((4, 6, 7), (2, 3, 3), (1, 2, 2), (1, 3, 2), (True, False, False)),
        ((5, 6, 6), (3, 3, 3), (1, 1, 2), (3, 3, 1), (False, True, True)),
        ((3, 8, 8), (3, 7, 7), (1, 1, 1), (1, 1, 1), (True, False, False)),
    ],
)
def test_natten_na1d_na3d_cases(shape, kernel, dilation, stride, causal):
    q, k, v = _qkv(shape, seed=3)
    ref = _natten(q, k, v, kernel, dilation, stride, causal)
    part = _spec(kernel, dilation, stride, causal)
    torch.testing.assert_close(_gather(q, k, v, part), ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(attention(q, k, v, part), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "causal"),
    [((10,), 4, 2, True), ((3, 6, 5), (2, 3, 3), (1, 2, 3), (True, False, False))],
)
def test_natten_layer_on_sequences_and_video(shape, kernel, stride, causal):
    """The layer's attention core (its own projections around it) equals NATTEN's."""
    torch.manual_seed(0)
    heads, d = 2, 8
    part = Neighborhood(kernel, stride=stride, causal=causal)
    layer = Attention(partition=part).build(heads * d, heads)
    x = torch.randn(2, math.prod(shape), heads * d)
    with torch.no_grad():
        out = layer(x, hw=shape)
        q, k, v = layer.qkv(x).view(2, *shape, 3, heads, d).unbind(-3)
        rank = len(shape)
        per = lambda t: t if isinstance(t, tuple) else (t,) * rank  # noqa: E731
        o = _natten(q, k, v, per(kernel), (1,) * rank, per(stride), per(causal))
        ref = layer.proj(o.reshape(2, -1, heads * d))
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
