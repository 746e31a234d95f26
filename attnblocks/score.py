"""Score specs: how a query and a key become a logit.

``Attention(score=None)`` is the scaled dot product ``q . k * scale``. A score spec replaces it
with another similarity, here SwinV2's scaled cosine. The spec is separate from partitions and
positional encoders on purpose: the similarity is orthogonal to *which* tokens meet (the
partition) and to *where* they are (the encoders), so ``Cosine()`` composes with any partition
and any encoder, e.g. ``Attention(partition=Stripe(7), heads=Split(2), score=Cosine())``.

A score acts on the projected tokens before they are cut into windows (``prepare_qk`` below),
per head and per token, so no runner or backend needs to know about it: the fused
``scaled_dot_product_attention`` call runs unchanged with ``scale=1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._errors import AttnblocksError
from ._spec import Spec

__all__ = ["Cosine", "CosineModule", "Score", "ScoreModule"]


class Score(Spec):
    """Base class of score specs (the similarity that replaces ``q . k * scale``).

    Example:
        >>> isinstance(Cosine(), Score)
        True
    """

    def build(self, num_heads: int, device=None, dtype=None) -> ScoreModule:
        """Make the module that owns this score's parameters for ``num_heads`` heads."""
        raise NotImplementedError


class ScoreModule(nn.Module):
    """Contract of score modules: ``prepare_qk`` maps the projected q, k to the ones whose plain
    dot product (SDPA with ``scale=1``) is the score.

    Example:
        >>> isinstance(Cosine().build(2), ScoreModule)
        True
    """

    def prepare_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q, k: (..., h, d)`` -> the same shapes."""
        raise NotImplementedError


@dataclass(frozen=True, repr=False)
class Cosine(Score):
    """SwinV2's scaled cosine attention: ``cos(q, k) * exp(min(logit_scale, log(max_scale)))``.

    Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022. Each head
    has a learned ``logit_scale`` (stored as its log, shape ``(h, 1, 1)`` as the authors store
    it, initialised to ``log(init)``); there is no ``d ** -0.5``. It runs as
    ``normalize(q) * exp(logit_scale)`` against ``normalize(k)`` in the fused kernel.

    Args:
        init: the initial scale (SwinV2: 10).
        max_scale: the scale is clamped to at most this (SwinV2: 100).

    Example:
        >>> from attnblocks import Attention, Window
        >>> Attention(partition=Window(8), score=Cosine())
        Attention(partition=Window(8), score=Cosine())
        >>> Cosine().build(num_heads=3).logit_scale.shape
        torch.Size([3, 1, 1])
    """

    init: float = 10.0
    max_scale: float = 100.0

    def __post_init__(self) -> None:
        for name in ("init", "max_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Cosine: {name} must be a number, got {value!r}.")
            if not value > 0:
                raise AttnblocksError(f"Cosine: {name} must be > 0, got {name}={value}.")
            object.__setattr__(self, name, float(value))

    def build(self, num_heads, device=None, dtype=None):
        return CosineModule(self, num_heads, device=device, dtype=dtype)


class CosineModule(ScoreModule):
    """Parameters: ``logit_scale: (h, 1, 1)``, the log of each head's scale.

    Example:
        >>> score = Cosine().build(num_heads=2)
        >>> q, k = score.prepare_qk(torch.randn(5, 2, 4), torch.randn(5, 2, 4))  # (..., h, d)
        >>> [round(v, 4) for v in q.norm(dim=-1)[0].tolist()], round(k.norm(dim=-1).max().item(), 4)
        ([10.0, 10.0], 1.0)
    """

    def __init__(self, spec: Cosine, num_heads: int, device=None, dtype=None) -> None:
        super().__init__()
        self.spec = spec
        self.logit_scale = nn.Parameter(torch.empty(num_heads, 1, 1, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.logit_scale, math.log(self.spec.init))

    def prepare_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q, k: (..., h, d)``: unit-norm k, unit-norm q times each head's scale."""
        scale = torch.clamp(self.logit_scale, max=math.log(self.spec.max_scale)).exp()
        return F.normalize(q, dim=-1) * scale.view(-1, 1), F.normalize(k, dim=-1)
