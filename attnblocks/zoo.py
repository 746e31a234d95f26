"""The published attentions as one-liners over attnblocks primitives.

Each function returns an :class:`~attnblocks.Attention` spec; ``.build(dim, num_heads)``
makes the module, and :mod:`attnblocks.convert` loads the authors' weights into it.
"""

from __future__ import annotations

from ._errors import AttnblocksError
from ._spec import positive_int
from .attention import Attention
from .heads import Split
from .partition import Dilated, Downsample, Global, Grid, Neighborhood, Stripe, Window
from .pe import ContinuousPosBias, LePE, LocalConv, RelPosBias
from .score import Cosine

__all__ = [
    "cswin",
    "dilateformer",
    "dinat",
    "maxvit_block",
    "maxvit_grid",
    "nat",
    "pvtv2",
    "shunted",
    "swin",
    "swinv2",
]


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


def swinv2(
    window: int = 8,
    shift: int = 0,
    pretrained_window: int | None = None,
    clamp: str | None = "swin",
    pad: str = "mask",
) -> Attention:
    """SwinV2's (shifted) window attention: scaled cosine attention and a continuous bias.

    Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022. Swin's
    windows and shifts, with ``Cosine()`` scores, the log-spaced ``ContinuousPosBias`` (its
    offsets normalised by ``pretrained_window - 1`` when given) and q/v-only qkv bias.
    ``clamp="timm", pad="timm"`` reproduces timm 1.0's ``SwinTransformerV2Block`` at any size.

    Example:
        >>> swinv2(8, shift=4)
        Attention(partition=Window(8, shift=4, clamp='swin'), pe=ContinuousPosBias(), qkv_bias='qv', score=Cosine())
    """  # noqa: E501
    return Attention(
        partition=Window(window, shift=shift, clamp=clamp),
        pe=ContinuousPosBias(pretrained=pretrained_window),
        qkv_bias="qv",
        score=Cosine(),
        pad=pad,
    )


def maxvit_block(size: int = 7, pad: str = "mask") -> Attention:
    """MaxViT's block attention: unshifted ``size x size`` windows with a relative bias.

    Tu et al., "MaxViT: Multi-Axis Vision Transformer", ECCV 2022.

    Example:
        >>> maxvit_block(7)
        Attention(partition=Window(7), pe=RelPosBias())
    """
    return Attention(partition=Window(size), pe=RelPosBias(), pad=pad)


def maxvit_grid(size: int = 7, pad: str = "mask") -> Attention:
    """MaxViT's grid attention: a ``size x size`` grid of tokens spread evenly over the map,
    with a relative bias over grid offsets.

    Tu et al., "MaxViT: Multi-Axis Vision Transformer", ECCV 2022.

    Example:
        >>> maxvit_grid(7)
        Attention(partition=Grid(7), pe=RelPosBias())
    """
    return Attention(partition=Grid(size), pe=RelPosBias(), pad=pad)


def pvtv2(sr: int = 8) -> Attention:
    """PVTv2's spatial-reduction attention (SRA).

    Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer", CVMJ 2022.
    Queries at full resolution; keys and values from the map reduced by a strided conv
    (``k = s = sr``) and a LayerNorm, through one ``kv`` shared by all heads. ``sr = 1`` reads
    the map directly (global attention with separate ``q`` and ``kv`` projections). PVTv2-b2 uses
    ``sr`` 8, 4, 2, 1 in its four stages. Load weights with :func:`~attnblocks.convert.load_pvtv2`.

    Example:
        >>> pvtv2(8)
        Attention(partition=Downsample(8))
    """
    return Attention(partition=Downsample(positive_int("pvtv2", "sr", sr)))


def shunted(sr: int = 8) -> Attention:
    """Shunted self-attention (SSA): multi-scale token aggregation.

    Ren et al., "Shunted Self-Attention via Multi-Scale Token Aggregation", CVPR 2022. For
    ``sr > 1`` half the heads attend to the map reduced by ``sr``, the other half to the map
    reduced by ``sr / 2`` (each branch: strided conv, LayerNorm, exact GELU, its own ``kv``),
    with V locally enhanced by a depthwise 3x3 conv before attention. ``sr = 1`` is one branch of
    global attention with the conv added after it. Shunted-T uses ``sr`` 8, 4, 2, 1. Load weights
    with :func:`~attnblocks.convert.load_shunted`.

    Example:
        >>> shunted(8)
        Attention(partition=Downsample((8, 4), act='gelu'), heads=Split(2), pe=LocalConv())
        >>> shunted(2).partition  # the second branch is a 1x1 conv
        Downsample((2, 1), act='gelu', conv1x1=True)
        >>> shunted(1)
        Attention(partition=Downsample(1), pe=LocalConv())
    """
    positive_int("shunted", "sr", sr)
    if sr == 1:
        return Attention(partition=Downsample(1), pe=LocalConv())
    if sr % 2:
        raise AttnblocksError(
            f"shunted: sr must be 1 or even (its second branch reduces by sr / 2), got sr={sr}."
        )
    part = Downsample((sr, sr // 2), act="gelu", conv1x1=sr == 2)
    return Attention(partition=part, heads=Split(2), pe=LocalConv())


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
    if partition.is_generic():
        return Attention(partition=partition, heads=Split(len(partition.dilation)))
    return Attention(partition=partition)


def nat(kernel: int = 7, rpb: bool = True) -> Attention:
    """NAT's neighbourhood attention: the ``kernel x kernel`` nearest keys, shifted at borders.

    Hassani et al., "Neighborhood Attention Transformer", CVPR 2023. With ``rpb`` (the authors'
    layer), a learned relative position bias: ``RelPosBias()`` on a neighbourhood is a
    ``(heads, 2k-1, 2k-1)`` table read by the key's offset from the query.

    Example:
        >>> nat()
        Attention(partition=Neighborhood(7), pe=RelPosBias())
        >>> nat(rpb=False)
        Attention(partition=Neighborhood(7))
    """
    return Attention(partition=Neighborhood(kernel), pe=RelPosBias() if rpb else None)


def dinat(kernel: int = 7, dilation: int = 2, rpb: bool = True) -> Attention:
    """DiNAT's dilated neighbourhood attention (NAT on each dilation sub-grid).

    Hassani and Shi, "Dilated Neighborhood Attention Transformer", 2022. DiNAT alternates
    ``dilation=1`` and larger dilations layer by layer (DiNAT-T stage 3: ``[1, 2] * 9``). With
    ``rpb``, NAT's relative position bias, its offsets counted in dilation steps.

    Example:
        >>> dinat(7, dilation=2)
        Attention(partition=Neighborhood(7, dilation=2), pe=RelPosBias())
    """
    part = Neighborhood(kernel, dilation=dilation)
    return Attention(partition=part, pe=RelPosBias() if rpb else None)
