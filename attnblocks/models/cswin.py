"""CSWin Transformer backbones: Tiny, Small, Base.

Dong et al., "CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped
Windows", CVPR 2022. Overlapping 7x7 stride-4 conv stem, a 3x3 stride-2 conv (``Merge_Block``)
between stages, pre-norm blocks of cross-shaped stripe attention with LePE; the last stage
attends globally.
"""

from __future__ import annotations

from .. import zoo
from .backbone import BackboneSpec, Stage
from .layers import ConvMerge, ConvStem
from .registry import register_model

__all__ = ["cswin_base", "cswin_small", "cswin_spec", "cswin_tiny"]


def cswin_spec(
    embed_dim: int,
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    splits: tuple[int, ...] = (1, 2, 7, 7),
    drop_path_rate: float = 0.0,
    pad: str = "mask",
    mlp_ratio: float = 4.0,
) -> BackboneSpec:
    """A CSWin model table: stage ``i`` has ``embed_dim * 2**i`` channels and stripe width
    ``splits[i]``; the last stage is global (:func:`~attnblocks.zoo.cswin` with ``last=True``).

    ``pad`` goes to the stripe attentions: ``"mask"`` (exact attention over the real tokens)
    or ``"zeros"`` (CSWin's segmentation code).

    Example:
        >>> [s.attn for s in cswin_spec(64, (1, 1), (2, 4), splits=(1, 7)).stages]
        [Attention(partition=Stripe(1), heads=Split(2), pe=LePE()), \
Attention(partition=Global(), pe=LePE())]
    """
    n = len(depths)
    stages = tuple(
        Stage(embed_dim * 2**i, d, h, zoo.cswin(sw, last=i == n - 1, pad=pad), mlp_ratio)
        for i, (d, h, sw) in enumerate(zip(depths, heads, splits))
    )
    return BackboneSpec(
        stages,
        stem=ConvStem(7, 4, padding=2),
        downsample=ConvMerge(),
        drop_path_rate=drop_path_rate,
    )


@register_model
def cswin_tiny(**options) -> BackboneSpec:
    """CSWin-T: 64-128-256-512, depths 1-2-21-1, heads 2-4-8-16, stripes 1-2-7-7 (22.3M, 4.3G)."""
    options.setdefault("drop_path_rate", 0.2)
    return cswin_spec(64, (1, 2, 21, 1), (2, 4, 8, 16), **options)


@register_model
def cswin_small(**options) -> BackboneSpec:
    """CSWin-S: 64-128-256-512, depths 2-4-32-2, heads 2-4-8-16, stripes 1-2-7-7 (35M, 6.9G)."""
    options.setdefault("drop_path_rate", 0.4)
    return cswin_spec(64, (2, 4, 32, 2), (2, 4, 8, 16), **options)


@register_model
def cswin_base(**options) -> BackboneSpec:
    """CSWin-B: 96-192-384-768, depths 2-4-32-2, heads 4-8-16-32, stripes 1-2-7-7 (78M, 15.0G)."""
    options.setdefault("drop_path_rate", 0.5)
    return cswin_spec(96, (2, 4, 32, 2), (4, 8, 16, 32), **options)
