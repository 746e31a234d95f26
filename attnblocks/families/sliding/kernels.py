"""Sliding-window (dilated / neighbourhood) attention: two eager lowerings of one head group.

Both take the group's fused projection ``qkv: (B, H, W, 3, c)`` (``c = heads * d``) and a plan
from :mod:`.plan`, and return ``(B, H, W, c)``. Neither makes ``k*k`` copies
of the keys and values:

- :func:`slices_attention`: logits as one product of q with a shifted slice (a view) of the
  zero-padded keys per offset, a softmax over those few logits, and the output as the
  weighted sum of the same shifted slices of the values. Only the padded keys/values and the
  ``(n, B, H, W, h)`` logits are stored. Best for small kernels (3x3).
- :func:`tiles_attention`: query tiles of one dilation sub-grid attend to their key region
  gathered by indexing, with a per-tile additive mask, in one fused SDPA call. Best for large
  kernels (NAT's 7x7).

Both take an optional additive ``bias`` in their own slot layout (NAT's relative position bias,
gathered from its table by :func:`offset_bias` / :func:`tile_bias`).

A third, :func:`gather_attention`, holds at any rank and for stride and causal axes: each
query's ``K`` keys gathered by index (:func:`~attnblocks.families.sliding.plan.gather_plan`),
``qkv: (B, *shape, 3, c) -> (B, *shape, c)``. It makes ``K`` copies of the keys and values (the
price of generality: the 2-D plain windows keep the two strategies above).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from ..._cache import size_cache
from ...kernels import attend
from ...masks import additive
from ...partition import Dilated
from .plan import (
    gather_plan,
    nd_tile_plan,
    offset_bias_index,
    offset_plan,
    tile_bias_index,
    tile_plan,
)

__all__ = [
    "gather_attention",
    "gather_inputs",
    "nd_tile_inputs",
    "nd_tiles_attention",
    "offset_bias",
    "slices_attention",
    "slices_inputs",
    "tile_bias",
    "tile_inputs",
    "tiles_attention",
]


@size_cache(256, constant=True)
def slices_inputs(
    partition: Dilated, H: int, W: int, dtype: torch.dtype, device: torch.device
) -> tuple[tuple[tuple[int, int], ...], tuple[int, int], torch.Tensor | None]:
    """The offsets, padding and ``(n, 1, H, W, 1)`` additive mask (``None``: no mask) of the
    slices lowering of ``partition`` on ``H x W``; constants under ``torch.compile``.

    Example:
        >>> from attnblocks import Neighborhood
        >>> offsets, pad, mask = slices_inputs(Neighborhood(3), 4, 5, torch.float32, "cpu")
        >>> len(offsets), pad, tuple(mask.shape)
        (25, (2, 2), (25, 1, 4, 5, 1))
    """
    plan = offset_plan(partition, H, W)
    if plan.allowed is None:
        return plan.offsets, plan.pad, None
    mask = additive(torch.from_numpy(plan.allowed).to(device).permute(2, 0, 1), dtype)
    return plan.offsets, plan.pad, mask[:, None, :, :, None]


def slices_attention(
    qkv: torch.Tensor,
    partition: Dilated,
    heads: int,
    scale: float,
    dropout_p: float = 0.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sliding-window attention as a loop over the plan's key offsets.

    Out-of-map slots read the zero padding: under ``border="zeros"`` they stay in the softmax
    as zero keys and values (DilateFormer); otherwise the plan's mask removes them.

    Args:
        qkv: ``(B, H, W, 3, c)``, the group's channels of q, k and v.
        partition: a concrete :class:`~attnblocks.Dilated` (its
            :func:`~attnblocks.families.sliding.plan.offset_plan` gives the offsets).
        heads: the group's number of heads (``c = heads * d``).
        scale: the logit scale, applied after the dot products (in fp32 for fp16 / bf16
            inputs, as the softmax).
        dropout_p: attention dropout probability.
        bias: ``(n, heads)`` additive logits per offset (see :func:`offset_bias`), or ``None``.

    Returns:
        ``(B, H, W, c)``.

    Example:
        >>> import torch
        >>> from attnblocks import Dilated
        >>> qkv = torch.randn(2, 5, 6, 3, 8)
        >>> slices_attention(qkv, Dilated(3), 2, 0.5).shape
        torch.Size([2, 5, 6, 8])
    """
    H, W, c = qkv.shape[1], qkv.shape[2], qkv.shape[4]
    d = c // heads
    # fp16 / bf16: logits and softmax in fp32, as the fused kernels (the tiles' SDPA) do; q.k
    # of inputs of magnitude 1e4 overflows fp16
    low = qkv.dtype in (torch.float16, torch.bfloat16)
    logit_dtype = torch.float32 if low else qkv.dtype
    offsets, (py, px), mask = slices_inputs(partition, H, W, logit_dtype, qkv.device)
    ry, rx = partition.dilation_size
    q = qkv[..., 0, :].unflatten(-1, (heads, d))
    kv = F.pad(qkv[..., 1:, :], (0, 0, 0, 0, px, px, py, py))  # (B, H + 2py, W + 2px, 2, c)
    views = [kv[:, py + oy * ry :, px + ox * rx :][:, :H, :W] for oy, ox in offsets]
    if low:
        q = q.float()
    # offsets lead: the softmax then runs across n contiguous (B, H, W, h) slabs
    a = torch.stack(
        [(q * t[..., 0, :].unflatten(-1, (heads, d)).to(logit_dtype)).sum(-1) for t in views]
    )
    a = a * scale  # (n, B, H, W, h)
    if bias is not None:
        a = a + bias.to(a.dtype)[:, None, None, None, :]
    if mask is not None:
        a = a + mask
    w = a.softmax(dim=0).to(qkv.dtype)
    if dropout_p:
        w = F.dropout(w, dropout_p)
    out = None
    for wi, t in zip(w.unsqueeze(-1), views):
        v = t[..., 1, :].unflatten(-1, (heads, d))
        out = wi * v if out is None else torch.addcmul(out, wi, v)
    return out.flatten(-2)


