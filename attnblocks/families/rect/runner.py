"""The rectangular family (:class:`~attnblocks.Window`, :class:`~attnblocks.Stripe`,
:class:`~attnblocks.Grid`, :class:`~attnblocks.Global`): its runner and the hooks the generic
parts read, the oracle, the window coordinates of the encoders and the lines of ``explain``.

The plan is :func:`~attnblocks.lowering.rect_layout` (a :class:`~attnblocks.RectLayout`), its
masks :func:`~attnblocks.masks.window_mask`; the eager kernel is :mod:`.eager`, the flex one
:mod:`.flex`, the cost :mod:`.cost`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..._contain import contained, own_keys_contained
from ..._errors import fmt_size
from ...backends.dense import WindowCoords, register_coords
from ...lowering import RectLayout, rect_layout, register_describe
from ...masks import register_oracle
from ...partition import Global, Grid, Partition, Stripe, Window
from ...runners import GroupRunner, RunContext, register_runner, static_map_size
from .eager import loops_per_head, ordered_attention, rect_attention

__all__ = ["RectRunner"]


@register_runner(Window, Stripe, Global, Grid)
class RectRunner(GroupRunner):
    """Windows, stripes, grids and global attention: batched windows + one fused call."""

    def forward(self, qkv: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        g = self.group
        layout = rect_layout(g.partition, *qkv.shape[1:-2], pad=ctx.pad)
        fill = None if ctx.fill is None else ctx.fill[:, g.channels[0] : g.channels[1]]
        return rect_attention(qkv, layout, g, ctx.scale, ctx.encoders, ctx.dropout_p, fill)

    def ordered_layout(
        self,
        shape: tuple[int, ...],
        pad: str,
        batch: int = 1,
        device: torch.device | str = "cpu",
    ) -> RectLayout | None:
        """The group's layout on a map of size ``shape`` if tokens in window order can be
        attended as they are (:meth:`forward_ordered`): no padding, and no mask or windows that
        run head by head (:func:`~attnblocks.families.rect.eager.loops_per_head`); else
        ``None``."""
        static_map_size(self.group, shape)
        layout = rect_layout(self.group.partition, *shape, pad=pad)
        if any(layout.pad):
            return None
        windows = batch * layout.num_windows
        if layout.needs_mask and not loops_per_head(layout.tokens, windows, device):
            return None
        return layout

    def forward_ordered(
        self, qkv: torch.Tensor, layout: RectLayout, ctx: RunContext
    ) -> torch.Tensor:
        """``qkv: (B, N, 3, c)`` in the layout's window order -> ``(B, N, c)``, same order."""
        g = self.group

        def run(t: torch.Tensor, c: RunContext) -> torch.Tensor:
            return ordered_attention(t, layout, g, c.scale, c.encoders, c.dropout_p)

        if layout.tokens == 1:
            return own_keys_contained(run, qkv, ctx)
        return contained(run, qkv, ctx) if layout.needs_mask else run(qkv, ctx)

    def key_sets(self, shape: tuple[int, ...], pad: str) -> str:
        """See :meth:`GroupRunner.key_sets`: from the group's layout on the map."""
        layout = rect_layout(self.group.partition, *shape, pad=pad)
        if layout.tokens == 1:
            return "self"
        return "masked" if layout.needs_mask else "windows"


def _rolled(lay: RectLayout) -> np.ndarray:
    """``(N, n)``: each token's position on the rolled map, tokens row-major."""
    coords = np.stack(np.unravel_index(np.arange(math.prod(lay.shape)), lay.shape), 1)
    return (coords - np.array(lay.shift)) % np.array(lay.shape)


def _window_ids(lay: RectLayout, r: np.ndarray) -> np.ndarray:
    """Window id (row-major over ``counts``) of rolled positions ``r: (N, n)``: blocks of
    ``window`` tokens, or (grid) tokens congruent modulo the window count."""
    counts = np.array(lay.counts)
    per_axis = r % counts if lay.grid else r // np.array(lay.window)
    return np.ravel_multi_index(tuple(per_axis.T), lay.counts)


@register_oracle(Window, Stripe, Global, Grid)
def _rect_oracle(partition: Partition, *shape: int) -> np.ndarray:
    """``(N, N)`` oracle for one concrete rectangular partition, from token coordinates."""
    lay = rect_layout(partition, *shape, pad="mask")
    r = _rolled(lay)
    win = _window_ids(lay, r)
    n, s = np.array(lay.shape), np.array(lay.shift)
    # tokens the roll brought over from the start of an axis stay apart from the others
    wrapped = (r >= n - s) & (s > 0)
    region = np.ravel_multi_index(tuple(wrapped.T.astype(np.int64)), (2,) * lay.ndim)
    return (win[:, None] == win[None, :]) & (region[:, None] == region[None, :])


@register_coords(Window, Stripe, Global, Grid)
def _rect_coords(partition: Partition, *shape: int, pad: str = "mask") -> WindowCoords:
    lay = rect_layout(partition, *shape, pad=pad)  # raises for pad="error" on an indivisible map
    r = _rolled(lay)
    if lay.grid:  # axis (w n): window r % n, frame position r // n
        return WindowCoords(_window_ids(lay, r), r // np.array(lay.counts))
    return WindowCoords(_window_ids(lay, r), r % np.array(lay.window))


@register_describe(Window, Stripe, Global, Grid)
def _describe_rect(partition: Partition, *shape: int, pad: str = "mask") -> list[str]:
    lay = rect_layout(partition, *shape, pad=pad)
    lines = [
        f"windows {fmt_size(lay.counts)} of {fmt_size(lay.window)} tokens, pad {lay.pad}, "
        f"roll {lay.shift}",
        lay.pattern,
    ]
    masks = [
        name for name, on in (("shift regions", lay.regions), ("padded keys", lay.mask_pad)) if on
    ]
    if masks:
        lines.append("mask: " + " + ".join(masks))
    return lines
