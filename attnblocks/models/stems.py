"""Convolutional stems and downsamplers with BatchNorm (DilateFormer, Shunted), and Shunted's MLP.

Like :mod:`attnblocks.models.layers`, the stems and downsamplers are frozen specs whose
``build`` makes the module; every module here takes and returns channels-last maps, except the
stems, which take images ``(B, C_in, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .._errors import AttnblocksError
from .._spec import Spec, pair, positive_int
from . import block as _block
from .layers import _check_image

__all__ = ["BNMerge", "ConvBNStem", "ResDWConvMlp"]

_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU, "none": nn.Identity}


@dataclass(frozen=True, repr=False)
class ConvBNStem(Spec):
    """A stack of ``Conv2d -> BatchNorm2d -> act`` layers, an optional projection, a norm.

    Args:
        convs: ``(out_channels, kernel, stride)`` of each conv layer (padding ``kernel // 2``);
            without ``proj`` the last one's ``out_channels`` is replaced by the stage width.
        proj: ``(kernel, stride)`` of a final conv (with bias, no padding) to the stage width;
            an int ``n`` is ``(n, n)`` (patches of ``n x n``).
        norm: ``"ln"`` (a LayerNorm at the end) or ``"none"``.
        act: ``"gelu"``, ``"relu"`` or ``"none"``, between layers (not after the last conv
            layer when there is no ``proj``).
        bn: a BatchNorm2d after every conv layer (then the convs have no bias).
        bn_last: without ``proj``, whether the last conv layer has its BatchNorm too
            (DilateFormer's stem: ``False``, a bare bias-free conv at the end).

    Example:
        >>> stem = ConvBNStem(((64, 7, 2),), proj=(2, 2), act="relu")  # Shunted-T
        >>> stem.stride
        4
        >>> stem.build(3, 64)(torch.randn(1, 3, 32, 44)).shape
        torch.Size([1, 8, 11, 64])
        >>> df = ConvBNStem(((16, 3, 1), (32, 3, 2), (64, 3, 1), (72, 3, 2)), norm="none",
        ...                 bn_last=False)  # DilateFormer-T
        >>> sum(p.numel() for p in df.build(3, 72).parameters())
        65168
    """

    convs: tuple[tuple[int, int, int], ...]
    proj: tuple[int, int] | None = None
    norm: str = "ln"
    act: str = "gelu"
    bn: bool = True
    eps: float = 1e-5
    bn_last: bool = True
    _positional: ClassVar[tuple[str, ...]] = ("convs",)
    #: the spatial rank of the input (images: 2)
    ndim: ClassVar[int] = 2

    def __post_init__(self) -> None:
        convs = tuple(tuple(c) for c in self.convs)
        if not convs or any(len(c) != 3 for c in convs):
            raise AttnblocksError(
                f"ConvBNStem: convs must be (out_channels, kernel, stride) triples, got {convs!r}."
            )
        for out, k, s in convs:
            positive_int("ConvBNStem", "out_channels", out)
            positive_int("ConvBNStem", "kernel", k)
            positive_int("ConvBNStem", "stride", s)
        object.__setattr__(self, "convs", convs)
        if self.proj is not None:
            object.__setattr__(self, "proj", pair("ConvBNStem", "proj", self.proj))
        if self.norm not in ("ln", "none"):
            raise AttnblocksError(f"ConvBNStem: norm must be 'ln' or 'none', got {self.norm!r}.")
        if self.act not in _ACTS:
            raise AttnblocksError(
                f"ConvBNStem: act must be one of {tuple(_ACTS)}, got {self.act!r}."
            )

    @property
    def stride(self) -> int:
        s = 1
        for _, _, st in self.convs:
            s *= st
        return s * (self.proj[1] if self.proj else 1)

    def build(self, in_chans: int, dim: int, *, device=None, dtype=None) -> ConvBNStemLayer:
        return ConvBNStemLayer(self, in_chans, dim, device=device, dtype=dtype)


class ConvBNStemLayer(nn.Module):
    """The module of :class:`ConvBNStem`: ``convs`` (Sequential), (``proj``), (``norm``).

    Shapes:
        ``x: (B, in_chans, H, W) -> (B, H', W', dim)``
    """

    def __init__(self, spec: ConvBNStem, in_chans: int, dim: int, *, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.spec = spec
        self.in_chans = in_chans
        layers, c = [], in_chans
        for i, (out, k, s) in enumerate(spec.convs):
            last = i == len(spec.convs) - 1 and spec.proj is None
            out = dim if last else out
            layers.append(nn.Conv2d(c, out, k, s, k // 2, bias=not spec.bn, **dd))
            if spec.bn and not (last and not spec.bn_last):
                layers.append(nn.BatchNorm2d(out, eps=spec.eps, **dd))
            if not last:
                layers.append(_ACTS[spec.act]())
            c = out
        self.convs = nn.Sequential(*layers)
        if spec.proj is not None:
            self.proj = nn.Conv2d(c, dim, spec.proj[0], spec.proj[1], **dd)
        if spec.norm == "ln":
            self.norm = nn.LayerNorm(dim, eps=spec.eps, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(self.spec, x, self.in_chans)
        x = self.convs(x)
        if hasattr(self, "proj"):
            x = self.proj(x)
        x = x.permute(0, 2, 3, 1)
        return self.norm(x) if hasattr(self, "norm") else x


@dataclass(frozen=True, repr=False)
class BNMerge(Spec):
    """Downsampling by ``Conv2d(3x3, stride 2, padding 1) -> BatchNorm2d``.

    Args:
        eps: the BatchNorm's eps.
        bias: whether the conv has a bias (DilateFormer's ``conv3_2`` merge: ``True``).

    Example:
        >>> BNMerge(bias=True)
        BNMerge(bias=True)
        >>> BNMerge().build(8, 16)(torch.randn(1, 5, 6, 8)).shape
        torch.Size([1, 3, 3, 16])
    """

    eps: float = 1e-5
    bias: bool = False

    def build(self, dim: int, out_dim: int, *, device=None, dtype=None) -> BNMergeLayer:
        return BNMergeLayer(self, dim, out_dim, device=device, dtype=dtype)


class BNMergeLayer(nn.Module):
    """The module of :class:`BNMerge`: ``conv``, ``norm`` (BatchNorm2d).

    Shapes:
        ``x: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_dim)``
    """

    def __init__(self, spec: BNMerge, dim: int, out_dim: int, *, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(dim, out_dim, 3, 2, 1, bias=spec.bias, **dd)
        self.norm = nn.BatchNorm2d(out_dim, eps=spec.eps, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


class ResDWConvMlp(nn.Module):
    """Shunted's MLP: ``fc2(drop(GELU(h + dwconv(h))))`` with ``h = fc1(x)``.

    Parameters: ``fc1``, ``dwconv`` (depthwise 3x3, padding 1, with bias), ``fc2``. Used by
    ``PreNorm(mlp="dwconv_res")``.

    Shapes:
        ``x: (B, H, W, C) -> (B, H, W, C)``

    Example:
        >>> ResDWConvMlp(8, 32)(torch.randn(2, 3, 5, 8)).shape
        torch.Size([2, 3, 5, 8])
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, *, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(dim, hidden, **dd)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, **dd)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, **dd)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = h + self.dwconv(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.drop(self.fc2(self.drop(self.act(h))))


_block._MLPS.setdefault("dwconv_res", ResDWConvMlp)
