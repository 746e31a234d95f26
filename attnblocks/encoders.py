"""Positional-encoder modules: the parameters behind the specs of :mod:`attnblocks.pe`.

Contract shared by every encoder module (each hook may be the identity / ``None``):

- ``prepare(x)``: ``x: (B, H, W, C)`` before the qkv projection, returns the same shape.
- ``rotate(q, k)``: ``q, k: (B, H, W, h, d)`` on the map, after the projection and before any
  partitioning; returns new ``q, k``. Only called on modules with ``rotates = True``.
- ``bias(group, layout)``: additive logits ``(h_g, T, T)`` for every window of the group.
- ``offset_bias(group)``: for a sliding-window group (:class:`~attnblocks.Dilated` of kernel
  ``k``), additive logits ``(h_g, 2k-1, 2k-1)`` by the key's offset from the query in units of
  the dilation, entry ``[h, dy + k-1, dx + k-1]``; the group's runner gathers them per slot.
- ``value(group, v, layout)``: with ``v: (B, nW, h_g, T, d)`` in window layout, a term of the
  same shape added to the attention output.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._cache import size_cache
from ._errors import AttnblocksError, fmt_size
from ._spec import any_rank, axes, per_axis
from .lowering import GroupPlan, RectLayout
from .partition import Dilated, Grid, Window

__all__ = [
    "AxialRoPEModule",
    "CPEModule",
    "ContinuousPosBiasModule",
    "EncoderModule",
    "LePEModule",
    "LocalConvModule",
    "RelPosBiasModule",
    "axial_angles",
    "log_relative_coords",
    "relative_position_index",
    "rope_angles",
]


class EncoderModule(nn.Module):
    """Base class: every hook is a no-op."""

    rotates: ClassVar[bool] = False
    #: the token-map ranks the module acts on (``None``: any rank)
    ranks: ClassVar[tuple[int, ...] | None] = None

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def bias(self, group: GroupPlan, layout: RectLayout) -> torch.Tensor | None:
        return None

    def offset_bias(self, group: GroupPlan) -> torch.Tensor | None:
        return None

    def value(self, group: GroupPlan, v: torch.Tensor, layout: RectLayout) -> torch.Tensor | None:
        return None

    @classmethod
    def acts_per_window(cls) -> bool:
        """Whether the module overrides :meth:`bias` or :meth:`value` (hooks on windows)."""
        return cls.bias is not EncoderModule.bias or cls.value is not EncoderModule.value


@size_cache(128)
def relative_position_index(window: tuple[int, ...], table: tuple[int, ...]) -> torch.Tensor:
    """Swin's relative position index of a ``window`` inside a table sized for ``table``.

    Returns:
        ``(T, T)`` int64 with ``T = prod(window)``: entry ``[i, j]`` reads the offsets
        ``coords(i) - coords(j) + M - 1`` per axis as mixed-radix digits of bases ``2M - 1``,
        the first axis most significant (2-D: ``(dh + Mh - 1) * (2*Mw - 1) + (dw + Mw - 1)``).
    """
    grids = torch.meshgrid(*(torch.arange(w) for w in window), indexing="ij")
    coords = torch.stack([g.flatten() for g in grids])  # (n, T)
    rel = coords[:, :, None] - coords[:, None, :]
    index = torch.zeros(rel.shape[1:], dtype=torch.int64)
    for r, m in zip(rel, table):
        index = index * (2 * m - 1) + (r + m - 1)
    return index


def table_size(size: tuple[int, ...], rank: int, group: GroupPlan) -> tuple[int, ...]:
    """A window table's size on a map of ``rank`` axes: the table's own where its axes match;
    a table built for 2-D windows of an int size, or of other axes, is an error naming the
    group."""
    if len(size) == rank:
        return size
    hint = ""
    if any_rank(size):
        hint = (
            f"\n  Hint: give the window one size per axis, e.g. "
            f"{type(group.partition).__name__}({(size[0],) * rank}), so that the table is "
            f"built for {rank}-D windows."
        )
    raise AttnblocksError(
        f"RelPosBias: head group {group.index} ({group.partition!r}) has a table for "
        f"{len(size)}-D windows of {fmt_size(size)} tokens, but the map has {rank} axes.{hint}"
    )


class RelPosBiasModule(EncoderModule):
    """One learned table per head group, in its partition's layout.

    - window groups (Swin): ``tables[g]: ((2Mh-1)(2Mw-1), h_g)``, read by :meth:`bias`;
    - sliding-window groups (:class:`~attnblocks.Dilated`, NAT / DiNAT): ``tables[g]:
      (h_g, 2k-1, 2k-1)``, the authors' ``rpb`` for the group's heads, read by
      :meth:`offset_bias`. With ``border="shift"`` a window moves inward at the borders, so a
      key may sit up to ``k-1`` dilation steps from its query on either side: hence ``2k-1``.

    One list for both keeps one spec, one module and uniform keys (``pe.<i>.tables.<g>``) in
    hybrids of windows and neighbourhoods; each entry keeps its authors' layout, so converters
    copy tensors without reshaping them.

    Example:
        >>> from attnblocks import Attention, Neighborhood, RelPosBias
        >>> layer = Attention(partition=Neighborhood(7), pe=RelPosBias()).build(64, 2)
        >>> layer.pe[0].tables[0].shape
        torch.Size([2, 13, 13])
    """

    def __init__(self, spec, groups: tuple[GroupPlan, ...], device=None, dtype=None) -> None:
        super().__init__()
        self.index = spec.index
        self.sizes: list[tuple[int, ...]] = []
        shapes = []
        for g in groups:
            if isinstance(g.partition, Dilated):
                kh, kw = g.partition.kernel_size
                if spec.size is not None and spec.size != (kh, kw):
                    raise AttnblocksError(
                        f"{spec!r} does not fit head group {g.index}: {g.partition!r} sizes "
                        f"its table by its kernel, {kh}x{kw} (a (2k-1) x (2k-1) table of key "
                        f"offsets), but size={spec.size[0]}x{spec.size[1]} was given.\n  Hint: "
                        f"use RelPosBias() (the size is taken from the kernel) or "
                        f"size={g.partition.kernel!r}."
                    )
                self.sizes.append((kh, kw))
                shapes.append((g.num_heads, 2 * kh - 1, 2 * kw - 1))
                continue
            if spec.size is not None:
                size = spec.size
            elif isinstance(g.partition, (Window, Grid)):
                size = g.partition.size
            elif getattr(g.partition, "window_size", None) is not None:  # attnblocks.extend
                size = axes(repr(g.partition), "window_size", g.partition.window_size)
            elif hasattr(g.partition, "window_size"):
                raise AttnblocksError(
                    f"{spec!r} needs a window size, but head group {g.index} uses "
                    f"{g.partition!r}, which declares none (window_size = None).\n  Hint: "
                    f"declare window_size on the partition, or give RelPosBias(size=(h, w)), the "
                    f"largest key offset + 1 it must cover."
                )
            else:
                raise AttnblocksError(
                    f"{spec!r} needs a fixed window, but head group {g.index} uses "
                    f"{g.partition!r}, whose extent depends on the map: give the largest "
                    f"extent, e.g. RelPosBias(size=(64, 64))."
                )
            self.sizes.append(size)
            shapes.append((math.prod(2 * m - 1 for m in size), g.num_heads))
        self.tables = nn.ParameterList(
            nn.Parameter(torch.empty(s, device=device, dtype=dtype)) for s in shapes
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for t in self.tables:
            nn.init.trunc_normal_(t, std=0.02)

    def bias(self, group: GroupPlan, layout: RectLayout) -> torch.Tensor:
        table = self.tables[group.index]
        size = table_size(self.sizes[group.index], layout.ndim, group)
        if any(w > m for w, m in zip(layout.window, size)):
            raise AttnblocksError(
                f"RelPosBias: head group {group.index} has a table for {fmt_size(size)} windows, "
                f"but {group.partition!r} makes {fmt_size(layout.window)} windows on a "
                f"{fmt_size(layout.shape)} map."
            )
        T = layout.tokens
        if self.index == "torchvision":  # the full window's index, its top-left T x T block
            index = relative_position_index(size, size)[:T, :T]
        else:
            index = relative_position_index(layout.window, size)
        index = index.to(table.device)
        return table[index.reshape(-1)].view(T, T, -1).permute(2, 0, 1)

    def offset_bias(self, group: GroupPlan) -> torch.Tensor | None:
        """NAT's ``rpb`` of a sliding-window group, ``(h_g, 2k-1, 2k-1)``; ``None`` otherwise."""
        return self.tables[group.index] if isinstance(group.partition, Dilated) else None


