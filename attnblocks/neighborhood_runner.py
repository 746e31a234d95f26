"""The group runner of :class:`~attnblocks.Dilated` (and :class:`~attnblocks.Neighborhood`).

Picks one of the two lowerings of :mod:`attnblocks.backends.neighborhood` per call, by the
number of key offsets per query (``k*k`` for zero or masked borders, up to ``(2k-1)^2`` for
shifted ones, fewer on tiny maps). The threshold comes from measurements
(``benchmarks/neighborhood.py``; 2-thread Xeon, torch 2.14.1, fp32, forward / forward+backward,
ms per call at 56x56, batch 2, one group of 32 channels in 1 or 2 heads):

============================  =========  ==========  =========  ==========
group                         slices fw  tiles fw    slices tr  tiles tr
============================  =========  ==========  =========  ==========
Dilated(3) (9 offsets)        see below
============================  =========  ==========  =========  ==========

``slices`` wins while the offsets are few (``<= SLICES_MAX_OFFSETS``); above, ``tiles``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ._errors import AttnblocksError
from .backends.neighborhood import slices_attention, tiles_attention
from .encoders import EncoderModule
from .lowering import GroupPlan
from .neighborhood import offset_plan, tile_plan
from .partition import Dilated
from .runners import GroupRunner, RunContext, register_runner

__all__ = ["LOWERINGS", "SLICES_MAX_OFFSETS", "TILE", "DilatedRunner", "choose_lowering"]

LOWERINGS = ("auto", "slices", "tiles")
SLICES_MAX_OFFSETS = 25
TILE = 8


def choose_lowering(partition: Dilated, H: int, W: int) -> str:
    """``"slices"`` or ``"tiles"``: the faster lowering of ``partition`` on an ``H x W`` map.

    Example:
        >>> from attnblocks import Dilated, Neighborhood
        >>> choose_lowering(Dilated(3, dilation=2), 56, 56)
        'slices'
        >>> choose_lowering(Neighborhood(7), 56, 56)
        'tiles'
    """
    n = len(offset_plan(partition, H, W).offsets)
    return "slices" if n <= SLICES_MAX_OFFSETS else "tiles"


def _hooks(e: EncoderModule) -> bool:
    return type(e).bias is not EncoderModule.bias or type(e).value is not EncoderModule.value


@register_runner(Dilated)
class DilatedRunner(GroupRunner):
    """Runs one head group over sliding windows.

    ``lowering`` (an attribute, ``"auto"`` by default) may be set to ``"slices"`` or
    ``"tiles"`` to force one; both compute the same attention.
    """

    kv_source: ClassVar[str] = "tokens"

    def __init__(self, spec, group: GroupPlan, dim: int, num_heads: int, device=None, dtype=None):
        super().__init__(spec, group, dim, num_heads, device=device, dtype=dtype)
        self.lowering = "auto"

    def extra_repr(self) -> str:
        return f"{self.group.partition!r}, lowering={self.lowering!r}"

    def forward(self, qkv: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """``qkv: (B, H, W, 3, c) -> (B, H, W, c)``."""
        g = self.group
        for e in ctx.encoders:
            if _hooks(e):
                raise AttnblocksError(
                    f"{type(e).__name__} adds per-window biases or values, which "
                    f"{g.partition!r} (head group {g.index}) does not support; sliding windows "
                    f"combine with encoders that act on the input, such as CPE()."
                )
        if self.lowering not in LOWERINGS:
            raise AttnblocksError(
                f"DilatedRunner: lowering must be one of {LOWERINGS}, got {self.lowering!r}."
            )
        H, W = qkv.shape[1], qkv.shape[2]
        lowering = self.lowering
        if lowering == "auto":
            lowering = choose_lowering(g.partition, H, W)
        if lowering == "slices":
            plan = offset_plan(g.partition, H, W)
            return slices_attention(qkv, plan, g.num_heads, ctx.scale, ctx.dropout_p)
        plan = tile_plan(g.partition, H, W, TILE)
        return tiles_attention(qkv, plan, g.num_heads, ctx.scale, ctx.dropout_p)
