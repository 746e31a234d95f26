"""NAT-T and DiNAT-T: neighbourhood attention backbones.

Hassani et al., "Neighborhood Attention Transformer", CVPR 2023; Hassani and Shi, "Dilated
Neighborhood Attention Transformer", 2022. From the reference facts: dims 64-128-256-512,
depths 3-4-18-5, heads 2-4-8-16, kernel 7, MLP ratio 3; DiNAT's dilations per block
``[1, 8, 1]``, ``[1, 4, 1, 4]``, ``[1, 2] * 9``, ``[1] * 5``. The stem is two
``Conv2d(3x3, stride 2)`` (3 -> 32 -> 64, with bias, nothing between) and a LayerNorm; the
downsampling a ``Conv2d(3x3, stride 2, bias=False)`` and a LayerNorm.

Each attention has the authors' learned relative position bias (``rpb``, ``heads x 13 x 13``
per block, ``RelPosBias()`` on the neighbourhood: 41,574 parameters in all), so NAT-T and
DiNAT-T count 27,901,582 parameters (published "28M", no exact count in the facts);
``rpb=False`` drops it (27,860,008).
"""

from __future__ import annotations

import torch  # noqa: F401  (the examples use it)

from .. import zoo
from .backbone import BackboneSpec, Stage
from .block import Alternate
from .layers import ConvMerge
from .registry import register_model
from .stems import ConvBNStem

__all__ = ["dinat_tiny", "nat_spec", "nat_tiny"]

_DINAT_T = ((1, 8), (1, 4), (1, 2), (1,))


def nat_spec(
    dims: tuple[int, ...],
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    kernel: int = 7,
    dilations: tuple[tuple[int, ...], ...] | None = None,
    mlp_ratio: float = 3.0,
    drop_path_rate: float = 0.0,
    rpb: bool = True,
) -> BackboneSpec:
    """A NAT table; with ``dilations``, stage ``i``'s block ``j`` uses ``dilations[i][j % n]``;
    ``rpb``: NAT's relative position bias in every attention.

    Example:
        >>> spec = nat_spec((16, 32), (2, 1), (2, 4), kernel=3, dilations=((1, 2), (1,)))
        >>> spec.stages[0].attn(1)
        Attention(partition=Neighborhood(3, dilation=2), pe=RelPosBias())
        >>> spec.build(num_classes=5)(torch.randn(1, 3, 36, 52)).shape
        torch.Size([1, 5])
    """

    def attn(i: int):
        if dilations is None or all(d == 1 for d in dilations[i]):
            return zoo.nat(kernel, rpb=rpb)
        return Alternate(*(zoo.dinat(kernel, d, rpb=rpb) for d in dilations[i]))

    stages = tuple(
        Stage(c, d, h, attn(i), mlp_ratio) for i, (c, d, h) in enumerate(zip(dims, depths, heads))
    )
    half = dims[0] // 2
    return BackboneSpec(
        stages,
        stem=ConvBNStem(((half, 3, 2), (dims[0], 3, 2)), act="none", bn=False),
        downsample=ConvMerge(bias=False),
        drop_path_rate=drop_path_rate,
    )


@register_model
def nat_tiny(**options) -> BackboneSpec:
    """NAT-T: 64-128-256-512, depths 3-4-18-5, heads 2-4-8-16, kernel 7 (28M, 4.3G published)."""
    options.setdefault("drop_path_rate", 0.2)
    return nat_spec((64, 128, 256, 512), (3, 4, 18, 5), (2, 4, 8, 16), **options)


@register_model
def dinat_tiny(**options) -> BackboneSpec:
    """DiNAT-T: NAT-T with dilations 1-8-1, 1-4-1-4, (1-2) x 9, 1 x 5 per block (28M, 4.3G)."""
    options.setdefault("drop_path_rate", 0.2)
    return nat_spec(
        (64, 128, 256, 512), (3, 4, 18, 5), (2, 4, 8, 16), dilations=_DINAT_T, **options
    )