class LePEModule(EncoderModule):
    """Depthwise conv on V in each group's own windows.

    Parameters: ``conv.weight: (C, 1, k, k)``, ``conv.bias: (C,)``.
    """

    ranks: ClassVar[tuple[int, ...] | None] = (2,)

    def __init__(self, spec, dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.kernel = spec.kernel
        self.ndim = getattr(spec, "ndim", 2)
        self.ranks = (self.ndim,)
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[self.ndim - 1]
        self.conv = conv(dim, dim, spec.kernel, groups=dim, device=device, dtype=dtype)

    def value(self, group: GroupPlan, v: torch.Tensor, layout: RectLayout) -> torch.Tensor:
        """``v: (B, nW, h, T, d)`` -> the same shape: the conv of each window's frame."""
        c0, c1 = group.channels
        if layout.ndim != self.ndim:
            raise AttnblocksError(
                f"{type(self).__name__} (head group {group.index}, {group.partition!r}) was "
                f"built for {self.ndim}-D maps (ndim={self.ndim}), got a {layout.ndim}-D map."
            )
        if layout.ndim != 2:
            frames = v.movedim(-1, 3).reshape(-1, (c1 - c0), *layout.window)
            conv = (F.conv1d, F.conv2d, F.conv3d)[layout.ndim - 1]
            out = conv(
                frames,
                self.conv.weight[c0:c1],
                self.conv.bias[c0:c1],
                padding=self.kernel // 2,
                groups=c1 - c0,
            )
            B, n, h, T, d = v.shape
            return out.reshape(B, n, h, d, T).transpose(-1, -2)
        wh, ww = layout.window
        frames = rearrange(v, "b n h (wh ww) d -> (b n) (h d) wh ww", wh=wh, ww=ww)
        weight, pad = self.conv.weight[c0:c1], self.kernel // 2
        padding: int | tuple[int, int] = pad
        if wh == 1 or ww == 1:
            # a frame one token thin sees only the kernel's middle row (column) against its zero
            # padding: run that as a 1 x k conv along the frame (CSWin-T stage 1, fwd+bwd:
            # 2.9 ms where the k x k conv took 7.3 ms on rows and 6.1 ms on columns)
            frames = frames.reshape(*frames.shape[:2], 1, wh * ww)
            weight = weight[:, :, pad : pad + 1] if wh == 1 else weight[:, :, :, pad, None].mT
            padding = (0, pad)
        out = F.conv2d(frames, weight, self.conv.bias[c0:c1], padding=padding, groups=c1 - c0)
        return rearrange(out, "(b n) (h d) wh ww -> b n h (wh ww) d", n=v.shape[1], h=v.shape[2])


class LocalConvModule(LePEModule):
    """The depthwise conv of :class:`~attnblocks.LocalConv`, one channel per V channel.

    Parameters: ``conv.weight: (C, 1, k, k)``, ``conv.bias: (C,)``; head group ``g`` uses the
    channels ``g.channels`` of both. On window, stripe and global groups it acts through the
    ``value`` hook exactly as LePE; :class:`~attnblocks.families.reduced.DownsampleRunner`
    calls :meth:`term` itself.

    Example:
        >>> import torch
        >>> from attnblocks import Attention, Downsample, LocalConv, Split
        >>> spec = Attention(partition=Downsample((4, 2), act="gelu"), heads=Split(2),
        ...                  pe=LocalConv())
        >>> spec.build(16, 2).pe[0].conv.weight.shape
        torch.Size([16, 1, 3, 3])
    """

    def term(self, group: GroupPlan, v: torch.Tensor) -> torch.Tensor:
        """``DWConv(v)`` with the group's channels; ``v: (B, c, H', W') -> (B, c, H', W')``
        (``(B, c, *reduced)`` on a map of ``ndim`` axes)."""
        c0, c1 = group.channels
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.ndim - 1]
        return conv(
            v,
            self.conv.weight[c0:c1],
            self.conv.bias[c0:c1],
            padding=self.kernel // 2,
            groups=c1 - c0,
        )


