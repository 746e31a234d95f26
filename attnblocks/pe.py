"""Positional-encoder specs: relative position bias, LePE, ...

Every encoder spec builds a module (see :mod:`attnblocks.encoders`) that takes part in the
attention through one shared contract, so encoders are swappable and combinable:
``prepare`` (the input, before qkv), ``rotate`` (q and k on the map, before partitioning),
``bias`` (additive logits per window), ``offset_bias`` (additive logits by key offset, for
sliding windows: :class:`RelPosBias` on a :class:`~attnblocks.Neighborhood` is NAT's ``rpb``)
and ``value`` (a term added to each window's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._errors import AttnblocksError
from ._spec import Spec, any_rank, axes, check_ndim, positive_int

if TYPE_CHECKING:
    from torch import nn

    from .lowering import GroupPlan

__all__ = [
    "CPE",
    "RELPOS_INDEX",
    "AxialRoPE",
    "ContinuousPosBias",
    "LePE",
    "LocalConv",
    "PositionalEncoder",
    "RelPosBias",
]


RELPOS_INDEX = ("exact", "torchvision")


class PositionalEncoder(Spec):
    """Base class of positional-encoder specs.

    Example:
        >>> isinstance(LePE(), PositionalEncoder)
        True
    """

    def build(
        self, groups: tuple[GroupPlan, ...], dim: int, num_heads: int, device=None, dtype=None
    ) -> nn.Module:
        """Make the module that owns this encoder's parameters for the given head groups."""
        raise NotImplementedError


@dataclass(frozen=True, repr=False)
class RelPosBias(PositionalEncoder):
    """A learned relative position bias: one table per head group, added to the scaled logits.

    On windows (Swin, MaxViT): the table of a group is ``((2*Mh - 1) * (2*Mw - 1), heads)`` for
    a window of ``(Mh, Mw)`` tokens, indexed by ``(dh + Mh - 1) * (2*Mw - 1) + (dw + Mw - 1)``
    with ``dh, dw`` the query minus key coordinates. The window size is taken from the group's
    partition (``Window``, ``Grid``); partitions whose extent depends on the map (``Stripe``,
    ``Global``) need an explicit ``size``, the largest extent to support. Windows smaller than
    the table (a clamped window on a small map) use its centre.

    On sliding windows (:class:`~attnblocks.Dilated`, :class:`~attnblocks.Neighborhood`: NAT's
    and DiNAT's ``rpb``): the table is ``(heads, 2k-1, 2k-1)`` for a ``k x k`` kernel, and key
    ``(yk, xk)`` of query ``(yq, xq)`` adds ``table[h, (yk - yq)/r + k - 1, (xk - xq)/r + k -
    1]``, its offset counted in dilation steps ``r``. With ``border="shift"`` the window moves
    inward at the borders, so offsets range over ``-(k-1)..k-1``: hence ``2k-1``. The size is
    the kernel's (a ``size`` must equal it). Under ``border="zeros"`` an out-of-map key is a
    zero vector whose logit is its offset's bias alone.

    One spec for both: the bias is the same idea (a learned scalar per head and relative
    offset) and its extent follows the partition, so a hybrid of windows and neighbourhoods
    under one ``Split`` takes one ``RelPosBias()``; each table keeps its authors' layout.

    In any rank the same holds per axis: a ``(t, h, w)`` window (Video Swin) has a
    ``(2t-1)(2h-1)(2w-1) x heads`` table, indexed by the offsets read as mixed-radix digits, time
    first.

    Args:
        size: the table's window size (an int, or one extent per axis), or ``None`` to take it
            from the partition.
        index: how a window smaller than the table (clamped to a small map) reads it.
            ``"exact"``: by its true offsets (the table's centre). ``"torchvision"``: the
            top-left ``T x T`` block of the full window's index, as torchvision's
            ``ShiftedWindowAttention3d`` computes it (the true offsets only where the clamped
            axes are leading ones, e.g. time alone).

    Example:
        >>> RelPosBias()
        RelPosBias()
        >>> RelPosBias(index="torchvision")
        RelPosBias(index='torchvision')
        >>> from attnblocks import Attention, Neighborhood
        >>> layer = Attention(partition=Neighborhood(7), pe=RelPosBias()).build(64, 2)
        >>> layer.pe[0].tables[0].shape  # NAT's rpb: (heads, 2k-1, 2k-1)
        torch.Size([2, 13, 13])
    """

    size: int | tuple[int, ...] | None = None
    index: str = "exact"

    def __post_init__(self) -> None:
        if self.size is not None:
            object.__setattr__(self, "size", axes("RelPosBias", "size", self.size))
        if self.index not in RELPOS_INDEX:
            raise AttnblocksError(
                f"RelPosBias: index must be one of {RELPOS_INDEX}, got {self.index!r}."
            )

    def build(self, groups, dim, num_heads, device=None, dtype=None):
        from .encoders import RelPosBiasModule

        return RelPosBiasModule(self, groups, device=device, dtype=dtype)


