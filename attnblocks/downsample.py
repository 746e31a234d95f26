"""Downsampled keys and values: the runner of :class:`~attnblocks.Downsample` head groups and
the module behind :class:`~attnblocks.LocalConv` (PVTv2's spatial-reduction attention,
Shunted's multi-scale token aggregation).

A :class:`DownsampleRunner` owns its group's reduction (``sr``: strided conv, ``norm``,
activation) and its ``kv`` projection; the layer hands it only the group's queries.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._core import attend_keys
from ._errors import AttnblocksError
from .backends.eager import attend
from .encoders import EncoderModule, LePEModule
from .lowering import GroupPlan
from .partition import Downsample
from .runners import GroupRunner, RunContext, register_runner

__all__ = ["DownsampleRunner", "LocalConvModule"]


class LocalConvModule(LePEModule):
    """The depthwise conv of :class:`~attnblocks.LocalConv`, one channel per V channel.

    Parameters: ``conv.weight: (C, 1, k, k)``, ``conv.bias: (C,)``; head group ``g`` uses the
    channels ``g.channels`` of both. On window, stripe and global groups it acts through the
    ``value`` hook exactly as LePE; :class:`DownsampleRunner` calls :meth:`term` itself.

    Example:
        >>> import torch
        >>> from attnblocks import Attention, Downsample, LocalConv, Split
        >>> spec = Attention(partition=Downsample((4, 2), act="gelu"), heads=Split(2),
        ...                  pe=LocalConv())
        >>> spec.build(16, 2).pe[0].conv.weight.shape
        torch.Size([16, 1, 3, 3])
    """

    def term(self, group: GroupPlan, v: torch.Tensor) -> torch.Tensor:
        """``DWConv(v)`` with the group's channels; ``v: (B, c, H', W') -> (B, c, H', W')``."""
        c0, c1 = group.channels
        return F.conv2d(
            v,
            self.conv.weight[c0:c1],
            self.conv.bias[c0:c1],
            padding=self.kernel // 2,
            groups=c1 - c0,
        )


def _overrides(module: nn.Module, hook: str) -> bool:
    return getattr(type(module), hook) is not getattr(EncoderModule, hook)


@register_runner(Downsample)
class DownsampleRunner(GroupRunner):
    """One head group attending to its own reduced copy of the map.

    Parameters (``C`` input channels, ``c`` the group's channels): ``sr`` (``Conv2d(C, C,
    kernel=stride=ratio)``) and ``norm`` (``LayerNorm(C, eps=1e-5)``) when the group reduces,
    and ``kv`` (``Linear(C, 2c)``: first ``c`` outputs K, last ``c`` V, head ``j`` of the group
    owning channels ``[j*d, (j+1)*d)`` of each). The reduction reads all ``C`` channels of the
    layer input, as PVTv2's ``sr`` and Shunted's ``sr1``/``sr2`` do.

    Shapes:
        ``qkv: (B, H, W, 1, c)`` (the group's queries), ``ctx.x: (B, H, W, C)`` ->
        ``(B, H, W, c)``.

    Example:
        >>> import torch
        >>> from attnblocks import Attention, Downsample
        >>> layer = Attention(partition=Downsample(4)).build(32, 2)  # PVTv2, sr=4
        >>> sorted(k for k in layer.state_dict() if k.startswith("runners"))[:3]
        ['runners.0.kv.bias', 'runners.0.kv.weight', 'runners.0.norm.bias']
        >>> layer(torch.randn(2, 9, 10, 32)).shape
        torch.Size([2, 9, 10, 32])
    """

    kv_source = "own"

    def __init__(self, spec, group: GroupPlan, dim: int, num_heads: int, device=None, dtype=None):
        super().__init__(spec, group, dim, num_heads, device=device, dtype=dtype)
        part: Downsample = group.partition  # type: ignore[assignment]
        dd = {"device": device, "dtype": dtype}
        self.spec_name = repr(spec)
        self.partition = part
        self.ratio = part.ratio
        if part.reduces:
            self.sr = nn.Conv2d(dim, dim, self.ratio, stride=self.ratio, **dd)
            self.norm = nn.LayerNorm(dim, eps=1e-5, **dd)
        else:
            self.sr = self.norm = None
        self.gelu = part.act == "gelu"
        self.kv = nn.Linear(dim, 2 * group.dim, bias=spec.qkv_bias, **dd)

    def extra_repr(self) -> str:
        return repr(self.partition)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The map keys and values are made from: ``(B, H, W, C) -> (B, H', W', C)``."""
        self.partition.reduced_size(x.shape[1], x.shape[2])  # raises on maps below the ratio
        if self.sr is None:
            return x
        red = self.sr(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # floors like the authors'
        red = self.norm(red)
        return F.gelu(red) if self.gelu else red

    def _local_conv(self, ctx: RunContext):
        local = None
        for e in ctx.encoders:
            if isinstance(e, LocalConvModule):
                local = e
            elif _overrides(e, "bias") or _overrides(e, "value"):
                raise AttnblocksError(
                    f"{self.spec_name}: head group {self.group.index} uses {self.partition!r}, "
                    f"whose keys are reduced tokens; {type(e).__name__} needs window-aligned "
                    f"keys. Use pe=LocalConv() for these groups."
                )
        return local

    def forward(
        self, qkv: torch.Tensor, ctx: RunContext, kernel: Callable = attend
    ) -> torch.Tensor:
        """``kernel``: the attention of ``q: (B, h, N, d)`` over the reduced ``k, v``
        (:func:`~attnblocks.backends.eager.attend`, or the flex backend's)."""
        g = self.group
        B, H, W = qkv.shape[:3]
        h, c = g.num_heads, g.dim
        d = c // h
        local = self._local_conv(ctx)
        red = self.reduce(ctx.x)
        r = self.ratio
        if ctx.pad == "error" and (H % r or W % r):
            raise AttnblocksError(
                f"{self.partition!r} cannot reduce a {H}x{W} token map without dropping tokens: "
                f"{H if H % r else W} is not divisible by {r} (pad='error').\n  Hint: the "
                f"default pad='mask' floors as the authors' strided conv does, or resize the map "
                f"to {H // r * r}x{W // r * r}."
            )
        Hr, Wr = red.shape[1:3]
        kv = self.kv(red)  # (B, H', W', 2c)
        k, v = kv.split(c, dim=-1)
        k = k.reshape(B, Hr * Wr, h, d).transpose(1, 2)
        v_map = v.permute(0, 3, 1, 2)  # (B, c, H', W'), channel = head * d + dim
        if local is not None and self.sr is not None:  # Shunted sr > 1: enhance V, then attend
            v_map = v_map + local.term(g, v_map)
        v = v_map.reshape(B, h, d, Hr * Wr).transpose(-1, -2)
        q = qkv.squeeze(3).reshape(B, H * W, h, d).transpose(1, 2)  # a view: no zero-filled grad
        # the core's kernel for every query over every key (functional.attention's too)
        o = attend_keys(q, k, v, ctx.scale, ctx.dropout_p, None if kernel is attend else kernel)
        out = o.transpose(1, 2).reshape(B, H, W, c)
        if local is not None and self.sr is None:  # Shunted sr = 1: LePE over the whole map
            out = out + local.term(g, v_map).permute(0, 2, 3, 1)
        return out
