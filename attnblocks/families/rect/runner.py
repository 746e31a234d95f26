"""The rectangular family (:class:`~attnblocks.Window`, :class:`~attnblocks.Stripe`,
:class:`~attnblocks.Grid`, :class:`~attnblocks.Global`): its runner and the hooks the generic
parts read, the oracle, the window coordinates of the encoders and the lines of ``explain``.

The plan is :func:`~attnblocks.lowering.rect_layout` (a :class:`~attnblocks.RectLayout`), its
masks :func:`~attnblocks.masks.window_mask`; the eager kernel is :mod:`.eager`, the flex one
:mod:`.flex`, the cost :mod:`.cost`.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._contain import contained, own_keys_contained
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
        layout = rect_layout(g.partition, qkv.shape[1], qkv.shape[2], ctx.pad)
        fill = None if ctx.fill is None else ctx.fill[:, g.channels[0] : g.channels[1]]
        return rect_attention(qkv, layout, g, ctx.scale, ctx.encoders, ctx.dropout_p, fill)

    def ordered_layout(
        self, H: int, W: int, pad: str, batch: int = 1, device: torch.device | str = "cpu"
    ) -> RectLayout | None:
        """The group's layout on an ``H x W`` map if tokens in window order can be attended as
        they are (:meth:`forward_ordered`): no padding, and no mask or windows that run head by
        head (:func:`~attnblocks.families.rect.eager.loops_per_head`); else ``None``."""
        static_map_size(self.group, H, W)
        layout = rect_layout(self.group.partition, H, W, pad)
        if layout.pad != (0, 0):
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

    def key_sets(self, H: int, W: int, pad: str) -> str:
        """See :meth:`GroupRunner.key_sets`: from the group's layout on the map."""
        layout = rect_layout(self.group.partition, H, W, pad)
        if layout.tokens == 1:
            return "self"
        return "masked" if layout.needs_mask else "windows"


@register_oracle(Window, Stripe, Global, Grid)
def _rect_oracle(partition: Partition, H: int, W: int) -> np.ndarray:
    """``(N, N)`` oracle for one concrete rectangular partition, from token coordinates."""
    lay = rect_layout(partition, H, W, "mask")
    (wh, ww), (sh, sw), (nh, nw) = lay.window, lay.shift, lay.counts
    y, x = np.divmod(np.arange(H * W), W)
    r, c = (y - sh) % H, (x - sw) % W  # position on the rolled canvas
    # window id: blocks of wh x ww tokens, or (grid) tokens congruent modulo the window count
    win = (r % nh) * nw + (c % nw) if lay.grid else (r // wh) * nw + (c // ww)
    region = 3 * (r >= H - sh) * (sh > 0) + (c >= W - sw) * (sw > 0)
    return (win[:, None] == win[None, :]) & (region[:, None] == region[None, :])


@register_coords(Window, Stripe, Global, Grid)
def _rect_coords(partition: Partition, H: int, W: int, pad: str) -> WindowCoords:
    lay = rect_layout(partition, H, W, pad)  # raises for pad="error" on an indivisible map
    (wh, ww), (sh, sw), (nh, nw) = lay.window, lay.shift, lay.counts
    y, x = np.divmod(np.arange(H * W), W)
    r, c = (y - sh) % H, (x - sw) % W  # position on the rolled map
    if lay.grid:  # rows (wh nh): window r % nh, frame row r // nh
        return WindowCoords((r % nh) * nw + (c % nw), np.stack([r // nh, c // nw], 1))
    return WindowCoords((r // wh) * nw + (c // ww), np.stack([r % wh, c % ww], 1))


@register_describe(Window, Stripe, Global, Grid)
def _describe_rect(partition: Partition, H: int, W: int, pad: str) -> list[str]:
    lay = rect_layout(partition, H, W, pad)
    (nh, nw), (wh, ww) = lay.counts, lay.window
    lines = [f"windows {nh}x{nw} of {wh}x{ww} tokens, pad {lay.pad}, roll {lay.shift}", lay.pattern]
    masks = [
        name for name, on in (("shift regions", lay.regions), ("padded keys", lay.mask_pad)) if on
    ]
    if masks:
        lines.append("mask: " + " + ".join(masks))
    return lines
