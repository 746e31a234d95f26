"""Torch modules: the parameters of a built :class:`~attnblocks.Attention` and its forward."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._cache import size_cache
from ._core import (
    CallPlan,
    attention_core,
    plan_call,
    prepare_qk,
    restore_order,
    to_order,
    token_order,
)
from ._errors import AttnblocksError, fmt_shape
from .attention import Attention
from .lowering import INPUT_PADS
from .projection import qkv_projection
from .runners import RunContext, check_rank, runner_for

__all__ = ["AttentionLayer", "grouped_rows"]


def _axis_names(rank: int) -> tuple[str, ...]:
    return {1: ("length",), 2: ("height", "width"), 3: ("time", "height", "width")}.get(
        rank, tuple(f"axis {i}" for i in range(rank))
    )


@size_cache(64)
def grouped_rows(
    channels: tuple[tuple[int, int], ...], dim: int, device: torch.device | None = None
) -> torch.Tensor:
    """Rows of a ``[q | k | v]`` projection reordered group by group, ``[q_g | k_g | v_g]``.

    Shapes: ``channels`` the groups' ``(c0, c1)`` in order; returns ``(3 * sum(c1 - c0),)``
    int64 row indices into the ``(3 * dim, dim)`` weight.

    Example:
        >>> grouped_rows(((0, 2), (2, 4)), 4).tolist()
        [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]
    """
    rows = [i * dim + c for c0, c1 in channels for i in range(3) for c in range(c0, c1)]
    return torch.tensor(rows, device=device)


class AttentionLayer(nn.Module):
    """A built :class:`~attnblocks.Attention`: qkv projection, head groups, output projection.

    Parameters: ``qkv`` (``Linear(C, 3C)``, outputs ``[q | k | v]``, head ``j`` owning channels
    ``[j*d, (j+1)*d)`` of each), ``pe.<i>`` (one module per positional encoder) and ``proj``
    (``Linear(C, C)``). When some head group makes its own keys and values
    (:class:`~attnblocks.Downsample`), ``qkv`` is replaced by ``q`` (``Linear(C, C)``) and, for
    the other groups, ``kv`` (``Linear(C, 2 C_rest)``, outputs ``[k | v]`` over their
    channels in group order); such groups own their ``kv`` under ``runners.<i>``. Nothing in
    the state dict depends on the map size: masks and indices are derived per input size and
    cached.

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
        self._dims = [g.dim for g in self.groups]  # the groups tile the channels in order
        dd = {"device": device, "dtype": dtype}
        self.runners = nn.ModuleList(
            runner_for(g.partition)(spec, g, dim, num_heads, **dd) for g in self.groups
        )
        self.own_kv = tuple(r.kv_source == "own" for r in self.runners)
        if any(self.own_kv):  # q for all groups; one fused [k | v] for the groups reading tokens
            if spec.score is not None or not isinstance(spec.qkv_bias, bool):
                raise AttnblocksError(
                    f"{spec!r}: score={spec.score!r} and qkv_bias={spec.qkv_bias!r} need the "
                    f"fused qkv projection, which groups with their own keys do not use."
                )
            self.q = nn.Linear(dim, dim, bias=spec.qkv_bias, **dd)
            rest = sum(g.dim for g, own in zip(self.groups, self.own_kv) if not own)
            self.kv = nn.Linear(dim, 2 * rest, bias=spec.qkv_bias, **dd) if rest else None
        else:
            self.qkv = qkv_projection(dim, spec.qkv_bias, **dd)
        self.pe = nn.ModuleList(e.build(self.groups, dim, num_heads, **dd) for e in spec.encoders)
        self.score = None if spec.score is None else spec.score.build(num_heads, **dd)
        if any(self.own_kv) and any(getattr(e, "rotates", False) for e in self.pe):
            raise AttnblocksError(
                f"{spec!r}: rotary encoders act on the fused qkv, which groups with their own "
                f"keys do not use."
            )
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(spec.proj_drop)
        # q/k/v projected per token from x, nothing transformed on the map before the
        # partitioning, runners that can take tokens in an order: the core may ask for x in
        # its token order (plan_call)
        self._orderable = (
            all(hasattr(r, "ordered_layout") for r in self.runners)
            and not any(self.own_kv)
            and self._prepares_nothing()
            and spec.backend in ("eager", "auto")
        )

    def extra_repr(self) -> str:
        return f"{self.spec!r}, dim={self.dim}, num_heads={self.num_heads}"

    def _check_input(self, x: Any, hw: Any) -> None:
        """The input's type and dtype, and ``hw``'s form, checked before any kernel sees them."""
        if not isinstance(x, torch.Tensor):
            hint = " (from numpy: torch.from_numpy(x))" if type(x).__module__ == "numpy" else ""
            raise TypeError(
                f"{self.spec!r} expects x as a torch.Tensor, got {type(x).__name__}{hint}."
            )
        param = next(self.parameters(), None)
        if not x.is_floating_point():
            raise AttnblocksError(
                f"{self.spec!r} expects a floating-point x, got dtype={x.dtype}: convert it "
                f"first, e.g. x.to({param.dtype if param is not None else torch.float32})."
            )
        try:
            autocast = torch.is_autocast_enabled(x.device.type)
        except RuntimeError:  # a device type autocast does not know (meta)
            autocast = False
        if param is not None and x.dtype != param.dtype and not autocast:
            raise AttnblocksError(
                f"{self.spec!r}: x.dtype={x.dtype} differs from the layer's parameters "
                f"({param.dtype}): call layer.to({x.dtype}) or pass x.to({param.dtype}) (or run "
                f"under torch.autocast)."
            )
        if hw is not None:
            ok = isinstance(hw, (tuple, list, torch.Size)) and len(hw) >= 1
            if not ok or any(
                isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in hw
            ):
                raise AttnblocksError(
                    f"{self.spec!r}: hw must be the map size, a tuple of ints such as (H, W), "
                    f"(L,) or (T, H, W), got {hw!r}."
                )
            if min(hw) < 1:
                raise AttnblocksError(f"{self.spec!r}: hw={tuple(hw)} must be positive.")

    @property
    def rank(self) -> int | None:
        """The token-map rank the head groups' partitions fix, or ``None`` (any rank)."""
        ranks = {g.partition.rank for g in self.groups} - {None}
        return ranks.pop() if len(ranks) == 1 else None

    def _as_map(self, x: torch.Tensor, hw: tuple[int, ...] | None) -> torch.Tensor:
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            self._check_input(x, hw)
        if x.dim() >= 4:
            if hw is not None and tuple(hw) != tuple(x.shape[1:-1]):
                raise AttnblocksError(
                    f"{self.spec!r}: hw={tuple(hw)} contradicts x.shape={fmt_shape(x.shape)} read "
                    f"as (batch, {', '.join(_axis_names(x.dim() - 2))}, channels)."
                )
            out = x
        elif x.dim() == 3:
            if hw is None and self.rank == 1:
                hw = (x.shape[1],)
            if hw is None:
                raise AttnblocksError(
                    f"{self.spec!r}: a token sequence x.shape={fmt_shape(x.shape)} needs the map "
                    f"size: call with hw=(H, W) (or hw=(L,) for a 1-D sequence, hw=(T, H, W) "
                    f"for video), or pass x as (B, H, W, C)."
                )
            if x.shape[1] != math.prod(hw):
                raise AttnblocksError(
                    f"{self.spec!r}: hw={tuple(hw)} has {math.prod(hw)} tokens but "
                    f"x.shape={fmt_shape(x.shape)} has {x.shape[1]}."
                )
            out = x.view(x.shape[0], *hw, x.shape[2])
        else:
            raise AttnblocksError(
                f"{self.spec!r} expects x as (B, H, W, C), (B, T, H, W, C), or (B, N, C) with "
                f"hw=(H, W) / (L,) / (T, H, W), got x.shape={fmt_shape(x.shape)}."
            )
        if out.shape[-1] != self.dim:
            raise AttnblocksError(
                f"{self.spec!r} was built for C={self.dim} channels, got "
                f"x.shape={fmt_shape(x.shape)} with {x.shape[-1]}."
            )
        check_rank(self.spec, out.dim() - 2, [*self.runners, *self.pe])
        return out

    def _prepare_qk(self, qkv: torch.Tensor, rotate: bool) -> torch.Tensor:
        """The core's per-token q/k transforms (:func:`~attnblocks._core.prepare_qk`) on the
        packed projection: the encoders' ``rotate`` (absolute positions; not for padding fill),
        then the score's ``prepare_qk``.

        ``qkv: (B, H, W, 3, C)`` -> the same shape.
        """
        if self._prepares_nothing() or (self.score is None and not rotate):
            return qkv
        *lead, _, _ = qkv.shape
        q, k, v = qkv.view(*lead, 3, self.num_heads, self.head_dim).unbind(-3)
        q, k = prepare_qk(q, k, self.pe if rotate else (), self.score)
        return torch.stack((q, k, v), dim=-3).view(qkv.shape)

    def _prepares_nothing(self) -> bool:
        """No per-token q/k transform (rotary encoders, a score's ``prepare_qk``) before the
        partitioning."""
        return self.score is None and not any(getattr(e, "rotates", False) for e in self.pe)

    def _project_grouped(self, xm: torch.Tensor) -> list[torch.Tensor]:
        """The qkv projection group by group: one linear per group over its own rows of the
        weight, ``[q_g | k_g | v_g]``. Each group's ``(B, H, W, 3, c)`` is then a contiguous
        tensor of its own: its heads are views of one unbind (whose backward is one stack), and
        no split of a shared output has to be concatenated in backward (CSWin-T stage 1 at
        batch 8: 8.5 ms for that cat, against one add of the input's gradient here).

        ``xm: (B, H, W, C)`` -> per group ``(B, H, W, 3, c)``.
        """
        lead = xm.shape[:-1]
        params = self._group_params()
        return [F.linear(xm, *params[g.index]).view(*lead, 3, g.dim) for g in self.groups]

    def _group_params(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Per group, its rows of the qkv weight and bias (:func:`grouped_rows`): its
        ``[q | k | v]`` is ``F.linear(x, *params[g.index])``. Gathered every call: a cache keyed
        on the weights would miss edits through ``.data`` (an EMA teacher), which change
        neither ``data_ptr`` nor ``_version``."""
        weight, bias = self.qkv.weight, self.qkv.bias
        rows = grouped_rows(tuple(g.channels for g in self.groups), self.dim, weight.device)
        params = []
        for g in self.groups:
            r = rows[3 * g.channels[0] : 3 * g.channels[1]]
            b = None if bias is None else bias.index_select(0, r)
            params.append((weight.index_select(0, r), b))
        return params

    def _split_groups(self, t: torch.Tensor) -> list[torch.Tensor] | tuple[torch.Tensor, ...]:
        """``t: (..., C)`` cut into the groups' channels ``(..., c)``, in group order.

        ``split``, not slices: its backward is one cat, where a slice per group back-propagates
        a zero-filled full-size tensor each (11 ms a group for CSWin's stage 1 at batch 8); and
        no split at all for one group (its backward would still copy).
        """
        return [t] if len(self.groups) == 1 else t.split(self._dims, dim=-1)

    def _split_inputs(self, xm: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Per group: its queries ``(B, H, W, 1, c)`` if it makes its own keys, else
        ``(B, H, W, 3, c)`` from ``q`` and the fused ``kv`` (whose ``[k | v]`` halves hold the
        token-reading groups' channels in group order); and the ``pad="timm"`` fill ``(3, C)``.
        """
        *lead, C = xm.shape
        qs = self._split_groups(self.q(xm).view(*lead, 1, C))
        kv = None if self.kv is None else self.kv(xm).view(*lead, 2, -1)
        kvb = None if self.kv is None or self.kv.bias is None else self.kv.bias.view(2, -1)
        inputs, fills, r0 = [], [], 0
        for g, own, q in zip(self.groups, self.own_kv, qs):
            c0, c1 = g.channels
            inputs.append(q if own else torch.cat([q, kv[..., r0 : r0 + g.dim]], dim=-2))
            if kvb is not None and self.q.bias is not None:
                rest = xm.new_zeros(2, g.dim) if own else kvb[:, r0 : r0 + g.dim]
                fills.append(torch.cat([self.q.bias[None, c0:c1], rest]))
            r0 += 0 if own else g.dim
        fill = torch.cat(fills, dim=1) if self.spec.pad in INPUT_PADS and fills else None
        return inputs, fill

    def forward(self, x: torch.Tensor, hw: tuple[int, ...] | None = None) -> torch.Tensor:
        """``x: (B, *map, C)`` (``(B, H, W, C)``, ``(B, T, H, W, C)``), or ``(B, N, C)`` with
        ``hw`` the map size (``(H, W)``, ``(L,)``, ``(T, H, W)``); returns the same shape."""
        xm = self._as_map(x, hw)
        for e in self.pe:
            xm = e.prepare(xm)
        try:
            plan = self._plan(xm)
            if plan.layouts is not None:
                out = self._forward_ordered(xm, plan)
            else:
                out = self._forward_groups(xm, plan)
        except AttnblocksError as e:  # add the input, as einops does, and drop the traceback
            names = ", ".join(_axis_names(xm.dim() - 2))
            form = f"(batch, {names}, channels)" if x.dim() > 3 else "(batch, tokens, channels)"
            raise AttnblocksError(
                f"{e}\n  Input: x.shape={fmt_shape(x.shape)} read as {form}."
            ) from None
        return out.view(x.shape) if x.dim() == 3 else out

    def _plan(self, xm: torch.Tensor, ordered: bool = True) -> CallPlan:
        """This call's plan (:func:`~attnblocks._core.plan_call`): the groups' backends,
        ``"auto"`` decided once, and whether the core takes x in its token order."""

        def grad() -> bool:
            return torch.is_grad_enabled() and (
                xm.requires_grad or any(p.requires_grad for p in self.parameters())
            )

        runners = self.runners if ordered and self._orderable else None
        return plan_call(
            self.groups,
            tuple(xm.shape[:-1]),
            xm.device,
            self.spec.pad,
            self.spec.backend,
            grad,
            runners,
        )

    def _context(self, xm: torch.Tensor, fill: torch.Tensor | None) -> RunContext:
        dropout = self.spec.attn_drop if self.training else 0.0
        return RunContext(xm, self.scale, self.pe, dropout, self.spec.pad, fill, self.spec.backend)

    def _forward_groups(self, xm: torch.Tensor, plan: CallPlan | None = None) -> torch.Tensor:
        """qkv on the map, the core on each group, output projection on the map."""
        *lead, C = xm.shape
        plan = plan or self._plan(xm, ordered=False)
        if any(self.own_kv):
            inputs, fill = self._split_inputs(xm)
        else:
            if len(self.groups) > 1 and self._prepares_nothing():
                inputs = self._project_grouped(xm)
            else:
                qkv = self._prepare_qk(self.qkv(xm).view(*lead, 3, C), rotate=True)
                inputs = self._split_groups(qkv)
            fill = None
            if self.spec.pad in INPUT_PADS and self.qkv.bias is not None:
                bias = self.qkv.bias.view(*(1,) * len(lead), 3, C)
                fill = self._prepare_qk(bias, rotate=False).view(3, C)
        outs = attention_core(plan, self.runners, inputs, self._context(xm, fill))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return self.proj_drop(self.proj(out))

    def _forward_ordered(
        self, xm: torch.Tensor, plan: CallPlan | None = None
    ) -> torch.Tensor | None:
        """The core takes each group's tokens in its own order (the plan's layouts: groups of
        unpadded windows): ``x`` is gathered into that order before the group's qkv projection
        (C channels, where gathering its qkv moves 3c) and the output gathered back; one group
        is projected in that order and gathered back once, as timm does. ``None`` where the
        plan has no token order (padded maps, long masked windows, a non-eager lowering)."""
        plan = plan or self._plan(xm)
        if plan.layouts is None:
            return None
        B, *size, C = xm.shape
        N = math.prod(size)
        tokens = xm.reshape(B, N, C)
        single = len(self.runners) == 1
        params = None if single else self._group_params()
        gathered: dict = {}  # groups with one layout (a Split of one partition) share x
        orders, inputs = [], []
        for g, layout in zip(self.groups, plan.layouts):
            order = token_order(layout, xm.device)
            if layout not in gathered:
                gathered[layout] = to_order(tokens, order)
            t = gathered[layout]
            qkv = self.qkv(t) if single else F.linear(t, *params[g.index])
            orders.append(order)
            inputs.append(qkv.view(B, N, 3, g.dim))
        outs = attention_core(plan, self.runners, inputs, self._context(xm, None))
        if single:
            out = restore_order(self.proj_drop(self.proj(outs[0])), orders[0])
        else:
            outs = [restore_order(o, order) for o, order in zip(outs, orders)]
            out = self.proj_drop(self.proj(torch.cat(outs, dim=-1)))
        return out.view(xm.shape)
