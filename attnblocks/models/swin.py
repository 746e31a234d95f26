"""Swin Transformer (v1) backbones: Tiny, Small, Base.

Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
ICCV 2021. 4x4 patch stem, PatchMerging between stages, pre-norm blocks alternating W-MSA
(shift 0) and SW-MSA (shift ``window // 2``).
"""

from __future__ import annotations

from .. import zoo
from .backbone import BackboneSpec, Stage
from .block import Alternate, PreNorm
from .layers import ConvStem, PatchMerging
from .registry import register_model

__all__ = ["swin_base", "swin_small", "swin_spec", "swin_tiny", "swinv2_spec", "swinv2_tiny"]


def swin_spec(
    embed_dim: int,
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    window: int = 7,
    drop_path_rate: float = 0.0,
    clamp: str | None = "swin",
    pad: str = "mask",
    mlp_ratio: float = 4.0,
) -> BackboneSpec:
    """A Swin model table: stage ``i`` has ``embed_dim * 2**i`` channels.

    ``clamp``/``pad`` go to every :func:`~attnblocks.zoo.swin` attention: the default is the
    authors' rule with exact (masked) padding; ``clamp="timm", pad="timm"`` reproduces timm
    1.0's ``SwinTransformer`` built for the input size (``img_size=``, or
    ``set_input_size(img_size, window_size=window)``), at any size. timm's
    ``dynamic_img_size=True`` keeps the windows and shifts clamped for the construction size
    and only rebuilds the masks, and ``set_input_size(img_size)`` without a window scales each
    window with the patch grid; neither is this table's rule.

    Example:
        >>> swin_spec(32, (2,), (1,)).stages[0]
        Stage(32, 2, 1, Alternate(Attention(partition=Window(7, clamp='swin'), \
pe=RelPosBias()), Attention(partition=Window(7, shift=3, clamp='swin'), pe=RelPosBias())))
    """
    attn = Alternate(
        zoo.swin(window, 0, clamp=clamp, pad=pad),
        zoo.swin(window, window // 2, clamp=clamp, pad=pad),
    )
    stages = tuple(
        Stage(embed_dim * 2**i, d, h, attn, mlp_ratio)
        for i, (d, h) in enumerate(zip(depths, heads))
    )
    return BackboneSpec(
        stages, stem=ConvStem(4, 4), downsample=PatchMerging(), drop_path_rate=drop_path_rate
    )


@register_model
def swin_tiny(**options) -> BackboneSpec:
    """Swin-T: 96-192-384-768, depths 2-2-6-2, heads 3-6-12-24, window 7 (28.3M, 4.5G)."""
    options.setdefault("drop_path_rate", 0.2)
    return swin_spec(96, (2, 2, 6, 2), (3, 6, 12, 24), **options)


@register_model
def swin_small(**options) -> BackboneSpec:
    """Swin-S: 96-192-384-768, depths 2-2-18-2, heads 3-6-12-24, window 7 (49.6M, 8.7G)."""
    options.setdefault("drop_path_rate", 0.3)
    return swin_spec(96, (2, 2, 18, 2), (3, 6, 12, 24), **options)


@register_model
def swin_base(**options) -> BackboneSpec:
    """Swin-B: 128-256-512-1024, depths 2-2-18-2, heads 4-8-16-32, window 7 (87.8M, 15.4G)."""
    options.setdefault("drop_path_rate", 0.5)
    return swin_spec(128, (2, 2, 18, 2), (4, 8, 16, 32), **options)


def swinv2_spec(
    embed_dim: int,
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    window: int = 8,
    drop_path_rate: float = 0.0,
    clamp: str | None = "swin",
    pad: str = "mask",
    mlp_ratio: float = 4.0,
) -> BackboneSpec:
    """A SwinV2 table: Swin's, with :func:`~attnblocks.zoo.swinv2` attention (cosine scores,
    continuous position bias, q/v bias), residual post-norm blocks and the merge's LayerNorm
    after its reduction. ``clamp="timm", pad="timm"`` is timm 1.0's ``SwinTransformerV2``.

    Example:
        >>> swinv2_spec(32, (2,), (1,)).block
        PreNorm(res_post=True)
    """
    attn = Alternate(
        zoo.swinv2(window, 0, clamp=clamp, pad=pad),
        zoo.swinv2(window, window // 2, clamp=clamp, pad=pad),
    )
    stages = tuple(
        Stage(embed_dim * 2**i, d, h, attn, mlp_ratio)
        for i, (d, h) in enumerate(zip(depths, heads))
    )
    return BackboneSpec(
        stages,
        stem=ConvStem(4, 4),
        downsample=PatchMerging(norm_after=True),
        block=PreNorm(res_post=True),
        drop_path_rate=drop_path_rate,
    )


@register_model
def swinv2_tiny(**options) -> BackboneSpec:
    """SwinV2-T (timm ``swinv2_tiny_window8_256``): 96-192-384-768, depths 2-2-6-2, heads
    3-6-12-24, window 8 (28.3M)."""
    options.setdefault("drop_path_rate", 0.2)
    return swinv2_spec(96, (2, 2, 6, 2), (3, 6, 12, 24), **options)
