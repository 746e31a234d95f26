"""The reduced-keys family (:class:`~attnblocks.Downsample`: PVTv2's spatial-reduction
attention, Shunted's multi-scale token aggregation): its runner, flex lowering and cost.

A :class:`DownsampleRunner` owns its group's reduction (``sr``: strided conv, ``norm``,
activation) and its ``kv`` projection; the layer hands it only the group's queries.
:class:`~attnblocks.LocalConv` (:class:`~attnblocks.encoders.LocalConvModule`) convolves its
reduced V map.

Costs: a group attends to all ``M = (H // r) * (W // r)`` reduced tokens (``2 * B * N * M *
c`` MACs, no mask), and makes its own keys and values: the strided ``Conv2d(C, C, r)``
(``B * M * C * C * r * r``; none for ratio 1 unless ``conv1x1``) and ``kv`` (``B * M * C * 2c``)
are counted with the encoders (:func:`~attnblocks.cost.register_kv_cost`); LayerNorm and GELU
are not MACs. :class:`~attnblocks.LocalConv` convolves the group's reduced V map (``k*k *
B * M * c``), or acts as LePE on other partitions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import AttnblocksError, fmt_size
from ..backends.registry import register_lowering
from ..cost import GroupCost, _lepe_cost, register_cost, register_encoder_cost, register_kv_cost
from ..encoders import EncoderModule, LocalConvModule
from ..kernels import attend, attend_keys, check_flex_call, flex_attend
from ..lowering import GroupPlan
from ..partition import Downsample
from ..pe import LocalConv
from ..runners import GroupRunner, RunContext, register_runner

__all__ = ["DownsampleRunner", "flex_downsample_lowering"]


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
        self.ranks = (part.ndim,)  # check_rank: the reduction's conv is built for this rank
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[part.ndim - 1]
        if part.reduces:
            self.sr = conv(dim, dim, self.ratio, stride=self.ratio, **dd)
            self.norm = nn.LayerNorm(dim, eps=1e-5, **dd)
        else:
            self.sr = self.norm = None
        self.gelu = part.act == "gelu"
        self.kv = nn.Linear(dim, 2 * group.dim, bias=spec.qkv_bias, **dd)

    def extra_repr(self) -> str:
        return repr(self.partition)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The map keys and values are made from: ``(B, H, W, C) -> (B, H', W', C)``, and
        ``(B, *shape, C) -> (B, *reduced, C)`` in any rank."""
        self.partition.reduced_size(*x.shape[1:-1])  # raises on maps below the ratio
        if self.sr is None:
            return x
        red = self.sr(x.movedim(-1, 1)).movedim(1, -1)  # floors like the authors'
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
        (:func:`~attnblocks.kernels.attend`, or the flex backend's)."""
        g = self.group
        B, *shape = qkv.shape[:-2]
        h, c = g.num_heads, g.dim
        d = c // h
        local = self._local_conv(ctx)
        red = self.reduce(ctx.x)
        r = self.ratio
        if ctx.pad == "error" and any(n % r for n in shape):
            bad = next(n for n in shape if n % r)
            size = fmt_size(shape)
            fit = fmt_size(n // r * r for n in shape)
            raise AttnblocksError(
                f"{self.partition!r} cannot reduce a {size} token map without dropping tokens: "
                f"{bad} is not divisible by {r} (pad='error').\n  Hint: the default "
                f"pad='mask' floors as the authors' strided conv does, or resize the map to "
                f"{fit}."
            )
        M = math.prod(red.shape[1:-1])
        kv = self.kv(red)  # (B, *reduced, 2c)
        k, v = kv.split(c, dim=-1)
        k = k.reshape(B, M, h, d).transpose(1, 2)
        v_map = v.movedim(-1, 1)  # (B, c, *reduced), channel = head * d + dim
        if local is not None and self.sr is not None:  # Shunted sr > 1: enhance V, then attend
            v_map = v_map + local.term(g, v_map)
        v = v_map.reshape(B, h, d, M).transpose(-1, -2)
        # a view: no zero-filled grad
        q = qkv.squeeze(-2).reshape(B, math.prod(shape), h, d).transpose(1, 2)
        # the shared kernel for every query over every key (functional.attention's too)
        o = attend_keys(q, k, v, ctx.scale, ctx.dropout_p, None if kernel is attend else kernel)
        out = o.transpose(1, 2).reshape(B, *shape, c)
        if local is not None and self.sr is None:  # Shunted sr = 1: LePE over the whole map
            out = out + local.term(g, v_map).movedim(1, -1)
        return out


@register_lowering("flex", Downsample)
def flex_downsample_lowering(runner: Any, qkv: torch.Tensor, ctx: Any) -> torch.Tensor:
    """A :class:`~attnblocks.Downsample` group with FlexAttention (no mask): the runner's own
    forward with its attention kernel swapped; ``qkv: (B, H, W, 1, c) -> (B, H, W, c)``.

    Example:
        >>> import warnings
        >>> from attnblocks import zoo
        >>> import dataclasses
        >>> spec = dataclasses.replace(zoo.shunted(4), backend="flex")
        >>> with torch.no_grad(), warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     spec.build(16, 2)(torch.randn(1, 8, 9, 16)).shape
        torch.Size([1, 8, 9, 16])
    """
    check_flex_call(runner.group, qkv, ctx)
    return runner(qkv, ctx, kernel=flex_attend)


@register_cost("eager", Downsample)
def _downsample_cost(g, shape, pad, batch, itemsize, bias) -> GroupCost:
    part: Downsample = g.partition  # type: ignore[assignment]
    M = math.prod(part.reduced_size(*shape))
    if pad == "error" and any(n % part.ratio for n in shape):
        raise AttnblocksError(
            f"cost: {part!r} cannot reduce a {fmt_size(shape)} token map without "
            f"dropping tokens (pad='error')."
        )
    scores = batch * g.num_heads * math.prod(shape) * M
    return GroupCost(2 * scores * (g.dim // g.num_heads), float(M), M, scores, 0, batch * M)


@register_cost("dense", Downsample)
def _downsample_dense(g, shape, pad, batch, itemsize, bias) -> GroupCost:
    raise AttnblocksError(f"cost: backend='dense' has no lowering for {g.partition!r}.")


@register_kv_cost(Downsample)
def _downsample_kv(g: GroupPlan, shape: tuple, batch: int, dim: int) -> int:
    """The group's reduction (strided conv) and ``kv`` linear."""
    part: Downsample = g.partition  # type: ignore[assignment]
    tokens = batch * math.prod(part.reduced_size(*shape))
    conv = tokens * dim * dim * part.ratio ** len(shape) if part.reduces else 0
    return conv + tokens * dim * 2 * g.dim


@register_encoder_cost(LocalConv)
def _local_conv_cost(spec: LocalConv, g: GroupPlan, gc: GroupCost, backend: str) -> int:
    if isinstance(g.partition, Downsample):  # over the group's (reduced) V map
        return spec.kernel**spec.ndim * gc.frames * g.dim
    return _lepe_cost(spec, g, gc, backend)  # the LePE form on windows, stripes, global