@size_cache(256, constant=True)
def tile_inputs(
    partition: Dilated,
    H: int,
    W: int,
    tile: int,
    heads: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query and key indices, the ``(1, heads * nT, Tq, Tk)`` additive mask and the inverse
    index of the tiles lowering of ``partition`` on ``H x W`` (see
    :class:`~attnblocks.families.sliding.plan.TilePlan`); constants under ``torch.compile``.

    Example:
        >>> from attnblocks import Neighborhood
        >>> q, k, mask, inv = tile_inputs(Neighborhood(5), 9, 8, 8, 2, torch.float32, "cpu")
        >>> tuple(q.shape), tuple(k.shape), tuple(mask.shape), tuple(inv.shape)
        ((2, 64), (2, 72), (1, 4, 64, 72), (72,))
    """
    return _tile_tensors(tile_plan(partition, H, W, tile), heads, dtype, device)


def tiles_attention(
    qkv: torch.Tensor,
    partition: Dilated,
    heads: int,
    scale: float,
    dropout_p: float = 0.0,
    tile: int = 8,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sliding-window attention of query tiles over their gathered key regions.

    Slots outside the map index a zero token; the plan's per-tile mask keeps each query to its
    own window (under ``border="zeros"`` the out-of-map slots of the window stay in, as zero
    keys and values).

    Args:
        qkv: ``(B, H, W, 3, c)``, the group's channels of q, k and v.
        partition: a concrete :class:`~attnblocks.Dilated` (its
            :func:`~attnblocks.families.sliding.plan.tile_plan` gives the tiles).
        heads: the group's number of heads (``c = heads * d``).
        scale: the logit scale.
        dropout_p: attention dropout probability.
        tile: queries per tile side.
        bias: ``(heads, nT, Tq, Tk)`` additive logits per slot pair (see :func:`tile_bias`),
            or ``None``.

    Returns:
        ``(B, H, W, c)``.

    Example:
        >>> import torch
        >>> from attnblocks import Neighborhood
        >>> qkv = torch.randn(1, 9, 8, 3, 8)
        >>> tiles_attention(qkv, Neighborhood(5), 2, 0.5).shape
        torch.Size([1, 9, 8, 8])
    """
    B, H, W = qkv.shape[:3]
    query, key, mask, inverse = tile_inputs(partition, H, W, tile, heads, qkv.dtype, qkv.device)
    t = rearrange(qkv, "b y x three (h d) -> three b h (y x) d", h=heads)
    t = F.pad(t, (0, 0, 0, 1))  # the zero token, index N
    nT, Tq = query.shape
    d = t.shape[-1]  # explicit sizes: a batch of 0 leaves -1 ambiguous
    if bias is not None:
        mask = mask + bias.to(mask.dtype).reshape(mask.shape)
    # index_select on flat indices: several times faster than advanced indexing on CPU
    q = t[0].index_select(2, query.view(-1)).view(B, heads * nT, Tq, d)  # (B, h * nT, Tq, d)
    kv = t[1:].index_select(3, key.view(-1)).view(2, B, heads * nT, key.shape[1], d)
    k, v = kv.unbind(0)
    o = attend(q, k, v, mask, scale, dropout_p)
    o = o.reshape(B, heads, nT * Tq, d).index_select(2, inverse)  # (B, h, N, d)
    return rearrange(o, "b h (y x) d -> b y x (h d)", y=H)


@size_cache(256, constant=True)
def gather_inputs(
    partition: Dilated, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The flat ``(N * K,)`` key index (``N``: the zero token) and the ``(N, 1, K)`` additive
    mask (``None``: every slot is a key) of the gather lowering of ``partition`` on a map of
    ``shape``; constants under ``torch.compile``.

    Example:
        >>> from attnblocks import Neighborhood
        >>> index, mask = gather_inputs(Neighborhood(3, causal=True), (5,), torch.float32, "cpu")
        >>> tuple(index.shape), tuple(mask.shape)
        ((15,), (5, 1, 3))
    """
    plan = gather_plan(partition, tuple(shape))
    index = torch.from_numpy(plan.index.reshape(-1)).to(device)
    if plan.valid is None:
        return index, None
    return index, additive(torch.from_numpy(plan.valid).to(device), dtype)[:, None, :]


def gather_attention(
    qkv: torch.Tensor,
    partition: Dilated,
    heads: int,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Sliding-window attention of every query over its gathered keys, at any rank.

    ``softmax(q k^T * scale) v`` over the ``K`` key slots of each query (the product of the
    kernel over the axes), slots that are not keys masked out; under ``border="zeros"`` the
    out-of-map slots read a zero token and stay in the softmax. Logits and softmax run in fp32
    for fp16 / bf16 inputs, as :func:`~attnblocks.kernels.attend` does.

    Args:
        qkv: ``(B, *shape, 3, c)``, the group's channels of q, k and v on a map of any rank.
        partition: a concrete :class:`~attnblocks.Dilated` (any stride and causal axes).
        heads: the group's number of heads (``c = heads * d``).
        scale: the logit scale.
        dropout_p: attention dropout probability.

    Returns:
        ``(B, *shape, c)``.

    Example:
        >>> import torch
        >>> from attnblocks import Neighborhood
        >>> qkv = torch.randn(2, 4, 5, 6, 3, 8)
        >>> gather_attention(qkv, Neighborhood((3, 3, 5), stride=2), 2, 0.5).shape
        torch.Size([2, 4, 5, 6, 8])
    """
    B, shape, c = qkv.shape[0], tuple(qkv.shape[1:-2]), qkv.shape[-1]
    N, d = math.prod(shape), c // heads
    low = qkv.dtype in (torch.float16, torch.bfloat16)
    logit_dtype = torch.float32 if low else qkv.dtype
    index, mask = gather_inputs(partition, shape, logit_dtype, qkv.device)
    K = index.shape[0] // max(N, 1)
    t = qkv.reshape(B, N, 3, heads, d)
    kv = F.pad(t[:, :, 1:], (0, 0, 0, 0, 0, 0, 0, 1))  # the zero token, index N
    kv = kv.index_select(1, index).view(B, N, K, 2, heads, d)
    q, k, v = t[:, :, 0], kv[..., 0, :, :], kv[..., 1, :, :]
    a = torch.einsum("bnhd,bnkhd->bnhk", q.to(logit_dtype), k.to(logit_dtype)) * scale
    if mask is not None:
        a = a + mask
    w = a.softmax(dim=-1).to(qkv.dtype)
    if dropout_p:
        w = F.dropout(w, dropout_p)
    o = torch.einsum("bnhk,bnkhd->bnhd", w, v)
    return o.reshape(B, *shape, c)


@size_cache(256, constant=True)
def nd_tile_inputs(
    partition: Dilated,
    shape: tuple[int, ...],
    tile: int,
    heads: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query and key indices, the ``(1, heads * nT, Tq, Tk)`` additive mask and the inverse
    index of :func:`nd_tiles_attention` (plan: :func:`~attnblocks.families.sliding.plan.\
nd_tile_plan`); constants under ``torch.compile``.

    Example:
        >>> from attnblocks import Neighborhood
        >>> q, k, mask, inv = nd_tile_inputs(Neighborhood(3, stride=2), (9,), 4, 2,
        ...                                  torch.float32, "cpu")
        >>> tuple(q.shape), tuple(k.shape), tuple(mask.shape), tuple(inv.shape)
        ((3, 4), (3, 5), (1, 6, 4, 5), (9,))
    """
    return _tile_tensors(nd_tile_plan(partition, tuple(shape), tile), heads, dtype, device)


def _tile_tensors(plan, heads: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, ...]:
    """A tile plan's query and key indices, ``(1, heads * nT, Tq, Tk)`` additive mask and
    inverse order as tensors on ``device``."""
    mask = additive(torch.from_numpy(plan.allowed).to(device), dtype)
    nT, Tq, Tk = mask.shape
    mask = mask.expand(heads, nT, Tq, Tk).reshape(1, heads * nT, Tq, Tk)
    query, key, inverse = (
        torch.from_numpy(a).to(device) for a in (plan.query, plan.key, plan.inverse)
    )
    return query, key, mask, inverse


def nd_tiles_attention(
    qkv: torch.Tensor,
    partition: Dilated,
    heads: int,
    scale: float,
    dropout_p: float = 0.0,
    tile: int = 4,
) -> torch.Tensor:
    """:func:`tiles_attention` at any rank and for stride and causal axes: query tiles of up to
    ``tile`` sub-grid queries per axis over their gathered key regions, one SDPA call.

    Args:
        qkv: ``(B, *shape, 3, c)``, the group's channels of q, k and v.
        partition: a concrete :class:`~attnblocks.Dilated`.
        heads: the group's number of heads (``c = heads * d``).
        scale: the logit scale.
        dropout_p: attention dropout probability.
        tile: queries per tile and axis (rounded up to a multiple of the stride).

    Returns:
        ``(B, *shape, c)``.

    Example:
        >>> import torch
        >>> from attnblocks import Neighborhood
        >>> qkv = torch.randn(1, 4, 6, 7, 3, 8)
        >>> nd_tiles_attention(qkv, Neighborhood(3, causal=(True, False, False)), 2, 0.5).shape
        torch.Size([1, 4, 6, 7, 8])
    """
    B, shape, c = qkv.shape[0], tuple(qkv.shape[1:-2]), qkv.shape[-1]
    N, d = math.prod(shape), c // heads
    query, key, mask, inverse = nd_tile_inputs(partition, shape, tile, heads, qkv.dtype, qkv.device)
    t = qkv.reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
    t = F.pad(t, (0, 0, 0, 1))  # the zero token, index N
    nT, Tq = query.shape
    q = t[0].index_select(2, query.view(-1)).view(B, heads * nT, Tq, d)
    kv = t[1:].index_select(3, key.view(-1)).view(2, B, heads * nT, key.shape[1], d)
    o = attend(q, kv[0], kv[1], mask, scale, dropout_p)
    o = o.reshape(B, heads, nT * Tq, d).index_select(2, inverse)  # (B, h, N, d)
    return o.permute(0, 2, 1, 3).reshape(B, *shape, c)


# ---------------------------------------------------------------------------------------------
# relative position bias: a (h, 2k-1, 2k-1) table gathered into each lowering's slots
# ---------------------------------------------------------------------------------------------


@size_cache(256, constant=True)
def _bias_index(
    partition: Dilated, H: int, W: int, tile: int | None, device: torch.device
) -> torch.Tensor:
    """The table entries of the slices (``tile=None``) or tiles lowering, on ``device``."""
    index = (
        offset_bias_index(partition, H, W)
        if tile is None
        else tile_bias_index(partition, H, W, tile)
    )
    return torch.from_numpy(index).to(device)


def offset_bias(table: torch.Tensor, partition: Dilated, H: int, W: int) -> torch.Tensor:
    """``table: (h, 2k-1, 2k-1)`` -> ``(n, h)``: each offset's bias for :func:`slices_attention`.

    Example:
        >>> import torch
        >>> from attnblocks import Dilated
        >>> table = torch.arange(25.0).view(1, 5, 5)
        >>> offset_bias(table, Dilated(3), 5, 6)[:, 0].tolist()  # offsets (-1, -1) .. (1, 1)
        [6.0, 7.0, 8.0, 11.0, 12.0, 13.0, 16.0, 17.0, 18.0]
    """
    return table.flatten(1).index_select(1, _bias_index(partition, H, W, None, table.device)).T


def tile_bias(table: torch.Tensor, partition: Dilated, H: int, W: int, tile: int) -> torch.Tensor:
    """``table: (h, 2k-1, 2k-1)`` -> ``(h, nT, Tq, Tk)``: the bias of every slot pair of the
    tile plan ``tile_plan(partition, H, W, tile)``, for :func:`tiles_attention`.

    Example:
        >>> import torch
        >>> from attnblocks import Neighborhood
        >>> tile_bias(torch.randn(2, 5, 5), Neighborhood(3), 9, 8, tile=4).shape
        torch.Size([2, 6, 16, 36])
    """
    index = _bias_index(partition, H, W, tile, table.device)
    # index_select on the flat index: 3-5x faster than advanced indexing, forward and backward
    return table.flatten(1).index_select(1, index.view(-1)).view(-1, *index.shape)
