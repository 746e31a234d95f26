"""PVTv2-b2: the Pyramid Vision Transformer v2 backbone with spatial-reduction attention.

Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer", CVMJ 2022.
Overlapping patch embeddings (a 7x7 stride-4 conv stem, then a 3x3 stride-2 conv at the start
of every later stage, each with LayerNorm eps 1e-5), pre-norm blocks (LayerNorm eps 1e-6) of
:func:`~attnblocks.zoo.pvtv2` attention and a depthwise-conv MLP, and a LayerNorm (eps 1e-6) at
the end of every stage. Load timm's ``pvt_v2_b2`` with :func:`load_timm_pvtv2_checkpoint`.
"""

from __future__ import annotations

from .. import zoo
from ..convert.checkpoints import convert_timm_pvtv2, load_timm_pvtv2_checkpoint
from .backbone import BackboneSpec, Stage
from .block import PreNorm
from .layers import ConvMerge, ConvStem
from .registry import register_model

__all__ = [
    "convert_timm_pvtv2",
    "load_timm_pvtv2_checkpoint",
    "pvtv2_b0",
    "pvtv2_b1",
    "pvtv2_b2",
    "pvtv2_b3",
    "pvtv2_b4",
    "pvtv2_b5",
    "pvtv2_spec",
]


def pvtv2_spec(
    dims: tuple[int, ...],
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    srs: tuple[int, ...] = (8, 4, 2, 1),
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4),
    drop_path_rate: float = 0.0,
) -> BackboneSpec:
    """A PVTv2 model table: stage ``i`` has ``dims[i]`` channels and reduction ratio ``srs[i]``.

    Example:
        >>> spec = pvtv2_spec((32, 64), (1, 1), (1, 2), srs=(2, 1), mlp_ratios=(4, 4))
        >>> [s.attn for s in spec.stages]
        [Attention(partition=Downsample(2)), Attention(partition=Downsample(1))]
        >>> import torch
        >>> spec.build(num_classes=5)(torch.randn(1, 3, 40, 56)).shape
        torch.Size([1, 5])
    """
    stages = tuple(
        Stage(c, d, h, zoo.pvtv2(sr), r)
        for c, d, h, sr, r in zip(dims, depths, heads, srs, mlp_ratios)
    )
    return BackboneSpec(
        stages,
        stem=ConvStem(7, 4, padding=3),
        downsample=ConvMerge(),
        block=PreNorm(eps=1e-6, mlp="dwconv"),
        drop_path_rate=drop_path_rate,
        norm_eps=1e-6,
        stage_norm=True,
    )


_B = (64, 128, 320, 512)
_HEADS = (1, 2, 5, 8)


@register_model
def pvtv2_b0(**options) -> BackboneSpec:
    """PVTv2-b0: 32-64-160-256, depths 2-2-2-2, heads 1-2-5-8 (3.7M, 0.6G)."""
    options.setdefault("drop_path_rate", 0.1)
    return pvtv2_spec((32, 64, 160, 256), (2, 2, 2, 2), _HEADS, **options)


@register_model
def pvtv2_b1(**options) -> BackboneSpec:
    """PVTv2-b1: 64-128-320-512, depths 2-2-2-2 (14.0M, 2.1G)."""
    options.setdefault("drop_path_rate", 0.1)
    return pvtv2_spec(_B, (2, 2, 2, 2), _HEADS, **options)


@register_model
def pvtv2_b2(**options) -> BackboneSpec:
    """PVTv2-b2: 64-128-320-512, depths 3-4-6-3, heads 1-2-5-8, sr 8-4-2-1 (25.4M, 4.0G)."""
    options.setdefault("drop_path_rate", 0.1)
    return pvtv2_spec(_B, (3, 4, 6, 3), _HEADS, **options)


@register_model
def pvtv2_b3(**options) -> BackboneSpec:
    """PVTv2-b3: 64-128-320-512, depths 3-4-18-3 (45.2M, 6.9G)."""
    options.setdefault("drop_path_rate", 0.3)
    return pvtv2_spec(_B, (3, 4, 18, 3), _HEADS, **options)


@register_model
def pvtv2_b4(**options) -> BackboneSpec:
    """PVTv2-b4: 64-128-320-512, depths 3-8-27-3 (62.6M, 10.1G)."""
    options.setdefault("drop_path_rate", 0.3)
    return pvtv2_spec(_B, (3, 8, 27, 3), _HEADS, **options)


@register_model
def pvtv2_b5(**options) -> BackboneSpec:
    """PVTv2-b5: 64-128-320-512, depths 3-6-40-3, MLP ratio 4 in every stage (82.0M, 11.8G)."""
    options.setdefault("drop_path_rate", 0.3)
    return pvtv2_spec(_B, (3, 6, 40, 3), _HEADS, mlp_ratios=(4, 4, 4, 4), **options)
