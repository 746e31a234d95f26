"""The dense backend: attention over all tokens with a boolean mask. The oracle of the tests."""

from __future__ import annotations

import torch

__all__ = ["dense_attention"]


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    scale: float,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain masked softmax attention over all ``N`` tokens.

    Shapes: ``q, k, v: (B, h, N, d)``; ``allowed: (N, N)`` or ``(h, N, N)`` bool (True where
    query ``i`` may attend to key ``j``); ``bias`` additive, broadcastable to ``(B, h, N, N)``.
    Rows with no allowed key give zeros. Returns ``(B, h, N, d)``.
    """
    logits = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        logits = logits + bias
    logits = logits.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    return weights @ v
