"""Backbone layers: stochastic depth, the MLP, stems and downsampling between stages.

Stems and downsamplers are frozen specs (like the attention specs) whose ``build`` makes the
module, so a model table names them in one short, printable expression. Every layer here works
channels-last: ``(B, H, W, C)`` maps in and out (``(B, T, H, W, C)`` for video, where a layer
says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import AttnblocksError, fmt_shape
from .._spec import Spec, positive_int

__all__ = [
    "ConvMerge",
    "ConvMergeLayer",
    "ConvStem",
    "ConvStemLayer",
    "DWConvMlp",
    "DropPath",
    "Mlp",
    "PatchMerging",
    "PatchMergingLayer",
    "VideoStem",
    "VideoStemLayer",
    "drop_path_rates",
]


def drop_path_rates(rate: float, depths: tuple[int, ...]) -> list[list[float]]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over all blocks, per stage.

    Example:
        >>> drop_path_rates(0.2, (1, 2))
        [[0.0], [0.1, 0.2]]
    """
    if not 0.0 <= rate < 1.0:
        raise AttnblocksError(f"drop_path_rate must be in [0, 1), got {rate}.")
    total = sum(depths)
    flat = torch.linspace(0, rate, total, dtype=torch.float64).tolist()
    out, start = [], 0
    for d in depths:
        out.append(flat[start : start + d])
        start += d
    return out


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``.

    Kept samples are scaled by ``1 / (1 - p)`` in training; the identity in eval.

    Shapes:
        ``x: (B, ...) -> (B, ...)``

    Example:
        >>> DropPath(0.1).eval()(torch.ones(2, 3)).sum().item()
        6.0
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise AttnblocksError(f"DropPath: p must be in [0, 1), got {p}.")
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class Mlp(nn.Module):
    """``fc2(drop(GELU(fc1(x))))``, the transformer MLP (exact erf GELU).

    Shapes:
        ``x: (..., C) -> (..., C)``

    Example:
        >>> Mlp(8, 32)(torch.randn(2, 3, 3, 8)).shape
        torch.Size([2, 3, 3, 8])
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, *, device=None, dtype=None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, device=device, dtype=dtype)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DWConvMlp(nn.Module):
    """PVTv2's MLP: ``fc2(drop(GELU(dwconv(fc1(x)))))``, a depthwise 3x3 conv on the hidden map.

    Parameters as timm's ``MlpWithDepthwiseConv``: ``fc1``, ``dwconv`` (Conv2d 3x3, padding 1,
    one group per hidden channel, with bias), ``fc2``.

    Shapes:
        ``x: (B, H, W, C) -> (B, H, W, C)``

    Example:
        >>> DWConvMlp(8, 32)(torch.randn(2, 3, 5, 8)).shape
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
        h = self.dwconv(self.fc1(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.drop(self.fc2(self.drop(self.act(h))))


def _check_image(owner: object, x: torch.Tensor, channels: int) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise AttnblocksError(
            f"{owner!r} expects images as (B, {channels}, H, W), got x.shape={fmt_shape(x.shape)}."
        )


@dataclass(frozen=True, repr=False)
class ConvStem(Spec):
    """A strided conv patch embedding followed by LayerNorm.

    Swin: ``ConvStem(4, 4)`` (non-overlapping 4x4 patches). CSWin: ``ConvStem(7, 4, padding=2)``
    (overlapping 7x7 patches, stride 4).

    Example:
        >>> ConvStem(7, 4, padding=2)
        ConvStem(7, 4, padding=2)
        >>> ConvStem(4, 4).build(3, 96)(torch.randn(1, 3, 32, 40)).shape
        torch.Size([1, 8, 10, 96])
    """

    kernel: int
    stride: int
    padding: int = 0
    eps: float = 1e-5
    _positional: ClassVar[tuple[str, ...]] = ("kernel", "stride")
    #: the spatial rank of the input (images: 2)
    ndim: ClassVar[int] = 2

    def __post_init__(self) -> None:
        positive_int("ConvStem", "kernel", self.kernel)
        positive_int("ConvStem", "stride", self.stride)
        positive_int("ConvStem", "padding", self.padding, minimum=0)

    def build(self, in_chans: int, dim: int, *, device=None, dtype=None) -> ConvStemLayer:
        return ConvStemLayer(self, in_chans, dim, device=device, dtype=dtype)


class ConvStemLayer(nn.Module):
    """The module of :class:`ConvStem`: ``proj`` (Conv2d) and ``norm`` (LayerNorm).

    Shapes:
        ``x: (B, in_chans, H, W) -> (B, H', W', dim)``, ``H' = (H + 2p - k) // s + 1``.
    """

    def __init__(self, spec: ConvStem, in_chans: int, dim: int, *, device=None, dtype=None):
        super().__init__()
        self.spec = spec
        self.in_chans = in_chans
        dd = {"device": device, "dtype": dtype}
        self.proj = nn.Conv2d(in_chans, dim, spec.kernel, spec.stride, spec.padding, **dd)
        self.norm = nn.LayerNorm(dim, eps=spec.eps, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(self.spec, x, self.in_chans)
        k, p = self.spec.kernel, self.spec.padding
        if x.shape[2] + 2 * p < k or x.shape[3] + 2 * p < k:
            raise AttnblocksError(
                f"{self.spec!r}: an image of {x.shape[2]}x{x.shape[3]} pixels is smaller than "
                f"the {k}x{k} patch (padding {p})."
            )
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


@dataclass(frozen=True, repr=False)
class VideoStem(Spec):
    """Video Swin's patch embedding: a Conv3d over ``patch = (t, h, w)`` patches (stride = the
    patch) and a LayerNorm. The clip is zero-padded at the end of each axis to a multiple of
    the patch first, so any clip size works (``T' = ceil(T / t)``).

    ``stride`` is the spatial stride ``w`` (what a stage's ``reduction`` counts).

    Example:
        >>> VideoStem()
        VideoStem()
        >>> VideoStem().build(3, 96)(torch.randn(1, 3, 5, 30, 33)).shape
        torch.Size([1, 3, 8, 9, 96])
    """

    patch: tuple[int, int, int] = (2, 4, 4)
    eps: float = 1e-5
    #: the spatial rank of the input (clips ``(B, C, T, H, W)``: 3)
    ndim: ClassVar[int] = 3

    def __post_init__(self) -> None:
        patch = self.patch
        if not isinstance(patch, (tuple, list)) or len(patch) != 3:
            raise AttnblocksError(f"VideoStem: patch must be a (t, h, w) triple, got {patch!r}.")
        for p in patch:
            positive_int("VideoStem", "patch", p)
        object.__setattr__(self, "patch", tuple(patch))
        if self.eps <= 0:
            raise AttnblocksError(f"VideoStem: eps must be positive, got {self.eps}.")

    @property
    def stride(self) -> int:
        return self.patch[2]

    def build(self, in_chans: int, dim: int, *, device=None, dtype=None) -> VideoStemLayer:
        return VideoStemLayer(self, in_chans, dim, device=device, dtype=dtype)


class VideoStemLayer(nn.Module):
    """The module of :class:`VideoStem`: ``proj`` (Conv3d) and ``norm`` (LayerNorm).

    Shapes:
        ``x: (B, in_chans, T, H, W) -> (B, ceil(T/t), ceil(H/h), ceil(W/w), dim)``
    """

    def __init__(self, spec: VideoStem, in_chans: int, dim: int, *, device=None, dtype=None):
        super().__init__()
        self.spec = spec
        self.in_chans = in_chans
        dd = {"device": device, "dtype": dtype}
        self.proj = nn.Conv3d(in_chans, dim, spec.patch, spec.patch, **dd)
        self.norm = nn.LayerNorm(dim, eps=spec.eps, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_chans:
            raise AttnblocksError(
                f"{self.spec!r} expects clips as (B, {self.in_chans}, T, H, W), got "
                f"x.shape={fmt_shape(x.shape)}."
            )
        pad = [(-n) % p for n, p in zip(x.shape[2:], self.spec.patch)]
        x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        return self.norm(self.proj(x).permute(0, 2, 3, 4, 1))


@dataclass(frozen=True, repr=False)
class PatchMerging(Spec):
    """Swin's downsampling: concatenate each 2x2 neighbourhood, LayerNorm(4C), Linear(4C, 2C).

    The four tokens are concatenated in the authors' order ``(0, 0), (1, 0), (0, 1), (1, 1)``
    (row, column offsets); the linear layer has no bias. Odd maps are zero-padded on the
    bottom/right first (as timm does), so ``H' = ceil(H / 2)``. Only the last two map axes are
    merged: on a video map ``(B, T, H, W, C)`` time is kept (Video Swin's merge).

    ``norm_after=True`` is SwinV2's: the LayerNorm follows the reduction (over ``2C``).

    Example:
        >>> PatchMerging().build(8, 16)(torch.randn(1, 5, 6, 8)).shape
        torch.Size([1, 3, 3, 16])
        >>> PatchMerging(norm_after=True).build(8, 16).norm.normalized_shape
        (16,)
    """

    eps: float = 1e-5
    norm_after: bool = False

    def build(self, dim: int, out_dim: int, *, device=None, dtype=None) -> PatchMergingLayer:
        return PatchMergingLayer(self, dim, out_dim, device=device, dtype=dtype)


class PatchMergingLayer(nn.Module):
    """The module of :class:`PatchMerging`: ``norm`` (LayerNorm(4C)), ``reduction``.

    Shapes:
        ``x: (B, ..., H, W, C) -> (B, ..., ceil(H/2), ceil(W/2), out_dim)``
    """

    def __init__(self, spec: PatchMerging, dim: int, out_dim: int, *, device=None, dtype=None):
        super().__init__()
        self.spec = spec
        dd = {"device": device, "dtype": dtype}
        self.norm = nn.LayerNorm(out_dim if spec.norm_after else 4 * dim, eps=spec.eps, **dd)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, H, W, C = x.shape
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        # (..., H/2, 2r, W/2, 2c, C) -> channels ordered (c, r, C): the authors' x0, x1, x2, x3
        n = len(lead)
        x = x.view(*lead, (H + 1) // 2, 2, (W + 1) // 2, 2, C)
        x = x.permute(*range(n), n, n + 2, n + 3, n + 1, n + 4).flatten(n + 2)
        if self.spec.norm_after:
            return self.norm(self.reduction(x))
        return self.reduction(self.norm(x))


@dataclass(frozen=True, repr=False)
class ConvMerge(Spec):
    """CSWin's ``Merge_Block``: a strided conv (with bias unless ``bias=False``) and LayerNorm.

    Default: Conv2d 3x3, stride 2, padding 1, so ``H' = ceil(H / 2)``.

    Example:
        >>> ConvMerge()
        ConvMerge()
        >>> ConvMerge().build(8, 16)(torch.randn(1, 5, 6, 8)).shape
        torch.Size([1, 3, 3, 16])
    """

    kernel: int = 3
    stride: int = 2
    padding: int = 1
    eps: float = 1e-5
    bias: bool = True

    def __post_init__(self) -> None:
        positive_int("ConvMerge", "kernel", self.kernel)
        positive_int("ConvMerge", "stride", self.stride)
        positive_int("ConvMerge", "padding", self.padding, minimum=0)

    def build(self, dim: int, out_dim: int, *, device=None, dtype=None) -> ConvMergeLayer:
        return ConvMergeLayer(self, dim, out_dim, device=device, dtype=dtype)


class ConvMergeLayer(nn.Module):
    """The module of :class:`ConvMerge`: ``conv`` (Conv2d) and ``norm`` (LayerNorm).

    Shapes:
        ``x: (B, H, W, C) -> (B, H', W', out_dim)``, ``H' = (H + 2p - k) // s + 1``.
    """

    def __init__(self, spec: ConvMerge, dim: int, out_dim: int, *, device=None, dtype=None):
        super().__init__()
        self.spec = spec
        dd = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(
            dim, out_dim, spec.kernel, spec.stride, spec.padding, bias=spec.bias, **dd
        )
        self.norm = nn.LayerNorm(out_dim, eps=spec.eps, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
