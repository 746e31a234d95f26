"""Transformer blocks and the per-block choice of attention spec.

A stage's attention is given as an :class:`~attnblocks.Attention` (the same in every block) or
as a factory ``f(i) -> Attention`` for block ``i`` of the stage; :class:`Alternate` is the
factory for Swin's W-MSA / SW-MSA pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._errors import AttnblocksError
from .._spec import Spec
from ..attention import Attention
from .layers import DropPath, DWConvMlp, Mlp

__all__ = ["Alternate", "AttnFactory", "Block", "PreNorm", "attention_for"]

AttnFactory = Attention | Callable[[int], Attention]


@dataclass(frozen=True, repr=False)
class Alternate(Spec):
    """Block ``i`` of a stage uses ``specs[i % len(specs)]`` (Swin: unshifted, shifted, ...).

    Example:
        >>> from attnblocks import zoo
        >>> f = Alternate(zoo.swin(7), zoo.swin(7, shift=3))
        >>> f(1)
        Attention(partition=Window(7, shift=3, clamp='swin'), pe=RelPosBias())
    """

    specs: tuple[Attention, ...]

    def __init__(self, *specs: Attention) -> None:
        if not specs:
            raise AttnblocksError("Alternate: give at least one Attention spec.")
        for s in specs:
            if not isinstance(s, Attention):
                raise TypeError(f"Alternate: expected Attention specs, got {s!r}.")
        object.__setattr__(self, "specs", tuple(specs))

    def __repr__(self) -> str:
        return f"Alternate({', '.join(repr(s) for s in self.specs)})"

    def __call__(self, index: int) -> Attention:
        return self.specs[index % len(self.specs)]


def attention_for(attn: AttnFactory, index: int) -> Attention:
    """The attention spec of block ``index``: ``attn`` itself, or ``attn(index)``.

    Example:
        >>> from attnblocks import zoo
        >>> attention_for(zoo.cswin(7, last=True), 3)
        Attention(partition=Global(), pe=LePE())
    """
    spec = attn if isinstance(attn, Attention) else attn(index)
    if not isinstance(spec, Attention):
        raise TypeError(
            f"A stage's attention must be an Attention or a function of the block index that "
            f"returns one; {attn!r} gave {spec!r} for block {index}."
        )
    return spec


_MLPS = {"plain": Mlp, "dwconv": DWConvMlp}


@dataclass(frozen=True, repr=False)
class PreNorm(Spec):
    """The pre-norm residual block of Swin and CSWin (and its variants).

    ``x = x + drop_path(attn(norm1(x)))``, then ``x = x + drop_path(mlp(norm2(x)))``, with
    LayerNorm(``eps``) and a GELU MLP of ``mlp_ratio * C`` hidden units.

    Args:
        eps: the LayerNorms' eps (DilateFormer, PVTv2: 1e-6).
        mlp: ``"plain"`` (:class:`~attnblocks.models.Mlp`) or ``"dwconv"``
            (:class:`~attnblocks.models.DWConvMlp`, PVTv2's) or ``"dwconv_res"``
            (:class:`~attnblocks.models.ResDWConvMlp`, Shunted's).
        cpe: a conditional positional encoding first, ``x = x + DWConv3x3(x)`` (``cpe``,
            depthwise with bias; DilateFormer's).
        res_post: SwinV2's residual post-norm instead: ``x = x + drop_path(norm1(attn(x)))``,
            ``x = x + drop_path(norm2(mlp(x)))``.

    Example:
        >>> PreNorm()
        PreNorm()
        >>> PreNorm(eps=1e-6, cpe=True)
        PreNorm(eps=1e-06, cpe=True)
    """

    eps: float = 1e-5
    mlp: str = "plain"
    cpe: bool = False
    res_post: bool = False

    def __post_init__(self) -> None:
        if self.mlp not in _MLPS:
            raise AttnblocksError(f"PreNorm: mlp must be one of {tuple(_MLPS)}, got {self.mlp!r}.")
        if self.eps <= 0:
            raise AttnblocksError(f"PreNorm: eps must be positive, got {self.eps}.")

    def build(
        self,
        dim: int,
        num_heads: int,
        attn: Attention,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        drop: float = 0.0,
        *,
        device=None,
        dtype=None,
    ) -> Block:
        return Block(
            self, dim, num_heads, attn, mlp_ratio, drop_path, drop, device=device, dtype=dtype
        )


class Block(nn.Module):
    """A built :class:`PreNorm` block: (``cpe``), ``norm1``, ``attn``, ``norm2``, ``mlp.*``.

    Shapes:
        ``x: (B, H, W, C) -> (B, H, W, C)``, or a map of another rank, ``(B, T, H, W, C)``,
        when the attention takes one (``cpe`` needs ``(B, H, W, C)``).

    Example:
        >>> from attnblocks import zoo
        >>> block = PreNorm().build(64, 2, zoo.cswin(2))
        >>> block(torch.randn(1, 6, 10, 64)).shape
        torch.Size([1, 6, 10, 64])
    """

    def __init__(
        self,
        spec: PreNorm,
        dim: int,
        num_heads: int,
        attn: Attention,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        drop: float = 0.0,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.spec = spec
        if spec.cpe:
            self.cpe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)
        self.norm1 = nn.LayerNorm(dim, eps=spec.eps, **dd)
        self.attn = attn.build(dim, num_heads, **dd)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=spec.eps, **dd)
        self.mlp = _MLPS[spec.mlp](dim, int(dim * mlp_ratio), drop, **dd)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.cpe:
            x = x + self.cpe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        if self.spec.res_post:
            x = x + self.drop_path1(self.norm1(self.attn(x)))
            return x + self.drop_path2(self.norm2(self.mlp(x)))
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))
