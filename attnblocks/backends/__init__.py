"""Backends execute lowered plans: ``eager`` (einops + fused SDPA) and ``dense`` (the oracle)."""

from .dense import dense_attention
from .eager import attend, rect_attention

__all__ = ["attend", "dense_attention", "rect_attention"]