@dataclass(frozen=True, repr=False)
class LePE(PositionalEncoder):
    """CSWin's locally-enhanced positional encoding: ``out = attn @ v + DWConv(v)``.

    The depthwise conv (with bias) runs on V cut into each group's own windows (stripes,
    windows, or the whole map), zero-padded at their borders, so nothing crosses a window.
    Conv channel ``c`` of a group belongs to its head ``c // d``, dim ``c % d``.

    Args:
        kernel: the odd conv kernel size (CSWin: 3).
        ndim: the token map's rank: the conv is a depthwise ``Conv1d``, ``Conv2d`` or
            ``Conv3d`` of ``kernel`` on every axis of each window's frame.

    Example:
        >>> LePE()
        LePE()
        >>> LePE(ndim=3)  # on (T, H, W) windows: a 3x3x3 depthwise conv
        LePE(ndim=3)
    """

    kernel: int = 3
    ndim: int = 2
    _positional: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        positive_int("LePE", "kernel", self.kernel)
        if self.kernel % 2 == 0:
            raise AttnblocksError(f"LePE: kernel must be odd, got kernel={self.kernel}.")
        check_ndim("LePE", self.ndim)

    def build(self, groups, dim, num_heads, device=None, dtype=None):
        from .encoders import LePEModule

        return LePEModule(self, dim, device=device, dtype=dtype)


@dataclass(frozen=True, repr=False)
class ContinuousPosBias(PositionalEncoder):
    """SwinV2's log-spaced continuous position bias (CPB): a small MLP of relative offsets.

    Liu et al., "Swin Transformer V2", CVPR 2022. For a window of ``(Mh, Mw)`` tokens the
    offsets ``dh, dw`` (query minus key) are divided by ``M - 1`` (``pretrained - 1`` when
    given), times 8, mapped ``sign(x) * log2(1 + |x|) / log2(8)``, and sent through
    ``Linear(2, hidden) -> ReLU -> Linear(hidden, h, bias=False)``; the bias is
    ``16 * sigmoid(.)``, gathered with Swin's relative index. One MLP serves all heads (a head
    group uses its heads' outputs). The window is the group's actual window on the map, so it
    works with any rectangular partition, and a model moves to larger windows without
    resizing any table. The log coordinates are computed in float32, as the authors do.

    Args:
        pretrained: the window size the weights were trained with, or ``None`` (the window).
        hidden: the MLP width (SwinV2: 512).
        ndim: the token map's rank: the MLP reads one log-spaced offset per axis
            (``Linear(ndim, hidden)``), the same mapping on every axis.

    Example:
        >>> ContinuousPosBias(pretrained=8)
        ContinuousPosBias(pretrained=8)
    """

    pretrained: int | tuple[int, ...] | None = None
    hidden: int = 512
    ndim: int = 2

    def __post_init__(self) -> None:
        positive_int("ContinuousPosBias", "hidden", self.hidden)
        check_ndim("ContinuousPosBias", self.ndim)
        if self.pretrained is not None:
            p = axes("ContinuousPosBias", "pretrained", self.pretrained)
            if len(p) != self.ndim and not any_rank(p):
                raise AttnblocksError(
                    f"ContinuousPosBias: pretrained={p} has {len(p)} axes, but ndim="
                    f"{self.ndim} (give an int or one size per axis)."
                )
            object.__setattr__(self, "pretrained", p)

    def build(self, groups, dim, num_heads, device=None, dtype=None):
        from .encoders import ContinuousPosBiasModule

        return ContinuousPosBiasModule(self, num_heads, device=device, dtype=dtype)


