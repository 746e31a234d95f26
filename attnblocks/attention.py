"""The Attention spec: the composition root of partitions, head splits and encoders."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import AttnblocksError
from ._spec import Spec, positive_int
from .heads import Split
from .lowering import BACKENDS, PAD_MODES, GroupPlan, resolve_groups
from .partition import Partition
from .pe import PositionalEncoder
from .projection import QKV_BIAS
from .score import Score

if TYPE_CHECKING:
    from .nn import AttentionLayer

__all__ = ["Attention"]


@dataclass(frozen=True, repr=False)
class Attention(Spec):
    """A multi-head attention, described: what attends to what, per head group, and how.

    The spec holds no tensors. ``build(dim, num_heads)`` makes the module for one stage
    (dimensions may also be fixed in the spec, then ``build()`` takes none), the same way a
    timm block takes ``dim`` and ``num_heads``:

    >>> from attnblocks import LePE, Split, Stripe
    >>> spec = Attention(partition=Stripe(7), heads=Split(2), pe=LePE())  # CSWin
    >>> spec
    Attention(partition=Stripe(7), heads=Split(2), pe=LePE())
    >>> layer = spec.build(dim=64, num_heads=2)
    >>> import torch
    >>> layer(torch.randn(1, 14, 14, 64)).shape
    torch.Size([1, 14, 14, 64])

    Args:
        partition: which tokens attend to which (default: :class:`Global`). A generic
            partition (``Stripe(7)``) needs ``heads=Split(n)`` to pick each group's form.
        heads: ``Split(n)`` or ``Split(p0, p1, ...)``; ``None`` is one group of all heads.
        pe: one positional encoder, or a tuple of them.
        dim: the channel count ``C`` (or give it at build).
        num_heads: the number of heads ``h`` (or give it at build).
        qkv_bias: the bias of the fused ``[q | k | v]`` projection: ``True``, ``False``, or
            ``"qv"`` (queries and values only, SwinV2's ``q_bias`` / ``v_bias``).
        scale: the logit scale; ``None`` is ``head_dim ** -0.5``.
        score: the similarity of a query and a key; ``None`` is the scaled dot product,
            ``Cosine()`` SwinV2's scaled cosine (which learns its own scale per head).
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
        pad: what happens where the map does not divide into windows: ``"mask"`` (pad and
            mask the padded keys: the exact attention over the real tokens), ``"zeros"`` (pad
            q, k, v with zeros that stay in the softmax, as CSWin's segmentation code does),
            ``"timm"`` (as if the input were zero-padded before the projection, unmasked,
            with Swin's shift bands on the padded canvas: timm 1.0's ``SwinTransformerBlock``),
            ``"torchvision"`` (the same, but the padded map is what is rolled:
            torchvision's ``shifted_window_attention``), or ``"error"``.
        backend: how the groups run: ``"eager"`` (batched windows, fused SDPA), ``"flex"``
            (FlexAttention with a block mask over window-major tokens; no backward on CPU),
            ``"dense"`` (the oracle: all ``N`` tokens with the dense mask; ``pad="mask"`` or
            ``"error"``), or ``"auto"`` (chosen per call, see :mod:`attnblocks.backends`).
    """

    partition: Partition | None = None
    heads: Split | None = None
    pe: PositionalEncoder | tuple[PositionalEncoder, ...] | None = None
    dim: int | None = None
    num_heads: int | None = None
    qkv_bias: bool | str = True
    scale: float | None = None
    score: Score | None = None
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    pad: str = "mask"
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.partition is not None and not isinstance(self.partition, Partition):
            raise TypeError(
                "Attention: partition must be a Partition such as Window(7), got "
                f"{self.partition!r}."
            )
        if self.heads is not None and not isinstance(self.heads, Split):
            raise TypeError(
                f"Attention: heads must be a Split such as Split(2), got {self.heads!r}."
            )
        explicit = self.heads is not None and self.heads.partitions is not None
        if explicit and self.partition is not None:
            raise AttnblocksError(
                f"Attention: {self.heads!r} already gives every head group its partition; "
                f"drop partition={self.partition!r}."
            )
        if (
            self.partition is not None
            and self.partition.is_generic()
            and (self.heads is None or self.heads.count == 1)
        ):
            raise AttnblocksError(
                f"Attention: {self.partition!r} means one form per head group, but there is no "
                f"head split: add heads=Split(2) or give the partition its form explicitly."
            )
        pes = self.pe if isinstance(self.pe, tuple) else (() if self.pe is None else (self.pe,))
        for p in pes:
            if not isinstance(p, PositionalEncoder):
                raise TypeError(f"Attention: pe must be positional encoders, got {p!r}.")
        if not (self.qkv_bias is True or self.qkv_bias is False or self.qkv_bias == "qv"):
            raise AttnblocksError(
                f"Attention: qkv_bias must be one of {QKV_BIAS}, got {self.qkv_bias!r}."
            )
        if self.score is not None and not isinstance(self.score, Score):
            raise TypeError(
                f"Attention: score must be a Score such as Cosine(), got {self.score!r}."
            )
        if self.score is not None and self.scale is not None:
            raise AttnblocksError(
                f"Attention: {self.score!r} sets its own logit scale; drop scale={self.scale!r}."
            )
        if self.pad not in PAD_MODES:
            raise AttnblocksError(f"Attention: pad must be one of {PAD_MODES}, got {self.pad!r}.")
        if self.backend not in BACKENDS:
            raise AttnblocksError(
                f"Attention: backend must be one of {BACKENDS}, got {self.backend!r}."
            )
        if self.backend == "dense" and self.pad not in ("mask", "error"):
            raise AttnblocksError(
                f"Attention: backend='dense' computes the attention over the real tokens only, "
                f"so it needs pad='mask' or 'error', got pad={self.pad!r}."
            )
        if self.scale is not None and not _real(self.scale):
            raise TypeError(f"Attention: scale must be a number or None, got {self.scale!r}.")
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise AttnblocksError(
                f"Attention: scale must be a finite positive number, got {self.scale!r}."
            )
        for name in ("attn_drop", "proj_drop"):
            p = getattr(self, name)
            if not _real(p):
                raise TypeError(f"Attention: {name} must be a number in [0, 1), got {p!r}.")
            if not 0.0 <= p < 1.0:
                raise AttnblocksError(f"Attention: {name} must be in [0, 1), got {p}.")
        if self.dim is not None or self.num_heads is not None:
            self._check_dims(self.dim, self.num_heads)

    @property
    def encoders(self) -> tuple[PositionalEncoder, ...]:
        """The positional encoders as a tuple (empty when there are none)."""
        if self.pe is None:
            return ()
        return self.pe if isinstance(self.pe, tuple) else (self.pe,)

    def _check_dims(self, dim: int | None, num_heads: int | None) -> tuple[int, int]:
        if dim is None or num_heads is None:
            raise AttnblocksError(
                f"{self!r}: give both dim and num_heads (got dim={dim}, num_heads={num_heads})."
            )
        positive_int(repr(self), "dim", dim)
        positive_int(repr(self), "num_heads", num_heads)
        if dim % num_heads:
            raise AttnblocksError(f"{self!r}: dim={dim} is not divisible by num_heads={num_heads}.")
        if self.heads is not None:
            self.heads.check(num_heads)
        return dim, num_heads

    def groups(self, dim: int | None = None, num_heads: int | None = None) -> tuple[GroupPlan, ...]:
        """The head groups with their concrete partitions, heads and channels."""
        dim = self.dim if dim is None else dim
        num_heads = self.num_heads if num_heads is None else num_heads
        dim, num_heads = self._check_dims(dim, num_heads)
        return resolve_groups(self.partition, self.heads, num_heads, dim)

    def build(
        self, dim: int | None = None, num_heads: int | None = None, *, device=None, dtype=None
    ) -> AttentionLayer:
        """Make the module: ``x: (B, H, W, C) -> (B, H, W, C)`` with ``C = dim``."""
        from .nn import AttentionLayer

        if dim is not None and self.dim is not None and dim != self.dim:
            raise AttnblocksError(f"{self!r}: build(dim={dim}) contradicts the spec's dim.")
        if num_heads is not None and self.num_heads is not None and num_heads != self.num_heads:
            raise AttnblocksError(
                f"{self!r}: build(num_heads={num_heads}) contradicts the spec's num_heads."
            )
        dim = self.dim if dim is None else dim
        num_heads = self.num_heads if num_heads is None else num_heads
        dim, num_heads = self._check_dims(dim, num_heads)
        return AttentionLayer(self, dim, num_heads, device=device, dtype=dtype)


def _real(value: object) -> bool:
    """A real number (int or float, not bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