@size_cache(128)
def log_relative_coords(window: tuple[int, ...], ref: tuple[int, ...]) -> torch.Tensor:
    """SwinV2's log-spaced relative coordinates of a ``window``, normalised by ``ref - 1``.

    Computed in float32 with the authors' operation order, so that weights trained with them
    see the same inputs.

    Returns:
        ``((2wh-1) * (2ww-1), 2)`` float32, row ``(dh + wh-1) * (2ww-1) + (dw + ww-1)`` holding
        the mapped ``(dh, dw)``; for a window of ``n`` axes ``(prod(2w-1), n)``, rows in the
        order of :func:`relative_position_index`.

    Example:
        >>> [round(v, 4) for v in log_relative_coords((2, 1), (2, 1))[:, 0].tolist()]  # dh
        [-1.0566, 0.0, 1.0566]
    """
    axes = [torch.arange(-(w - 1), w, dtype=torch.float32) for w in window]
    table = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (2wh-1, 2ww-1, 2)
    for a, r in enumerate(ref):
        table[..., a] /= max(r - 1, 1)  # a 1-token window has the single offset 0
    table *= 8
    table = torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / math.log2(8)
    return table.view(-1, len(window))


class ContinuousPosBiasModule(EncoderModule):
    """SwinV2's CPB MLP, under the authors' names: ``cpb_mlp.0.weight: (hidden, 2)``,
    ``cpb_mlp.0.bias: (hidden,)``, ``cpb_mlp.2.weight: (h, hidden)``.

    Example:
        >>> from attnblocks import Attention, ContinuousPosBias, Window, rect_layout
        >>> layer = Attention(partition=Window(4), pe=ContinuousPosBias()).build(8, 2)
        >>> layer.pe[0].bias(layer.groups[0], rect_layout(Window(4), 8, 8)).shape
        torch.Size([2, 16, 16])
    """

    def __init__(self, spec, num_heads: int, device=None, dtype=None) -> None:
        super().__init__()
        self.pretrained = spec.pretrained
        self.ndim = spec.ndim
        self.ranks = (spec.ndim,)
        dd = {"device": device, "dtype": dtype}
        self.cpb_mlp = nn.Sequential(
            nn.Linear(spec.ndim, spec.hidden, **dd),
            nn.ReLU(inplace=True),
            nn.Linear(spec.hidden, num_heads, bias=False, **dd),
        )

    def bias(self, group: GroupPlan, layout: RectLayout) -> torch.Tensor:
        weight = self.cpb_mlp[0].weight
        if layout.ndim != self.ndim:
            raise AttnblocksError(
                f"ContinuousPosBias (head group {group.index}, {group.partition!r}) was built "
                f"for {self.ndim}-D windows (ndim={self.ndim}), got a {layout.ndim}-D map."
            )
        ref = self.pretrained
        if ref is not None:
            ref = per_axis("ContinuousPosBias", "pretrained", ref, layout.ndim)
        coords = log_relative_coords(layout.window, ref or layout.window)
        hidden = self.cpb_mlp[1](
            self.cpb_mlp[0](coords.to(device=weight.device, dtype=weight.dtype))
        )
        h0, h1 = group.heads  # the group's rows of the last linear only
        table = 16 * torch.sigmoid(F.linear(hidden, self.cpb_mlp[2].weight[h0:h1]))
        index = relative_position_index(layout.window, layout.window).to(weight.device)
        T = layout.tokens
        return table[index.view(-1)].view(T, T, -1).permute(2, 0, 1)


