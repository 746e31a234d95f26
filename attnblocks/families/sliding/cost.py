"""Cost models of sliding windows (:class:`~attnblocks.Dilated`, ``Neighborhood``) and
downsampled keys (:class:`~attnblocks.Downsample`), registered with :mod:`attnblocks.cost`.

Sliding windows on ``"eager"`` count the lowering :func:`~attnblocks.neighborhood_runner.\
choose_lowering` picks for an inference call (no gradient):

- ``"slices"``: ``n`` key offsets (the plan's, ``k*k`` for zero or masked borders, more for
  shifted ones), each one elementwise product of q with a shifted slice of K summed over the
  head dim, and one of the weights with the shifted V: ``2 * n * B * N * c`` MACs, ``n`` scores
  per query, the ``(n, 1, H, W, 1)`` mask unless ``border="zeros"``.
- ``"tiles"``: ``nT`` query tiles of ``Tq`` slots over ``Tk`` gathered keys, one SDPA call:
  ``2 * B * h * nT * Tq * Tk * d`` MACs and the ``(1, h * nT, Tq, Tk)`` mask.

:func:`sliding_cost` counts either lowering. Keys per query are the real keys the spec gives a
query (the oracle's row sums), or ``k*k`` under ``border="zeros"``, whose out-of-map keys are
zero vectors in the softmax. On ``"dense"`` sliding windows use the generic dense count.

Downsample groups attend to all ``M = (H // r) * (W // r)`` reduced tokens (``2 * B * N * M *
c`` MACs, no mask), and make their own keys and values: the strided ``Conv2d(C, C, r)``
(``B * M * C * C * r * r``; none for ratio 1 unless ``conv1x1``) and ``kv`` (``B * M * C * 2c``)
are counted with the encoders (:func:`~attnblocks.cost.register_kv_cost`); LayerNorm and GELU
are not MACs. :class:`~attnblocks.LocalConv` convolves the group's reduced V map (``k*k *
B * M * c``), or acts as LePE on other partitions.
"""

from __future__ import annotations

import numpy as np

from ._errors import AttnblocksError
from .cost import (
    GroupCost,
    _lepe_cost,
    register_cost,
    register_encoder_cost,
    register_kv_cost,
)
from .lowering import GroupPlan
from .neighborhood import offset_plan, tile_plan
from .neighborhood_runner import choose_lowering, choose_tile
from .partition import Dilated, Downsample
from .pe import LocalConv

__all__ = ["sliding_cost"]


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
            :func:`~attnblocks.neighborhood_runner.choose_lowering`.

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
    if lowering not in ("slices", "tiles"):
        raise AttnblocksError(
            f"sliding_cost: lowering must be 'slices', 'tiles' or None, got {lowering!r}."
        )
    N, h, c = H * W, g.num_heads, g.dim
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


@register_cost("eager", Dilated)
def _sliding_eager_cost(g, H, W, pad, batch, itemsize, bias) -> GroupCost:
    return sliding_cost(g, H, W, batch, itemsize)


@register_cost("eager", Downsample)
def _downsample_cost(g, H, W, pad, batch, itemsize, bias) -> GroupCost:
    part: Downsample = g.partition  # type: ignore[assignment]
    Hr, Wr = part.reduced_size(H, W)
    if pad == "error" and (H % part.ratio or W % part.ratio):
        raise AttnblocksError(
            f"cost: {part!r} cannot reduce a {H}x{W} token map without dropping tokens "
            f"(pad='error')."
        )
    M = Hr * Wr
    scores = batch * g.num_heads * H * W * M
    return GroupCost(2 * scores * (g.dim // g.num_heads), float(M), M, scores, 0, batch * M)


@register_cost("dense", Downsample)
def _downsample_dense(g, H, W, pad, batch, itemsize, bias) -> GroupCost:
    raise AttnblocksError(f"cost: backend='dense' has no lowering for {g.partition!r}.")


@register_kv_cost(Downsample)
def _downsample_kv(g: GroupPlan, H: int, W: int, batch: int, dim: int) -> int:
    """The group's reduction (strided conv) and ``kv`` linear."""
    part: Downsample = g.partition  # type: ignore[assignment]
    Hr, Wr = part.reduced_size(H, W)
    tokens = batch * Hr * Wr
    conv = tokens * dim * dim * part.ratio**2 if part.reduces else 0
    return conv + tokens * dim * 2 * g.dim


@register_encoder_cost(LocalConv)
def _local_conv_cost(spec: LocalConv, g: GroupPlan, gc: GroupCost, backend: str) -> int:
    if isinstance(g.partition, Downsample):  # over the group's (reduced) V map
        return spec.kernel**2 * gc.frames * g.dim
    return _lepe_cost(spec, g, gc, backend)  # the LePE form on windows, stripes, global
