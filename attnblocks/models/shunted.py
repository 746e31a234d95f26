"""Shunted-T: shunted self-attention (multi-scale token aggregation) backbone.

Ren et al., "Shunted Self-Attention via Multi-Scale Token Aggregation", CVPR 2022. From the
reference facts: dims 64-128-256-512, depths 1-2-4-1, heads 2-4-8-16,
:func:`~attnblocks.zoo.shunted` with ``sr`` 8-4-2-1, MLP ratios 8-8-4-4.

**Inferred** (not in the facts; the parameter count then equals the authors' 11,553,576
exactly): the stem ``Conv2d(3, 64, 7, stride 2, padding 3, bias=False) -> BatchNorm2d ->
ReLU -> Conv2d(64, 64, 2, stride 2) -> LayerNorm``; PVTv2's overlapping downsampling
(``Conv2d 3x3 stride 2 padding 1 -> LayerNorm``); the MLP ``fc2(GELU(h + dwconv(h)))``,
``h = fc1(x)`` (:class:`~attnblocks.models.stems.ResDWConvMlp`); block LayerNorms eps 1e-6 and
a LayerNorm (eps 1e-6) at the end of every stage.
"""

from __future__ import annotations

import torch  # noqa: F401  (the examples use it)

from .. import zoo
from .backbone import BackboneSpec, Stage
from .block import PreNorm
from .layers import ConvMerge
from .registry import register_model
from .stems import ConvBNStem

__all__ = ["shunted_base", "shunted_small", "shunted_spec", "shunted_tiny"]


def shunted_spec(
    dims: tuple[int, ...],
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    srs: tuple[int, ...] = (8, 4, 2, 1),
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4),
    drop_path_rate: float = 0.0,
    num_conv: int = 0,
) -> BackboneSpec:
    """A Shunted table: stage ``i`` has ``dims[i]`` channels and reduction ratio ``srs[i]``;
    ``num_conv`` extra ``Conv(3x3, no bias) -> BatchNorm -> ReLU`` layers in the stem (the
    reference facts: Shunted-S 1, Shunted-B 2).

    Example:
        >>> spec = shunted_spec((32, 64), (1, 1), (2, 4), srs=(2, 1), mlp_ratios=(4, 4))
        >>> spec.stages[0].attn
        Attention(partition=Downsample((2, 1), act='gelu', conv1x1=True), heads=Split(2), \
pe=LocalConv())
        >>> spec.build(num_classes=5)(torch.randn(1, 3, 36, 52)).shape
        torch.Size([1, 5])
    """
    stages = tuple(
        Stage(c, d, h, zoo.shunted(sr), r)
        for c, d, h, sr, r in zip(dims, depths, heads, srs, mlp_ratios)
    )
    return BackboneSpec(
        stages,
        stem=ConvBNStem(
            ((dims[0], 7, 2),) + ((dims[0], 3, 1),) * num_conv, proj=(2, 2), act="relu"
        ),
        downsample=ConvMerge(),
        block=PreNorm(eps=1e-6, mlp="dwconv_res"),
        drop_path_rate=drop_path_rate,
        norm_eps=1e-6,
        stage_norm=True,
    )


@register_model
def shunted_tiny(**options) -> BackboneSpec:
    """Shunted-T: 64-128-256-512, depths 1-2-4-1, heads 2-4-8-16, sr 8-4-2-1 (11.6M, 2.2G)."""
    options.setdefault("drop_path_rate", 0.1)
    return shunted_spec((64, 128, 256, 512), (1, 2, 4, 1), (2, 4, 8, 16), **options)


@register_model
def shunted_small(**options) -> BackboneSpec:
    """Shunted-S: Shunted-T with depths 2-4-12-1 and one extra stem conv (22.4M, 4.9G)."""
    options.setdefault("drop_path_rate", 0.2)
    return shunted_spec((64, 128, 256, 512), (2, 4, 12, 1), (2, 4, 8, 16), num_conv=1, **options)


@register_model
def shunted_base(**options) -> BackboneSpec:
    """Shunted-B: Shunted-T with depths 3-4-24-2 and two extra stem convs (39.6M, 8.1G)."""
    options.setdefault("drop_path_rate", 0.3)
    return shunted_spec((64, 128, 256, 512), (3, 4, 24, 2), (2, 4, 8, 16), num_conv=2, **options)
