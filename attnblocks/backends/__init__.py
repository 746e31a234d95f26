"""Backends execute lowered plans: ``eager`` (einops + fused SDPA), ``flex`` (FlexAttention
with a block mask) and ``dense`` (the oracle). :mod:`.registry` says which runs a head group.
"""

from .dense import dense_attention, dense_lowering
from .eager import attend, rect_attention, window_kernel
from .flex import flex_lowering, flex_window_kernel
from .flex_sliding import flex_downsample_lowering, flex_sliding_lowering
from .registry import choose_backend, lowering_for, register_lowering

__all__ = [
    "attend",
    "choose_backend",
    "dense_attention",
    "dense_lowering",
    "flex_downsample_lowering",
    "flex_lowering",
    "flex_sliding_lowering",
    "flex_window_kernel",
    "lowering_for",
    "rect_attention",
    "register_lowering",
    "window_kernel",
]
