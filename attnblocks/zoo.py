"""The published attentions as one-liners over attnblocks primitives.

Each function returns an :class:`~attnblocks.Attention` spec; ``.build(dim, num_heads)``
makes the module, and :mod:`attnblocks.convert` loads the authors' weights into it.
"""

from __future__ import annotations

from .attention import Attention
from .heads import Split
from .partition import Dilated, Global, Neighborhood, Stripe, Window
from .pe import LePE, RelPosBias

__all__ = ["cswin", "dilateformer", "dinat", "nat", "swin"]


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


def dilateformer(kernel: int = 3, dilations: int | tuple[int, ...] = (1, 2, 3)) -> Attention:
    """DilateFormer's multi-scale dilated attention (MSDA).

    Jiao et al., "DilateFormer: Multi-Scale Dilated Transformer for Visual Recognition", IEEE
    TMM 2023. The heads are split into ``len(dilations)`` groups; group ``i`` attends, per
    query, to the ``kernel x kernel`` keys ``dilations[i]`` apart around it, out-of-map keys
    being zero vectors that stay in the softmax. The authors' 1x1-conv qkv is the layer's
    ``Linear`` (see :func:`~attnblocks.convert.load_dilateformer`); their scale after the
    matmul is the same number. Their block adds a CPE (:class:`~attnblocks.CPE`) first.

    Example:
        >>> dilateformer()
        Attention(partition=Dilated(3, dilation=(1, 2, 3)), heads=Split(3))
        >>> dilateformer(dilations=2)
        Attention(partition=Dilated(3, dilation=2))
    """
    partition = Dilated(kernel, dilation=dilations)
    if isinstance(partition.dilation, tuple):
        return Attention(partition=partition, heads=Split(len(partition.dilation)))
    return Attention(partition=partition)


def nat(kernel: int = 7) -> Attention:
    """NAT's neighbourhood attention: the ``kernel x kernel`` nearest keys, shifted at borders.

    Hassani et al., "Neighborhood Attention Transformer", CVPR 2023. The authors' layer also
    adds a learned relative position bias (``rpb``), which is not part of this spec.

    Example:
        >>> nat()
        Attention(partition=Neighborhood(7))
    """
    return Attention(partition=Neighborhood(kernel))


def dinat(kernel: int = 7, dilation: int = 2) -> Attention:
    """DiNAT's dilated neighbourhood attention (NAT on each dilation sub-grid).

    Hassani and Shi, "Dilated Neighborhood Attention Transformer", 2022. DiNAT alternates
    ``dilation=1`` and larger dilations layer by layer (DiNAT-T stage 3: ``[1, 2] * 9``).

    Example:
        >>> dinat(7, dilation=2)
        Attention(partition=Neighborhood(7, dilation=2))
    """
    return Attention(partition=Neighborhood(kernel, dilation=dilation))
