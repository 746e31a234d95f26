"""Positional-encoder modules: the parameters behind the specs of :mod:`attnblocks.pe`.

Contract shared by every encoder module (each hook may be the identity / ``None``):

- ``prepare(x)``: ``x: (B, H, W, C)`` before the qkv projection, returns the same shape.
- ``bias(group, layout)``: additive logits ``(h_g, T, T)`` for every window of the group.
- ``value(group, v, layout)``: with ``v: (B, nW, h_g, T, d)`` in window layout, a term of the
  same shape added to the attention output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._cache import size_cache
from ._errors import AttnblocksError
from .lowering import GroupPlan, RectLayout
from .partition import Grid, Window

__all__ = ["EncoderModule", "LePEModule", "RelPosBiasModule", "relative_position_index"]


class EncoderModule(nn.Module):
    """Base class: every hook is a no-op."""

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def bias(self, group: GroupPlan, layout: RectLayout) -> torch.Tensor | None:
        return None

    def value(self, group: GroupPlan, v: torch.Tensor, layout: RectLayout) -> torch.Tensor | None:
        return None


@size_cache(128)
def relative_position_index(window: tuple[int, int], table: tuple[int, int]) -> torch.Tensor:
    """Swin's relative position index of a ``window`` inside a table sized for ``table``.

    Returns:
        ``(T, T)`` int64 with ``T = wh * ww``: entry ``[i, j]`` is
        ``(dh + Mh - 1) * (2*Mw - 1) + (dw + Mw - 1)``, ``(dh, dw)`` = coords(i) - coords(j).
    """
    ys, xs = torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, T)
    rel = coords[:, :, None] - coords[:, None, :]
    return (rel[0] + table[0] - 1) * (2 * table[1] - 1) + (rel[1] + table[1] - 1)


class RelPosBiasModule(EncoderModule):
    """One learned table per head group, ``tables[g]: ((2Mh-1)(2Mw-1), h_g)``."""

    def __init__(self, spec, groups: tuple[GroupPlan, ...], device=None, dtype=None) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []
        for g in groups:
            if spec.size is not None:
                size = spec.size
            elif isinstance(g.partition, (Window, Grid)):
                size = g.partition.size
            else:
                raise AttnblocksError(
                    f"{spec!r} needs a fixed window, but head group {g.index} uses "
                    f"{g.partition!r}, whose extent depends on the map: give the largest "
                    f"extent, e.g. RelPosBias(size=(64, 64))."
                )
            self.sizes.append(size)
        self.tables = nn.ParameterList(
            nn.Parameter(
                torch.empty(
                    (2 * s[0] - 1) * (2 * s[1] - 1), g.num_heads, device=device, dtype=dtype
                )
            )
            for s, g in zip(self.sizes, groups)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for t in self.tables:
            nn.init.trunc_normal_(t, std=0.02)

    def bias(self, group: GroupPlan, layout: RectLayout) -> torch.Tensor:
        size, table = self.sizes[group.index], self.tables[group.index]
        if layout.window[0] > size[0] or layout.window[1] > size[1]:
            raise AttnblocksError(
                f"RelPosBias: head group {group.index} has a table for {size[0]}x{size[1]} "
                f"windows, but {group.partition!r} makes {layout.window[0]}x{layout.window[1]} "
                f"windows on a {layout.H}x{layout.W} map."
            )
        index = relative_position_index(layout.window, size).to(table.device)
        T = layout.tokens
        return table[index.view(-1)].view(T, T, -1).permute(2, 0, 1)


class LePEModule(EncoderModule):
    """Depthwise conv on V in each group's own windows.

    Parameters: ``conv.weight: (C, 1, k, k)``, ``conv.bias: (C,)``.
    """

    def __init__(self, spec, dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.kernel = spec.kernel
        self.conv = nn.Conv2d(dim, dim, spec.kernel, groups=dim, device=device, dtype=dtype)

    def value(self, group: GroupPlan, v: torch.Tensor, layout: RectLayout) -> torch.Tensor:
        c0, c1 = group.channels
        wh, ww = layout.window
        frames = rearrange(v, "b n h (wh ww) d -> (b n) (h d) wh ww", wh=wh, ww=ww)
        out = F.conv2d(
            frames,
            self.conv.weight[c0:c1],
            self.conv.bias[c0:c1],
            padding=self.kernel // 2,
            groups=c1 - c0,
        )
        return rearrange(out, "(b n) (h d) wh ww -> b n h (wh ww) d", n=v.shape[1], h=v.shape[2])
