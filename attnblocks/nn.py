"""Torch modules: the parameters of a built :class:`~attnblocks.Attention` and its forward."""

from __future__ import annotations

import torch
from torch import nn

from ._errors import AttnblocksError, fmt_shape
from .attention import Attention
from .runners import RunContext, run_group, runner_for

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
        self.groups = spec.groups(dim, num_heads)
        dd = {"device": device, "dtype": dtype}
        self.runners = nn.ModuleList(
            runner_for(g.partition)(spec, g, dim, num_heads, **dd) for g in self.groups
        )
        if any(r.kv_source != "tokens" for r in self.runners):
            raise AttnblocksError(f"{spec!r}: groups with their own keys are not supported yet.")
        self.qkv = nn.Linear(dim, 3 * dim, bias=spec.qkv_bias, **dd)
        self.pe = nn.ModuleList(e.build(self.groups, dim, num_heads, **dd) for e in spec.encoders)
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

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """``x: (B, H, W, C)``, or ``(B, N, C)`` with ``hw``; returns the same shape."""
        xm = self._as_map(x, hw)
        for e in self.pe:
            xm = e.prepare(xm)
        B, H, W, C = xm.shape
        qkv = self.qkv(xm).view(B, H, W, 3, C)
        fill = None
        if self.spec.pad == "timm" and self.qkv.bias is not None:
            fill = self.qkv.bias.view(3, C)
        dropout = self.spec.attn_drop if self.training else 0.0
        ctx = RunContext(xm, self.scale, self.pe, dropout, self.spec.pad, fill, self.spec.backend)
        outs = [
            run_group(r, qkv[..., g.channels[0] : g.channels[1]], ctx)
            for g, r in zip(self.groups, self.runners)
        ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        out = self.proj_drop(self.proj(out))
        return out.view(x.shape) if x.dim() == 3 else out
