"""Video Swin Transformer backbones (torchvision's ``swin3d_t``).

Liu et al., "Video Swin Transformer", CVPR 2022. A ``(2, 4, 4)`` Conv3d patch stem (the clip
zero-padded to a multiple of the patch), pre-norm blocks alternating 3-D window attention
without and with a shift of half the window (``(8, 7, 7)`` and ``(4, 3, 3)``), Swin's 2x2
patch merging in ``H, W`` only (time is kept) between stages, a final LayerNorm, the mean
over ``T, H, W`` and a linear head (400 Kinetics classes in torchvision's weights).

The attention is torchvision's ``ShiftedWindowAttention3d`` read as an attnblocks spec:
``Window(..., clamp="timm")`` (per axis, the window shrinks to a map not larger than it and
that axis is not shifted), ``pad="torchvision"`` (the map is zero-padded before the qkv
projection, then rolled) and ``RelPosBias(index="torchvision")`` (a shrunk window reads the
top-left block of the full window's index). torchvision's weights load through
:func:`~attnblocks.models.load_checkpoint` (layout ``"video_swin_torchvision"``).
"""

from __future__ import annotations

from ..attention import Attention
from ..partition import Window
from ..pe import RelPosBias
from .backbone import BackboneSpec, Stage
from .block import Alternate
from .layers import PatchMerging, VideoStem
from .registry import register_model

__all__ = ["video_swin_attention", "video_swin_spec", "video_swin_t"]


def video_swin_attention(
    window: tuple[int, int, int], shift: tuple[int, int, int] = (0, 0, 0)
) -> Attention:
    """torchvision's ``ShiftedWindowAttention3d`` as a spec.

    Shapes:
        the built layer maps ``(B, T, H, W, C) -> (B, T, H, W, C)``.

    Example:
        >>> video_swin_attention((8, 7, 7), (4, 3, 3))
        Attention(partition=Window((8, 7, 7), shift=(4, 3, 3), clamp='timm'), \
pe=RelPosBias(index='torchvision'), pad='torchvision')
    """
    return Attention(
        partition=Window(tuple(window), shift=tuple(shift) if any(shift) else 0, clamp="timm"),
        pe=RelPosBias(index="torchvision"),
        pad="torchvision",
    )


def video_swin_spec(
    embed_dim: int,
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    window: tuple[int, int, int] = (8, 7, 7),
    patch: tuple[int, int, int] = (2, 4, 4),
    drop_path_rate: float = 0.0,
    mlp_ratio: float = 4.0,
) -> BackboneSpec:
    """A Video Swin table: stage ``i`` has ``embed_dim * 2**i`` channels; block ``j`` of a
    stage is shifted by ``window // 2`` per axis when ``j`` is odd.

    Example:
        >>> spec = video_swin_spec(16, (2, 2), (1, 2), window=(2, 3, 3), patch=(1, 2, 2))
        >>> spec.stem, spec.stages[1].attn(1).partition
        (VideoStem(patch=(1, 2, 2)), Window((2, 3, 3), shift=(1, 1, 1), clamp='timm'))
    """
    window = tuple(window)
    attn = Alternate(
        video_swin_attention(window), video_swin_attention(window, tuple(w // 2 for w in window))
    )
    stages = tuple(
        Stage(embed_dim * 2**i, d, h, attn, mlp_ratio)
        for i, (d, h) in enumerate(zip(depths, heads))
    )
    return BackboneSpec(
        stages,
        stem=VideoStem(tuple(patch)),
        downsample=PatchMerging(),
        drop_path_rate=drop_path_rate,
    )


@register_model
def video_swin_t(**options) -> BackboneSpec:
    """Video Swin-T (torchvision ``swin3d_t``): 96-192-384-768, depths 2-2-6-2, heads
    3-6-12-24, window (8, 7, 7), patch (2, 4, 4), drop path 0.1; 28,158,070 parameters with
    ``create("video_swin_t")``'s 400-class head (Kinetics-400, its ``pretrained_cfg``)."""
    options.setdefault("drop_path_rate", 0.1)
    return video_swin_spec(96, (2, 2, 6, 2), (3, 6, 12, 24), **options)
