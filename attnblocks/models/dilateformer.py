"""DilateFormer-T: multi-scale dilated attention in stages 1-2, global attention in stages 3-4.

Jiao et al., "DilateFormer: Multi-Scale Dilated Transformer for Visual Recognition", IEEE TMM
2023. From the reference facts: dims 72-144-288-576, depths 2-2-6-2, heads 3-6-12-24,
:func:`~attnblocks.zoo.dilateformer` (kernel 3, dilations 1-2-3) in stages 1-2, plain global
attention in stages 3-4, a CPE before every block, LayerNorm eps 1e-6, MLP ratio 4.

From the reference facts (Whole models), the layers around the attention: the stem, four
bias-free 3x3 convs 3 -> 16 (stride 1) -> 32 (stride 2) -> 64 (stride 1) -> ``dims[0]``
(stride 2), BatchNorm2d + exact GELU after each of the first three (the 16-32-64 widths are
fixed for every size); the merge at the end of stages 1-3, ``Conv2d(3x3, stride 2, bias) ->
BatchNorm2d`` (:class:`BNMerge` with ``bias=True``); a final LayerNorm (eps 1e-6) and the
linear head. DilateFormer-T then counts the authors' 17,238,744 parameters and 3.16G MACs.
"""

from __future__ import annotations

import torch  # noqa: F401  (the examples use it)

from .. import zoo
from ..attention import Attention
from ..partition import Global
from .backbone import BackboneSpec, Stage
from .block import PreNorm
from .registry import register_model
from .stems import BNMerge, ConvBNStem

__all__ = ["dilateformer_spec", "dilateformer_tiny"]


def dilateformer_spec(
    dims: tuple[int, ...],
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    local_stages: int = 2,
    kernel: int = 3,
    dilations: tuple[int, ...] = (1, 2, 3),
    drop_path_rate: float = 0.0,
    stem_widths: tuple[int, int, int] = (16, 32, 64),
) -> BackboneSpec:
    """A DilateFormer table: MSDA in the first ``local_stages`` stages, global attention after.

    ``stem_widths``: the hidden widths of the four-conv stem (the authors' fixed 16-32-64).

    Example:
        >>> spec = dilateformer_spec((24, 48), (1, 1), (3, 6), local_stages=1)
        >>> [s.attn for s in spec.stages]
        [Attention(partition=Dilated(3, dilation=(1, 2, 3)), heads=Split(3)), \
Attention(partition=Global())]
        >>> spec.build(num_classes=5)(torch.randn(1, 3, 36, 52)).shape
        torch.Size([1, 5])
    """
    msda, glob = zoo.dilateformer(kernel, dilations), Attention(partition=Global())
    stages = tuple(
        Stage(c, d, h, msda if i < local_stages else glob)
        for i, (c, d, h) in enumerate(zip(dims, depths, heads))
    )
    a, b, c = stem_widths
    return BackboneSpec(
        stages,
        stem=ConvBNStem(
            ((a, 3, 1), (b, 3, 2), (c, 3, 1), (dims[0], 3, 2)), norm="none", bn_last=False
        ),
        downsample=BNMerge(bias=True),
        block=PreNorm(eps=1e-6, cpe=True),
        drop_path_rate=drop_path_rate,
        norm_eps=1e-6,
    )


@register_model
def dilateformer_tiny(**options) -> BackboneSpec:
    """DilateFormer-T: 72-144-288-576, depths 2-2-6-2, heads 3-6-12-24 (17.2M, 3.2G)."""
    options.setdefault("drop_path_rate", 0.1)
    return dilateformer_spec((72, 144, 288, 576), (2, 2, 6, 2), (3, 6, 12, 24), **options)
