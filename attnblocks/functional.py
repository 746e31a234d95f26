"""Stateless tensor ops of the rectangular lowering: cut a map into windows and back."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .lowering import RectLayout

__all__ = ["partition_windows", "unpartition_windows"]


def partition_windows(x: torch.Tensor, layout: RectLayout, heads: int = 1) -> torch.Tensor:
    """Roll, zero-pad and cut a map into the layout's windows.

    Shapes: ``x: (B, H, W, h*d) -> (B, nW, h, T, d)`` with ``nW`` windows of ``T`` tokens.

    Example:
        >>> from attnblocks import Window, rect_layout
        >>> lay = rect_layout(Window(2, shift=1), 3, 4)
        >>> partition_windows(torch.randn(1, 3, 4, 6), lay, heads=2).shape
        torch.Size([1, 4, 2, 4, 3])
    """
    sh, sw = layout.shift
    if sh or sw:
        x = torch.roll(x, (-sh, -sw), (1, 2))
    ph, pw = layout.pad
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    wh, ww = layout.window
    return rearrange(x, layout.pattern, h=heads, wh=wh, ww=ww)


def unpartition_windows(w: torch.Tensor, layout: RectLayout) -> torch.Tensor:
    """The inverse of :func:`partition_windows`: ``(B, nW, h, T, d) -> (B, H, W, h*d)``.

    Example:
        >>> from attnblocks import Grid, rect_layout
        >>> lay = rect_layout(Grid(2), 5, 4)
        >>> x = torch.randn(2, 5, 4, 3)
        >>> torch.equal(unpartition_windows(partition_windows(x, lay), lay), x)
        True
    """
    (wh, ww), (nh, nw) = layout.window, layout.counts
    inverse = " -> ".join(reversed(layout.pattern.split(" -> ")))
    x = rearrange(w, inverse, wh=wh, ww=ww, nh=nh, nw=nw)
    if layout.pad != (0, 0):
        x = x[:, : layout.H, : layout.W]
    sh, sw = layout.shift
    if sh or sw:
        x = torch.roll(x, (sh, sw), (1, 2))
    return x
