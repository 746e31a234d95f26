"""The group runner of :class:`~attnblocks.Dilated` (and :class:`~attnblocks.Neighborhood`).

Picks one of the two lowerings of :mod:`attnblocks.families.sliding.kernels` per call, from the
number of key offsets per query (``k*k`` for zero or masked borders, up to ``(2k-1)^2`` for
shifted ones, fewer on tiny maps) and whether the call will be back-propagated.

The rule: ``slices`` for inference with at most ``SLICES_MAX_OFFSETS`` offsets, else
``tiles`` (the slices issue ``2n`` small kernels, and their backward accumulates one gradient
slice per offset). Its measurements: ``benchmarks/rules.md``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..._cache import size_cache
from ..._errors import AttnblocksError, fmt_size
from ...lowering import GroupPlan, register_describe
from ...partition import Dilated
from ...runners import GroupRunner, RunContext, register_runner
from .kernels import (
    gather_attention,
    nd_tiles_attention,
    offset_bias,
    slices_attention,
    tile_bias,
    tiles_attention,
)
from .plan import _axes, check_fits, gather_plan, nd_tile_plan, offset_plan, tile_plan

__all__ = [
    "LOWERINGS",
    "ND_TILE",
    "SLICES_MAX_OFFSETS",
    "TILE",
    "TILES",
    "DilatedRunner",
    "choose_lowering",
    "choose_tile",
    "describe_gather",
    "describe_sliding",
    "num_offsets",
    "uses_gather",
]

LOWERINGS = ("auto", "slices", "tiles", "gather")
ND_TILE = {1: 64, 2: 8, 3: 4}  # queries per tile and axis of the N-d tiles, by rank
SLICES_MAX_OFFSETS = 9
TILE = 8  # the default tile side; :func:`choose_tile` picks 7 or 8 per map
TILES = (7, 8)


def choose_lowering(partition: Dilated, H: int, W: int, grad: bool = False) -> str:
    """``"slices"`` or ``"tiles"``: the faster lowering of ``partition`` on an ``H x W`` map
    (stride or causal axes: ``"tiles"``, the N-d tiles of :func:`~attnblocks.families.\
sliding.kernels.nd_tiles_attention`).

    ``grad``: whether the call will be back-propagated (the slices lowering's backward
    accumulates one gradient slice per offset and loses to the tiles there).

    Example:
        >>> from attnblocks import Dilated, Neighborhood
        >>> choose_lowering(Dilated(3, dilation=2), 56, 56)
        'slices'
        >>> choose_lowering(Dilated(3, dilation=2), 56, 56, grad=True)
        'tiles'
        >>> choose_lowering(Neighborhood(7), 56, 56)
        'tiles'
    """
    if uses_gather(partition, 2):
        return "tiles"  # the N-d tiles: stride and causal axes
    n = num_offsets(partition, H, W)
    return "slices" if n <= SLICES_MAX_OFFSETS and not grad else "tiles"


@size_cache(512, constant=True)
def num_offsets(partition: Dilated, H: int, W: int) -> int:
    """Key offsets per query of the slices lowering (a constant under ``torch.compile``).

    Example:
        >>> from attnblocks import Dilated, Neighborhood
        >>> num_offsets(Neighborhood(7), 56, 56), num_offsets(Dilated(3, dilation=2), 56, 56)
        (169, 9)
    """
    return len(offset_plan(partition, H, W).offsets)


@size_cache(512, constant=True)
def choose_tile(partition: Dilated, H: int, W: int) -> int:
    """The tile side (7 or 8 queries) of the tiles lowering that computes the fewest scores.

    Each tile of ``t x t`` queries on a dilation sub-grid computes ``(t + k - 1)^2`` scores per
    query slot, and sub-grids not divisible by ``t`` add padded query slots: the rule counts
    both, so 7 wins unless 8 divides the sub-grids better (16 x 16 maps). Tiles below 7 lost to
    per-tile overhead (measured: ``benchmarks/rules.md``).

    Example:
        >>> from attnblocks import Dilated
        >>> choose_tile(Dilated(3), 56, 56), choose_tile(Dilated(3), 16, 16)
        (7, 8)
    """
    (kh, kw), (ry, rx) = partition.kernel_size, partition.dilation_size

    def slots(L: int, t: int, r: int) -> int:
        return sum(-(-len(range(o, L, r)) // t) * t for o in range(min(r, L)))

    def scores(t: int) -> int:
        return slots(H, t, ry) * slots(W, t, rx) * (t + kh - 1) * (t + kw - 1)

    return min(TILES, key=lambda t: (scores(t), -t))


def _offset_table(encoders, g: GroupPlan) -> torch.Tensor | None:
    """The summed ``offset_bias`` tables ``(h_g, 2k-1, 2k-1)`` of the encoders, or ``None``;
    raises for encoders with per-window hooks that have no sliding-window form."""
    table = None
    for e in encoders:
        t = e.offset_bias(g)
        if t is None and e.acts_per_window():
            raise AttnblocksError(
                f"{type(e).__name__} adds per-window biases or values, which "
                f"{g.partition!r} (head group {g.index}) does not support; sliding windows "
                f"combine with RelPosBias() (NAT's bias by key offset) and with encoders that "
                f"act on the input, such as CPE()."
            )
        if t is not None:
            table = t if table is None else table + t
    return table


def uses_gather(partition: Dilated, rank: int) -> bool:
    """Whether ``partition`` on a rank-``rank`` map runs the kernels of any rank: the N-d tiles
    (:func:`~attnblocks.families.sliding.kernels.nd_tiles_attention`, the default there) or,
    forced, the gather lowering (:func:`~attnblocks.families.sliding.kernels.\
gather_attention`). Any rank but 2, and any stride or causal axis; 2-D plain windows take the
    slices or tiles.

    Example:
        >>> from attnblocks import Neighborhood
        >>> uses_gather(Neighborhood(7), 2), uses_gather(Neighborhood(7), 3)
        (False, True)
        >>> uses_gather(Neighborhood(7, stride=2), 2)
        True
    """
    return rank != 2 or not partition.is_plain


@register_runner(Dilated)
class DilatedRunner(GroupRunner):
    """Runs one head group over sliding windows.

    ``lowering`` (an attribute, ``"auto"`` by default) may be set to ``"slices"``,
    ``"tiles"`` or ``"gather"`` to force one; all compute the same attention. Maps of rank
    other than 2, and stride or causal axes, run the N-d tiles
    (:func:`~attnblocks.families.sliding.kernels.nd_tiles_attention`, ``ND_TILE`` queries per
    tile and axis) or, forced, the gather lowering (each query's keys by index).
    """

    kv_source: ClassVar[str] = "tokens"

    def __init__(self, spec, group: GroupPlan, dim: int, num_heads: int, device=None, dtype=None):
        super().__init__(spec, group, dim, num_heads, device=device, dtype=dtype)
        self.lowering = "auto"

    def extra_repr(self) -> str:
        return f"{self.group.partition!r}, lowering={self.lowering!r}"

    def forward(self, qkv: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """``qkv: (B, *shape, 3, c) -> (B, *shape, c)`` (``shape``: ``(H, W)`` on images)."""
        g = self.group
        table = _offset_table(ctx.encoders, g)
        if self.lowering not in LOWERINGS:
            raise AttnblocksError(
                f"DilatedRunner: lowering must be one of {LOWERINGS}, got {self.lowering!r}."
            )
        shape = tuple(qkv.shape[1:-2])
        check_fits(g.partition, *shape)
        lowering = self.lowering
        nd = uses_gather(g.partition, len(shape))
        if nd or lowering == "gather":  # the kernels without an offset bias
            if table is not None and nd:
                raise AttnblocksError(
                    f"RelPosBias: {g.partition!r} (head group {g.index}) on a rank-{len(shape)} "
                    f"map has no offset bias: NAT's relative position bias is defined for 2-D "
                    f"maps without stride or causal axes (as in NATTEN 0.21)."
                )
            if table is not None:
                raise AttnblocksError(
                    f"RelPosBias: {g.partition!r} (head group {g.index}) with "
                    f"lowering='gather' has no offset bias; use 'auto', 'slices' or 'tiles'."
                )
            if lowering == "slices":
                raise AttnblocksError(
                    f"DilatedRunner: lowering='slices' has no form for {g.partition!r} on a "
                    f"rank-{len(shape)} map; use 'tiles' (the default there) or 'gather'."
                )
            if lowering == "gather":
                return gather_attention(qkv, g.partition, g.num_heads, ctx.scale, ctx.dropout_p)
            tile = ND_TILE.get(len(shape), 2)
            return nd_tiles_attention(qkv, g.partition, g.num_heads, ctx.scale, ctx.dropout_p, tile)
        H, W = shape
        if lowering == "auto":
            grad = torch.is_grad_enabled() and qkv.requires_grad
            lowering = choose_lowering(g.partition, H, W, grad)
        if lowering == "slices":
            bias = None if table is None else offset_bias(table, g.partition, H, W)
            return slices_attention(qkv, g.partition, g.num_heads, ctx.scale, ctx.dropout_p, bias)
        tile = choose_tile(g.partition, H, W)
        bias = None if table is None else tile_bias(table, g.partition, H, W, tile)
        return tiles_attention(
            qkv, g.partition, g.num_heads, ctx.scale, ctx.dropout_p, tile, bias=bias
        )


@register_describe(Dilated)
def describe_sliding(partition: Dilated, *shape: int, pad: str = "mask") -> list[str]:
    """Lines that say how a :class:`~attnblocks.Dilated` lowers on a map of size ``shape``
    (``H, W``; any rank: :func:`describe_gather`).

    Example:
        >>> from attnblocks import Neighborhood
        >>> for line in describe_sliding(Neighborhood(7, dilation=2), 56, 56):
        ...     print(line)
        7x7 keys 2 apart per query, border 'shift'
        slices: 169 offsets, pad (12, 12), masked
        tiles: 64 tiles of 7x7 queries, 13x13 keys each
    """
    if not isinstance(partition, Dilated):
        raise AttnblocksError(f"{partition!r} has no registered lowering to describe.")
    if uses_gather(partition, len(shape)):
        return describe_gather(partition, shape)
    H, W = shape
    (kh, kw), (ry, rx) = _axes(partition)
    op, tp = offset_plan(partition, H, W), tile_plan(partition, H, W, choose_tile(partition, H, W))
    nT, Tq, Tk = tp.allowed.shape
    tq, tk = math.isqrt(Tq), math.isqrt(Tk)
    tiles = f"{tq}x{tq} queries, {tk}x{tk} keys" if tq * tq == Tq and tk * tk == Tk else ""
    return [
        f"{kh}x{kw} keys {ry if ry == rx else f'{ry}x{rx}'} apart per query, border "
        f"{partition.border!r}",
        f"slices: {len(op.offsets)} offsets, pad {op.pad}, "
        + ("zero keys in the softmax" if op.allowed is None else "masked"),
        f"tiles: {nT} tiles of " + (tiles + " each" if tiles else f"{Tq} queries, {Tk} keys"),
    ]


def describe_gather(partition: Dilated, shape: tuple[int, ...]) -> list[str]:
    """Lines that say how a :class:`~attnblocks.Dilated` runs the gather lowering on a map of
    ``shape`` (any rank).

    Example:
        >>> from attnblocks import Neighborhood
        >>> for line in describe_gather(Neighborhood(3, stride=(1, 3, 3)), (4, 6, 6)):
        ...     print(line)
        3x3x3 keys 1 apart per query, border 'shift', stride 1x3x3
        tiles: 1 tiles of 144 queries, 144 keys each
        gather: 27 gathered keys per query, 144 queries
    """
    check_fits(partition, *shape)
    kernel, dilation, stride, causal = partition.axes(len(shape))

    def axes(v: tuple) -> str:
        return str(v[0]) if len(set(v)) == 1 else fmt_size(v)

    head = f"{fmt_size(kernel)} keys {axes(dilation)} apart per query, border "
    head += repr(partition.border)
    if set(stride) != {1}:
        head += f", stride {fmt_size(stride)}"
    if any(causal):
        head += f", causal along axes {tuple(i for i, c in enumerate(causal) if c)}"
    plan = gather_plan(partition, tuple(shape))
    K = plan.index.shape[1]
    tail = "" if plan.valid is None else ", masked"
    nT, Tq, Tk = nd_tile_plan(partition, tuple(shape), ND_TILE.get(len(shape), 2)).allowed.shape
    return [
        head,
        f"tiles: {nT} tiles of {Tq} queries, {Tk} keys each",
        f"gather: {K} gathered keys per query, {plan.index.shape[0]} queries{tail}",
    ]