@size_cache(64)
def rope_angles(
    H: int, W: int, head_dim: int, temperature: float, ref: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and frequencies of 2D axial RoPE, float32 as in timm.

    Returns:
        ``pos: (H, W, 2)`` (row, col, rescaled by ``ref / (H, W)`` when given) and
        ``freqs: (head_dim // 4,)``; the angles are ``pos[..., :, None] * freqs``.

    Example:
        >>> pos, freqs = rope_angles(2, 3, 8, 100.0, None)
        >>> pos[1, 2].tolist(), freqs.tolist()
        ([1.0, 2.0], [1.0, 0.10000000149011612])
    """
    return axial_angles((H, W), head_dim, temperature, ref)


def axial_angles(
    shape: tuple[int, ...], head_dim: int, temperature: float, ref: tuple[int, ...] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rope_angles` on a map of any rank: ``pos: (*shape, n)`` and ``freqs:
    (head_dim // (2 n),)`` for ``n`` axes, float32.

    Example:
        >>> pos, freqs = axial_angles((2, 3, 4), 12, 100.0, None)
        >>> pos.shape, freqs.shape
        (torch.Size([2, 3, 4, 3]), torch.Size([2]))
    """
    n = head_dim // (2 * len(shape))
    freqs = 1.0 / (temperature ** (torch.arange(n, dtype=torch.int64).to(torch.float32) / n))
    coords = [torch.arange(s, dtype=torch.int64).to(torch.float32) for s in shape]
    if ref is not None:
        coords = [t / s * r for t, s, r in zip(coords, shape, ref)]
    return torch.stack(torch.meshgrid(*coords, indexing="ij"), dim=-1), freqs


class AxialRoPEModule(EncoderModule):
    """Rotates q and k by their absolute position; no parameters.

    Example:
        >>> from attnblocks import AxialRoPE
        >>> rope = AxialRoPEModule(AxialRoPE(), head_dim=8)
        >>> q = torch.randn(1, 3, 5, 2, 8)  # (B, H, W, h, d)
        >>> qr, kr = rope.rotate(q, q)
        >>> torch.allclose(qr[:, 0, 0], q[:, 0, 0]), torch.allclose(qr.norm(dim=-1), q.norm(dim=-1))
        (True, True)
    """

    rotates = True

    def __init__(self, spec, head_dim: int) -> None:
        super().__init__()
        if head_dim % 2:  # the map's rank, known at the call, says the rest (2-D: 4)
            raise AttnblocksError(
                f"{spec!r} rotates channel pairs: the head dim must be even (a multiple of 2n "
                f"on an n-D map, 4 on an image), got head_dim={head_dim}."
            )
        self.spec, self.head_dim = spec, head_dim

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q, k: (B, H, W, h, d)`` -> rotated, same shapes; ``(B, *shape, h, d)`` on a map of
        any rank ``n`` (head dim a multiple of ``2 n``: ``d / 2n`` frequencies per axis)."""
        shape = tuple(q.shape[1:-2])
        n = len(shape)
        if self.head_dim % (2 * n):
            raise AttnblocksError(
                f"{self.spec!r} rotates one channel pair per axis and frequency: on a {n}-D map "
                f"the head dim must be a multiple of {2 * n}, got head_dim={self.head_dim}."
            )
        ref = self.spec.ref
        if ref is not None:
            ref = per_axis(repr(self.spec), "ref", ref, n)
        pos, freqs = axial_angles(shape, self.head_dim, self.spec.temperature, ref)
        # angles in at least float32: position * frequency in half precision is off by ~0.1 rad
        dd = {"device": q.device, "dtype": torch.promote_types(q.dtype, torch.float32)}
        angles = (pos.to(**dd)[..., None] * freqs.to(**dd)).flatten(-2)  # (*shape, d/2)
        cos = angles.cos()[..., None, :].to(q.dtype)  # (*shape, 1, d/2)
        sin = angles.sin()[..., None, :].to(q.dtype)
        return _rotate_pairs(q, cos, sin), _rotate_pairs(k, cos, sin)


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x: (..., d)`` by the angles of ``cos, sin``."""
    a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)


class CPEModule(EncoderModule):
    """``prepare(x) = x + DWConv(x)`` over the whole map.

    Parameters: ``conv.weight: (C, 1, k, k)``, ``conv.bias: (C,)``.
    """

    def __init__(self, spec, dim: int, device=None, dtype=None) -> None:
        super().__init__()
        k = spec.kernel
        self.ranks = (spec.ndim,)
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[spec.ndim - 1]
        self.conv = conv(dim, dim, k, padding=k // 2, groups=dim, device=device, dtype=dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, H, W, C) -> (B, H, W, C)``; ``(B, *shape, C)`` for ``ndim`` axes."""
        return x + self.conv(x.movedim(-1, 1)).movedim(1, -1)
