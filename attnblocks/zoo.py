"""The published attentions as one-liners over attnblocks primitives.

Each function returns an :class:`~attnblocks.Attention` spec; ``.build(dim, num_heads)``
makes the module, and :mod:`attnblocks.convert` loads the authors' weights into it.
"""

from __future__ import annotations

from .attention import Attention
from .heads import Split
from .partition import Global, Stripe, Window
from .pe import LePE, RelPosBias

__all__ = ["cswin", "swin"]


def swin(
    window: int = 7, shift: int = 0, clamp: str | None = "swin", pad: str = "mask"
) -> Attention:
    """Swin's W-MSA (``shift=0``) or SW-MSA (``shift=window // 2``).

    Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
    ICCV 2021. Windows of ``window`` tokens, cyclic shift with shift-region masking, and a
    learned relative position bias. ``clamp="swin"`` applies the authors' rule (if
    ``min(H, W) <= window`` the window becomes the map and the shift 0); ``clamp="timm"`` with
    ``pad="timm"`` reproduces timm 1.0's ``SwinTransformerBlock`` at any size.

    Example:
        >>> swin(7, shift=3)
        Attention(partition=Window(7, shift=3, clamp='swin'), pe=RelPosBias())
    """
    return Attention(partition=Window(window, shift=shift, clamp=clamp), pe=RelPosBias(), pad=pad)


def cswin(split: int = 7, last: bool = False, pad: str = "mask") -> Attention:
    """CSWin's cross-shaped window attention with LePE.

    Dong et al., "CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped
    Windows", CVPR 2022. Half the heads attend within vertical stripes of width ``split``, the
    other half within horizontal stripes; LePE adds a depthwise 3x3 conv of V inside each
    stripe. ``last=True`` is the last stage: one branch of global attention with LePE.

    Example:
        >>> cswin(7)
        Attention(partition=Stripe(7), heads=Split(2), pe=LePE())
        >>> cswin(7, last=True)
        Attention(partition=Global(), pe=LePE())
    """
    if last:
        return Attention(partition=Global(), pe=LePE(), pad=pad)
    return Attention(partition=Stripe(split), heads=Split(2), pe=LePE(), pad=pad)
