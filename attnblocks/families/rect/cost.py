"""The cost of the rectangular family's eager and flex lowerings: whole (padded) windows."""

from __future__ import annotations

import torch
from einops import rearrange

from ...cost import GroupCost, register_cost
from ...lowering import GroupPlan, RectLayout, rect_layout
from ...masks import window_mask
from ...partition import Global, Grid, Stripe, Window

__all__: list[str] = []


@register_cost("eager", Window, Stripe, Global, Grid)
@register_cost("flex", Window, Stripe, Global, Grid)
def _rect_cost(g: GroupPlan, shape: tuple, pad: str, batch: int, itemsize: int, bias: bool):
    return _layout_cost(rect_layout(g.partition, *shape, pad=pad), g, batch, itemsize, bias)


def _layout_cost(lay: RectLayout, g: GroupPlan, batch: int, itemsize: int, bias: bool) -> GroupCost:
    """The cost of one head group run by the eager (or flex) window lowering on ``lay``."""
    nW, T, h, d = lay.num_windows, lay.tokens, g.num_heads, g.dim // g.num_heads
    real = torch.zeros(1, *lay.padded, 1)
    real[(slice(None), *(slice(0, n) for n in lay.shape))] = 1
    real = rearrange(real, lay.pattern, h=1, **lay.sizes)[0, :, 0, :, 0]
    allowed = window_mask(lay)
    keys = torch.full((nW, T), T) if allowed is None else allowed.sum(-1)
    keys = keys[real.bool()].double()
    scores = batch * nW * h * T * T
    mask = 0
    if lay.needs_mask:  # the cached (nW, 1, T, T) mask and its (1, nW*h, T, T) fold
        mask = nW * T * T * itemsize + nW * h * T * T * itemsize
    elif bias:
        mask = h * T * T * itemsize
    return GroupCost(
        2 * scores * d,
        keys.mean().item(),
        int(keys.max()),
        scores,
        mask,
        batch * nW * T,
        frame=lay.window,
    )
