"""Torch modules: the parameters of a built :class:`~attnblocks.Attention` and its forward."""

from __future__ import annotations

import torch
from torch import nn

from ._errors import AttnblocksError, fmt_shape
from .attention import Attention
from .projection import qkv_projection
from .runners import RunContext, runner_for

__all__ = ["AttentionLayer"]


class AttentionLayer(nn.Module):
    """A built :class:`~attnblocks.Attention`: qkv projection, head groups, output projection.

    Parameters: ``qkv`` (``Linear(C, 3C)``, outputs ``[q | k | v]``, head ``j`` owning channels
    ``[j*d, (j+1)*d)`` of each), ``pe.<i>`` (one module per positional encoder) and ``proj``
    (``Linear(C, C)``). Nothing in the state dict depends on the map size: masks and indices
    are derived per input size and cached.

    Shapes:
        ``x: (B, H, W, C) -> (B, H, W, C)``, or ``x: (B, N, C)`` with ``hw=(H, W)`` ->
        ``(B, N, C)``; tokens row-major.

    Example:
        >>> import torch
        >>> from attnblocks import Attention, RelPosBias, Window
        >>> layer = Attention(partition=Window(7, shift=3), pe=RelPosBias()).build(96, 3)
        >>> layer(torch.randn(2, 14, 21, 96)).shape
        torch.Size([2, 14, 21, 96])
    """

    def __init__(
        self, spec: Attention, dim: int, num_heads: int, *, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.spec = spec
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = spec.scale if spec.scale is not None else self.head_dim**-0.5
        if spec.score is not None:  # the score module folds its scale into q
            self.scale = 1.0
        self.groups = spec.groups(dim, num_heads)
        dd = {"device": device, "dtype": dtype}
        self.runners = nn.ModuleList(
            runner_for(g.partition)(spec, g, dim, num_heads, **dd) for g in self.groups
        )
        if any(r.kv_source != "tokens" for r in self.runners):
            raise AttnblocksError(f"{spec!r}: groups with their own keys are not supported yet.")
        self.qkv = qkv_projection(dim, spec.qkv_bias, **dd)
        self.pe = nn.ModuleList(e.build(self.groups, dim, num_heads, **dd) for e in spec.encoders)
        self.score = None if spec.score is None else spec.score.build(num_heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(spec.proj_drop)

    def extra_repr(self) -> str:
        return f"{self.spec!r}, dim={self.dim}, num_heads={self.num_heads}"

    def _as_map(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        if x.dim() == 4:
            if hw is not None and tuple(hw) != tuple(x.shape[1:3]):
                raise AttnblocksError(
                    f"{self.spec!r}: hw={tuple(hw)} contradicts x.shape={fmt_shape(x.shape)} read "
                    f"as (batch, height, width, channels)."
                )
            out = x
        elif x.dim() == 3:
            if hw is None:
                raise AttnblocksError(
                    f"{self.spec!r}: a token sequence x.shape={fmt_shape(x.shape)} needs the map "
                    f"size: call with hw=(H, W), or pass x as (B, H, W, C)."
                )
            H, W = hw
            if x.shape[1] != H * W:
                raise AttnblocksError(
                    f"{self.spec!r}: hw=({H}, {W}) has {H * W} tokens but "
                    f"x.shape={fmt_shape(x.shape)} has {x.shape[1]}."
                )
            out = x.view(x.shape[0], H, W, x.shape[2])
        else:
            raise AttnblocksError(
                f"{self.spec!r} expects x as (B, H, W, C) or (B, N, C) with hw=(H, W), got "
                f"x.shape={fmt_shape(x.shape)}."
            )
        if out.shape[-1] != self.dim:
            raise AttnblocksError(
                f"{self.spec!r} was built for C={self.dim} channels, got "
                f"x.shape={fmt_shape(x.shape)} with {x.shape[-1]}."
            )
        return out

    def _prepare_qk(self, qkv: torch.Tensor, rotate: bool) -> torch.Tensor:
        """Per-token q/k transforms on the map, before any partitioning: the encoders'
        ``rotate`` (absolute positions; not for padding fill), then the score's ``prepare_qk``.

        ``qkv: (B, H, W, 3, C)`` -> the same shape.
        """
        rotators = [e for e in self.pe if rotate and getattr(e, "rotates", False)]
        if not rotators and self.score is None:
            return qkv
        B, H, W = qkv.shape[:3]
        q, k, v = qkv.view(B, H, W, 3, self.num_heads, self.head_dim).unbind(3)
        for e in rotators:
            q, k = e.rotate(q, k)
        if self.score is not None:
            q, k = self.score.prepare_qk(q, k)
        return torch.stack((q, k, v), dim=3).view(qkv.shape)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """``x: (B, H, W, C)``, or ``(B, N, C)`` with ``hw``; returns the same shape."""
        xm = self._as_map(x, hw)
        for e in self.pe:
            xm = e.prepare(xm)
        B, H, W, C = xm.shape
        qkv = self._prepare_qk(self.qkv(xm).view(B, H, W, 3, C), rotate=True)
        fill = None
        if self.spec.pad == "timm" and self.qkv.bias is not None:
            fill = self._prepare_qk(self.qkv.bias.view(1, 1, 1, 3, C), rotate=False)[0, 0, 0]
        dropout = self.spec.attn_drop if self.training else 0.0
        ctx = RunContext(xm, self.scale, self.pe, dropout, self.spec.pad, fill)
        try:
            outs = [
                r(qkv[..., g.channels[0] : g.channels[1]], ctx)
                for g, r in zip(self.groups, self.runners)
            ]
        except AttnblocksError as e:  # add the input, as einops does, and drop the traceback
            form = (
                "(batch, height, width, channels)" if x.dim() == 4 else "(batch, tokens, channels)"
            )
            raise AttnblocksError(
                f"{e}\n  Input: x.shape={fmt_shape(x.shape)} read as {form}."
            ) from None
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        out = self.proj_drop(self.proj(out))
        return out.view(x.shape) if x.dim() == 3 else out
