"""Cost models of sliding windows (:class:`~attnblocks.Dilated`, ``Neighborhood``), registered
with :mod:`attnblocks.cost`.

Sliding windows on ``"eager"`` count the lowering :func:`~attnblocks.families.sliding.\
runner.choose_lowering` picks for an inference call (no gradient):

- ``"slices"``: ``n`` key offsets (the plan's, ``k*k`` for zero or masked borders, more for
  shifted ones), each one elementwise product of q with a shifted slice of K summed over the
  head dim, and one of the weights with the shifted V: ``2 * n * B * N * c`` MACs, ``n`` scores
  per query, the ``(n, 1, H, W, 1)`` mask unless ``border="zeros"``.
- ``"tiles"``: ``nT`` query tiles of ``Tq`` slots over ``Tk`` gathered keys, one SDPA call:
  ``2 * B * h * nT * Tq * Tk * d`` MACs and the ``(1, h * nT, Tq, Tk)`` mask.

:func:`sliding_cost` counts either lowering. Keys per query are the real keys the spec gives a
query (the oracle's row sums), or ``k*k`` under ``border="zeros"``, whose out-of-map keys are
zero vectors in the softmax. On ``"dense"`` sliding windows use the generic dense count.
"""

from __future__ import annotations

import numpy as np

from ..._errors import AttnblocksError
from ...cost import (
    GroupCost,
    register_cost,
)
from ...lowering import GroupPlan
from ...partition import Dilated
from .plan import gather_plan, nd_tile_plan, offset_plan, tile_plan
from .runner import ND_TILE, choose_lowering, choose_tile, uses_gather

__all__ = ["gather_cost", "nd_tiles_cost", "sliding_cost"]


def sliding_cost(
    g: GroupPlan, H: int, W: int, batch: int, itemsize: int, lowering: str | None = None
) -> GroupCost:
    """The :class:`~attnblocks.cost.GroupCost` of a sliding-window group on one lowering.

    Args:
        g: a head group whose partition is a concrete :class:`~attnblocks.Dilated`.
        H: the map height.
        W: the map width.
        batch: the batch size ``B``.
        itemsize: bytes per element of the scores and masks.
        lowering: ``"slices"``, ``"tiles"``, or ``None`` for the inference choice of
            :func:`~attnblocks.families.sliding.runner.choose_lowering`.

    Example:
        >>> from attnblocks import Attention, Neighborhood
        >>> g = Attention(partition=Neighborhood(3)).groups(8, 2)[0]
        >>> gc = sliding_cost(g, 6, 6, 1, 4, "slices")  # 25 offsets cover the shifted windows
        >>> gc.attention_macs == 2 * 25 * 36 * 8, gc.scores == 25 * 36 * 2, gc.keys_mean
        (True, True, 9.0)
    """
    part: Dilated = g.partition  # type: ignore[assignment]
    if lowering is None:
        lowering = choose_lowering(part, H, W, False)
    if lowering not in ("slices", "tiles", "gather"):
        raise AttnblocksError(
            f"sliding_cost: lowering must be 'slices', 'tiles' or None, got {lowering!r} "
            f"(or 'gather', the lowering of stride and causal axes)."
        )
    N, h, c = H * W, g.num_heads, g.dim
    if lowering == "gather":
        return gather_cost(g, (H, W), batch, itemsize)
    if uses_gather(part, 2):  # stride or causal axes: the N-d tiles
        if lowering == "slices":
            raise AttnblocksError(f"sliding_cost: {part!r} has no 'slices' lowering.")
        return nd_tiles_cost(g, (H, W), batch, itemsize)
    plan = offset_plan(part, H, W)
    n = len(plan.offsets)
    if plan.allowed is None:  # zeros: every slot is in the softmax
        keys = np.full(N, n, dtype=np.float64)
    else:
        keys = plan.allowed.reshape(N, n).sum(-1).astype(np.float64)
    if lowering == "slices":
        scores = batch * N * h * n
        mask = 0 if plan.allowed is None else n * N * itemsize
        macs = 2 * n * batch * N * c
    else:
        nT, Tq, Tk = tile_plan(part, H, W, choose_tile(part, H, W)).allowed.shape
        scores = batch * h * nT * Tq * Tk
        mask = h * nT * Tq * Tk * itemsize
        macs = 2 * scores * (c // h)
    return GroupCost(macs, float(keys.mean()), int(keys.max()), scores, mask, batch * N)


def gather_cost(g: GroupPlan, shape: tuple[int, ...], batch: int, itemsize: int) -> GroupCost:
    """The :class:`~attnblocks.cost.GroupCost` of the gather lowering (any rank): ``K`` gathered
    key slots per query, ``2 * B * N * K * c`` MACs, ``B * N * h * K`` scores and the
    ``(N, K)`` mask unless every slot is a key.

    Example:
        >>> from attnblocks import Attention, Neighborhood
        >>> g = Attention(partition=Neighborhood(3, causal=True)).groups(8, 2)[0]
        >>> gc = gather_cost(g, (5,), 1, 4)
        >>> gc.attention_macs == 2 * 5 * 3 * 8, gc.keys_mean, gc.keys_max
        (True, 2.4, 3)
    """
    plan = gather_plan(g.partition, tuple(shape))  # type: ignore[arg-type]
    N, K = plan.index.shape
    keys = np.full(N, K, dtype=np.float64) if plan.valid is None else plan.valid.sum(-1)
    scores = batch * N * g.num_heads * K
    mask = 0 if plan.valid is None else N * K * itemsize
    macs = 2 * batch * N * K * g.dim
    return GroupCost(macs, float(keys.mean()), int(keys.max()), scores, mask, batch * N)


def nd_tiles_cost(g: GroupPlan, shape: tuple[int, ...], batch: int, itemsize: int) -> GroupCost:
    """The :class:`~attnblocks.cost.GroupCost` of the N-d tiles (any rank, stride and causal
    axes): ``nT`` tiles of ``Tq`` query slots over ``Tk`` keys, ``2 * B * h * nT * Tq * Tk * d``
    MACs and the ``(1, h * nT, Tq, Tk)`` mask; keys per query from the gather plan.

    Example:
        >>> from attnblocks import Attention, Neighborhood
        >>> g = Attention(partition=Neighborhood(3, causal=True)).groups(8, 2)[0]
        >>> nd_tiles_cost(g, (5,), 1, 4).keys_mean
        2.4
    """
    part: Dilated = g.partition  # type: ignore[assignment]
    keys = gather_cost(g, shape, batch, itemsize)
    nT, Tq, Tk = nd_tile_plan(part, tuple(shape), ND_TILE.get(len(shape), 2)).allowed.shape
    h = g.num_heads
    scores = batch * h * nT * Tq * Tk
    macs = 2 * scores * (g.dim // h)
    return GroupCost(
        macs, keys.keys_mean, keys.keys_max, scores, h * nT * Tq * Tk * itemsize, keys.frames
    )


@register_cost("eager", Dilated)
def _sliding_eager_cost(g, shape, pad, batch, itemsize, bias) -> GroupCost:
    if len(shape) != 2:
        return nd_tiles_cost(g, tuple(shape), batch, itemsize)
    return sliding_cost(g, *shape, batch, itemsize)
