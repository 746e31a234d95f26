"""The flex backend for sliding windows (:class:`~attnblocks.Dilated`, ``Neighborhood``) and
downsampled keys (:class:`~attnblocks.Downsample`).

Sliding windows: the tokens are permuted so that each dilation sub-grid (the positions
congruent to ``(ry, rx)`` modulo the dilation ``r``) is contiguous, row-major within it. A query
only sees keys of its own sub-grid, a band of about ``k`` sub-grid rows around it, so in this
order the nonzero blocks hug the diagonal of ``r*r`` diagonal sub-blocks (in row-major order a
dilated window spreads over ``r`` times as many rows). The ``mask_mod`` is written from the
coordinates of the query and key (looked up from their permuted index):

- same sub-grid per axis (``yq % r == yk % r``, the same for ``x``);
- ``border="mask"``: ``|dy|, |dx| <= r * (k // 2)``;
- ``border="shift"``: the key's sub-grid index lies in ``[s, s + k)`` with the window start
  ``s = clamp(q // r - k // 2, 0, L_sub - k)`` per axis, ``L_sub`` the query's sub-grid length;
  stride and causal axes as :class:`~attnblocks.Dilated` states them (the tile leader's window;
  causal: ``leader - k < j <= q // r``).

Maps of other ranks (1-D, 3-D) keep the row-major order, the same per-axis rule on every axis
(:func:`sliding_block_mask_nd`).

``border="zeros"`` keeps out-of-map keys as zero vectors *in* the softmax, which no mask can
express: it raises. :class:`~attnblocks.Downsample` needs no mask at all (every query sees every
reduced token): its keys and values come from the runner's own reduction, and FlexAttention
runs without a block mask.

On CPU FlexAttention has no backward (torch 2.14): a call that records a graph raises.

In this order a dilated window's blocks hug the diagonal (a fraction of the blocks of the
row-major order, and so of the time, compiled); uncompiled, FlexAttention materialises the
scores, so ``"auto"`` never picks it on CPU. Measurements: ``benchmarks/rules.md``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch

from ..._cache import size_cache
from ..._errors import AttnblocksError
from ...backends.registry import register_lowering
from ...kernels import check_flex_call, fresh_inputs
from ...masks import token_coords
from ...partition import Dilated
from .plan import check_fits

__all__ = [
    "flex_sliding_lowering",
    "sliding_block_mask",
    "sliding_block_mask_nd",
    "subgrid_order",
]


@size_cache(64, constant=True)
def subgrid_order(
    H: int, W: int, dilation: int | tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Sub-grid-major token order of an ``H x W`` map with dilation ``r`` (or ``(ry, rx)``).

    Returns ``(perm, inverse, y, x)``, all ``(N,)`` int64: ``perm[i]`` is the row-major index of
    the ``i``-th token in the new order (sub-grids ``(y % r, x % r)`` in row-major order, each
    row-major within), ``inverse`` undoes it, and ``y, x`` are the coordinates of the ``i``-th
    token.

    Example:
        >>> perm, inverse, y, x = subgrid_order(3, 4, 2, torch.device("cpu"))
        >>> perm.tolist()
        [0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 5, 7]
        >>> bool((perm[inverse] == torch.arange(12)).all())
        True
    """
    ry, rx = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    n = torch.arange(H * W, device=device)
    y, x = n // W, n % W
    key = (((y % ry) * rx + x % rx) * H + y // ry) * W + x // rx
    perm = torch.argsort(key)
    inverse = torch.argsort(perm)
    return perm, inverse, y[perm], x[perm]


def _axis_in_window(
    q: torch.Tensor, k: torch.Tensor, L: int, kernel: int, r: int, border: str,
    stride: int = 1, causal: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Whether key coordinate ``k`` is in the window of query coordinate ``q`` along one axis
    (the rule of :class:`~attnblocks.Dilated`: tile leader, then the window)."""
    same = (q % r) == (k % r)
    i, j = q // r, k // r
    length = (L - q % r + r - 1) // r  # positions on the query's sub-grid
    if causal:
        leader = torch.minimum((i // stride) * stride + stride - 1, length - 1)
        return same & (j <= i) & (leader - j < kernel)
    leader = i if stride == 1 else torch.minimum((i // stride) * stride + stride // 2, length - 1)
    if border == "mask":
        return same & ((j - leader).abs() <= kernel // 2)
    start = torch.minimum((leader - kernel // 2).clamp(min=0), length - kernel)
    return same & (j >= start) & (j < start + kernel)


def _sliding_mask_mod(
    y: torch.Tensor, x: torch.Tensor, H: int, W: int, kernel: tuple[int, int],
    r: tuple[int, int], border: str, b, h, q_idx, kv_idx,
    stride: tuple[int, int] = (1, 1), causal: tuple[bool, bool] = (False, False),
):  # fmt: skip
    in_y = _axis_in_window(y[q_idx], y[kv_idx], H, kernel[0], r[0], border, stride[0], causal[0])
    in_x = _axis_in_window(x[q_idx], x[kv_idx], W, kernel[1], r[1], border, stride[1], causal[1])
    return in_y & in_x


@size_cache(64)
def sliding_block_mask(partition: Dilated, H: int, W: int, device: torch.device):
    """The :class:`BlockMask` of a concrete ``Dilated`` on ``H x W``, in sub-grid-major order.

    Example:
        >>> from attnblocks import Dilated
        >>> bm = sliding_block_mask(Dilated(3, border="mask"), 5, 6, torch.device("cpu"))
        >>> bm.shape
        (1, 1, 30, 30)
    """
    from torch.nn.attention.flex_attention import create_block_mask

    kernel, r, stride, causal = partition.axes(2)
    _, _, y, x = subgrid_order(H, W, r, device)
    mod = partial(
        _sliding_mask_mod, y, x, H, W, kernel, r, partition.border, stride=stride, causal=causal
    )
    N = H * W
    return create_block_mask(mod, None, None, N, N, device=device)


def _nd_mask_mod(
    coords: tuple[torch.Tensor, ...], shape: tuple[int, ...], axes: tuple, border: str,
    b, h, q_idx, kv_idx,
):  # fmt: skip
    allowed = None
    for c, L, (k, r, s, causal) in zip(coords, shape, axes):
        a = _axis_in_window(c[q_idx], c[kv_idx], L, k, r, border, s, causal)
        allowed = a if allowed is None else allowed & a
    return allowed


@size_cache(64)
def sliding_block_mask_nd(partition: Dilated, shape: tuple[int, ...], device: torch.device):
    """The :class:`BlockMask` of a concrete ``Dilated`` on a map of ``shape`` (any rank), in
    row-major token order: the per-axis rule of :func:`_axis_in_window` on each axis.

    Example:
        >>> from attnblocks import Neighborhood
        >>> bm = sliding_block_mask_nd(Neighborhood(3, causal=True), (4, 5, 6), torch.device("cpu"))
        >>> bm.shape
        (1, 1, 120, 120)
    """
    from torch.nn.attention.flex_attention import create_block_mask

    N = math.prod(shape)
    coords = token_coords(shape, torch.arange(N, device=device))
    axes = tuple(zip(*partition.axes(len(shape))))
    mod = partial(_nd_mask_mod, coords, tuple(shape), axes, partition.border)
    return create_block_mask(mod, None, None, N, N, device=device)


def _check_encoders(g: Any, encoders: Any) -> None:
    for e in encoders:
        if e.acts_per_window():
            raise AttnblocksError(
                f"backend='flex': {type(e).__name__} adds per-window biases or values, which "
                f"{g.partition!r} (head group {g.index}) does not support; sliding windows "
                f"combine with encoders that act on the input, such as CPE()."
            )


@register_lowering("flex", Dilated)
def flex_sliding_lowering(runner: Any, qkv: torch.Tensor, ctx: Any) -> torch.Tensor:
    """One sliding-window head group with FlexAttention: ``(B, H, W, 3, c) -> (B, H, W, c)``
    in sub-grid-major order; other ranks ``(B, *shape, 3, c) -> (B, *shape, c)`` in row-major
    order (:func:`sliding_block_mask_nd`).

    Example:
        >>> import warnings
        >>> from attnblocks import Attention, Neighborhood
        >>> layer = Attention(partition=Neighborhood(3, dilation=2), backend="flex").build(8, 2)
        >>> with torch.no_grad(), warnings.catch_warnings():  # eager flex: unfused on CPU
        ...     warnings.simplefilter("ignore")
        ...     layer(torch.randn(1, 7, 9, 8)).shape
        torch.Size([1, 7, 9, 8])
    """
    from torch.nn.attention.flex_attention import flex_attention

    g = runner.group
    part: Dilated = g.partition
    if part.border == "zeros":
        raise AttnblocksError(
            f"backend='flex' cannot run {part!r}: border='zeros' keeps out-of-map keys as zero "
            f"vectors inside the softmax, which a FlexAttention mask cannot express. Use "
            f"backend='eager' (or 'auto') for it, or border='mask' to drop those keys."
        )
    check_flex_call(g, qkv, ctx)
    _check_encoders(g, ctx.encoders)
    if qkv.dim() != 5:  # other ranks: row-major order
        B, shape, c = qkv.shape[0], tuple(qkv.shape[1:-2]), qkv.shape[-1]
        check_fits(part, *shape)
        h, N = g.num_heads, math.prod(shape)
        t = qkv.reshape(B, N, 3, h, c // h).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
        q, k, v, negated = fresh_inputs(t[0], t[1], t[2])
        bm = sliding_block_mask_nd(part, shape, qkv.device)
        o = flex_attention(q, k, v, block_mask=bm, scale=ctx.scale).transpose(1, 2)
        o = o.reshape(B, *shape, c)
        return -o if negated else o
    B, H, W, _, c = qkv.shape
    check_fits(part, H, W)
    h = g.num_heads
    perm, inverse, _, _ = subgrid_order(H, W, part.dilation_size, qkv.device)
    t = qkv.reshape(B, H * W, 3, h, c // h)[:, perm].permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
    bm = sliding_block_mask(part, H, W, qkv.device)
    q, k, v, negated = fresh_inputs(t[0], t[1], t[2])
    o = flex_attention(q, k, v, block_mask=bm, scale=ctx.scale)  # (B, h, N, d)
    o = o.transpose(1, 2)[:, inverse].reshape(B, H, W, c)
    return -o if negated else o