@dataclass(frozen=True, repr=False)
class AxialRoPE(PositionalEncoder):
    """2D axial rotary position embedding (EVA-02, RoPE-ViT's RoPE-Axial).

    q and k are rotated by their absolute ``(row, col)`` on the map before it is partitioned,
    so the logit of a query and a key depends on their offset only, whatever the partition.
    With head dim ``d`` (a multiple of 4) and ``n = d / 4`` frequencies
    ``f_i = temperature ** (-i / n)``, channel pair ``(2i, 2i+1)`` is rotated by ``row * f_i``
    for ``i < n`` and by ``col * f_(i-n)`` for ``i >= n`` (timm's ``RotaryEmbeddingCat`` with
    ``in_pixels=False``, interleaved layout). Frequencies are computed in float32 as in timm.

    Args:
        temperature: the frequency base (EVA-02: 10000).
        ref: EVA-02's ``ref_feat_shape``: positions are rescaled by ``ref / (H, W)``, so any
            map spans the positions of a ``ref``-sized one; ``None`` keeps token indices.

    On a map of ``n`` axes (a sequence, a clip) the same holds per axis: ``d / 2n``
    frequencies each, the pairs of axis ``a`` rotated by its coordinate (the head dim a
    multiple of ``2n``); 1-D is the usual interleaved RoPE.

    Example:
        >>> AxialRoPE()
        AxialRoPE()
        >>> AxialRoPE(ref=16)
        AxialRoPE(ref=16)
    """

    temperature: float = 10000.0
    ref: int | tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"AxialRoPE: temperature must be a number, got {t!r}.")
        if not t > 1:
            from ._errors import AttnblocksError

            raise AttnblocksError(f"AxialRoPE: temperature must be > 1, got temperature={t}.")
        object.__setattr__(self, "temperature", float(t))
        if self.ref is not None:
            object.__setattr__(self, "ref", axes("AxialRoPE", "ref", self.ref))

    def build(self, groups, dim, num_heads, device=None, dtype=None):
        from .encoders import AxialRoPEModule

        return AxialRoPEModule(self, dim // num_heads)


@dataclass(frozen=True, repr=False)
class LocalConv(PositionalEncoder):
    """Shunted's local enhancement: a depthwise conv (with bias) on the value path.

    Where it applies follows the authors' rule per head group: for a
    :class:`~attnblocks.Downsample` group whose keys pass through a reduction (ratio > 1, or
    ``conv1x1=True``), ``v <- v + DWConv(v)`` on the reduced V map **before** attention
    (Shunted, ``sr > 1``); for a group whose keys are the map's own tokens (ratio 1, or a window,
    stripe or global partition), ``out = attn @ v + DWConv(v)`` **after** attention, over the
    group's frame (Shunted's ``sr = 1``; on windows or stripes this is :class:`LePE`). V is laid
    out as a map ``(B, c, H', W')``, zero-padded by ``kernel // 2``; conv channel ``c`` of a group
    belongs to its head ``c // d``, dim ``c % d``. Parameters: ``conv.weight: (C, 1, k, k)``.

    Args:
        kernel: the odd conv kernel size (Shunted: 3).
        ndim: the token map's rank (a depthwise ``Conv1d`` / ``Conv2d`` / ``Conv3d``).

    Example:
        >>> LocalConv()
        LocalConv()
    """

    kernel: int = 3
    ndim: int = 2
    _positional: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        positive_int("LocalConv", "kernel", self.kernel)
        if self.kernel % 2 == 0:
            raise AttnblocksError(f"LocalConv: kernel must be odd, got kernel={self.kernel}.")
        check_ndim("LocalConv", self.ndim)

    def build(self, groups, dim, num_heads, device=None, dtype=None):
        from .encoders import LocalConvModule

        return LocalConvModule(self, dim, device=device, dtype=dtype)


@dataclass(frozen=True, repr=False)
class CPE(PositionalEncoder):
    """Conditional positional encoding: ``x + DWConv(x)`` on the input, before the projection.

    Chu et al., "Conditional Positional Encodings for Vision Transformers" (ICLR 2023), as
    DilateFormer uses it: a depthwise ``kernel x kernel`` conv (with bias, zero padding) over
    the whole map ``(B, C, H, W)``, added to its input. It acts through the encoders'
    ``prepare`` hook, so it combines with any partition. (DilateFormer's block applies it to
    the residual stream before the pre-norm; as an encoder it is applied to the attention's
    own input.)

    Args:
        kernel: the odd conv kernel size (DilateFormer: 3).
        ndim: the token map's rank: a depthwise ``Conv1d``, ``Conv2d`` or ``Conv3d``.

    Example:
        >>> CPE()
        CPE()
        >>> CPE(ndim=3)
        CPE(ndim=3)
    """

    kernel: int = 3
    ndim: int = 2
    _positional: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        positive_int("CPE", "kernel", self.kernel)
        if self.kernel % 2 == 0:
            raise AttnblocksError(f"CPE: kernel must be odd, got kernel={self.kernel}.")
        check_ndim("CPE", self.ndim)

    def build(self, groups, dim, num_heads, device=None, dtype=None):
        from .encoders import CPEModule

        return CPEModule(self, dim, device=device, dtype=dtype)
