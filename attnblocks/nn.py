"""Torch modules: the parameters of a built :class:`~attnblocks.Attention` and its forward."""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._cache import size_cache
from ._errors import AttnblocksError, fmt_shape
from .attention import Attention
from .backends.registry import choose_backend
from .families.rect.eager import is_identity_order, permute_tokens, window_order
from .families.rect.runner import RectRunner
from .lowering import INPUT_PADS, RectLayout
from .projection import qkv_projection
from .runners import RunContext, run_group, runner_for

__all__ = ["AttentionLayer", "grouped_rows"]


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
        # groups of windows projected per token from x: x can be put in window order first
        self._orderable = (
            all(isinstance(r, RectRunner) for r in self.runners)
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
            ok = isinstance(hw, (tuple, list, torch.Size)) and len(hw) == 2
            if not ok or any(
                isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in hw
            ):
                raise AttnblocksError(
                    f"{self.spec!r}: hw must be a pair of ints (H, W), got {hw!r}."
                )
            if min(hw) < 1:
                raise AttnblocksError(f"{self.spec!r}: hw={tuple(hw)} must be positive.")

    def _as_map(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            self._check_input(x, hw)
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
        B, H, W, _ = xm.shape
        params = self._group_params()
        return [F.linear(xm, *params[g.index]).view(B, H, W, 3, g.dim) for g in self.groups]

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
        B, H, W, C = xm.shape
        qs = self._split_groups(self.q(xm).view(B, H, W, 1, C))
        kv = None if self.kv is None else self.kv(xm).view(B, H, W, 2, -1)
        kvb = None if self.kv is None or self.kv.bias is None else self.kv.bias.view(2, -1)
        inputs, fills, r0 = [], [], 0
        for g, own, q in zip(self.groups, self.own_kv, qs):
            c0, c1 = g.channels
            inputs.append(q if own else torch.cat([q, kv[..., r0 : r0 + g.dim]], dim=3))
            if kvb is not None and self.q.bias is not None:
                rest = xm.new_zeros(2, g.dim) if own else kvb[:, r0 : r0 + g.dim]
                fills.append(torch.cat([self.q.bias[None, c0:c1], rest]))
            r0 += 0 if own else g.dim
        fill = torch.cat(fills, dim=1) if self.spec.pad in INPUT_PADS and fills else None
        return inputs, fill

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """``x: (B, H, W, C)``, or ``(B, N, C)`` with ``hw``; returns the same shape."""
        xm = self._as_map(x, hw)
        for e in self.pe:
            xm = e.prepare(xm)
        try:
            out = self._forward_ordered(xm) if self._orderable else None
            if out is None:
                out = self._forward_groups(xm)
        except AttnblocksError as e:  # add the input, as einops does, and drop the traceback
            form = (
                "(batch, height, width, channels)" if x.dim() == 4 else "(batch, tokens, channels)"
            )
            raise AttnblocksError(
                f"{e}\n  Input: x.shape={fmt_shape(x.shape)} read as {form}."
            ) from None
        return out.view(x.shape) if x.dim() == 3 else out

    def _context(self, xm: torch.Tensor, fill: torch.Tensor | None) -> RunContext:
        dropout = self.spec.attn_drop if self.training else 0.0
        return RunContext(xm, self.scale, self.pe, dropout, self.spec.pad, fill, self.spec.backend)

    def _forward_groups(self, xm: torch.Tensor) -> torch.Tensor:
        """qkv on the map, each group's runner, output projection on the map."""
        B, H, W, C = xm.shape
        if any(self.own_kv):
            inputs, fill = self._split_inputs(xm)
        else:
            if len(self.groups) > 1 and self._prepares_nothing():
                inputs = self._project_grouped(xm)
            else:
                qkv = self._prepare_qk(self.qkv(xm).view(B, H, W, 3, C), rotate=True)
                inputs = self._split_groups(qkv)
            fill = None
            if self.spec.pad in INPUT_PADS and self.qkv.bias is not None:
                fill = self._prepare_qk(self.qkv.bias.view(1, 1, 1, 3, C), rotate=False)[0, 0, 0]
        ctx = self._context(xm, fill)
        outs = [run_group(r, t, ctx) for t, r in zip(inputs, self.runners)]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return self.proj_drop(self.proj(out))

    def _forward_ordered(self, xm: torch.Tensor) -> torch.Tensor | None:
        """Groups of unpadded windows: each group's ``x`` is gathered into its window order
        before its qkv projection (C channels, where gathering its qkv moves 3c), attended on
        views (:func:`~attnblocks.backends.eager.ordered_attention`) and gathered back; one
        group is projected in window order and gathered back once, as timm does. ``None``
        where it does not apply (padded maps, long masked windows, a non-eager lowering)."""
        B, H, W, C = xm.shape
        layouts = [r.ordered_layout(H, W, self.spec.pad, B, xm.device) for r in self.runners]
        if any(lay is None for lay in layouts):
            return None
        ctx = self._context(xm, None)
        if self.spec.backend == "auto" and any(
            choose_backend(r.group.partition, xm, ctx) != "eager" for r in self.runners
        ):
            return None
        tokens = xm.reshape(B, H * W, C)
        single = len(self.runners) == 1
        params = None if single else self._group_params()
        gathered: dict = {}  # groups with one layout (a Split of one partition) share x
        outs = []
        for g, runner, layout in zip(self.groups, self.runners, layouts):
            order = None if is_identity_order(layout) else _orders(layout, xm.device)
            t = tokens
            if order is not None:
                if layout not in gathered:
                    gathered[layout] = permute_tokens(tokens, 1, *order)
                t = gathered[layout]
            qkv = self.qkv(t) if single else F.linear(t, *params[g.index])
            o = runner.forward_ordered(qkv.view(B, H * W, 3, g.dim), layout, ctx)
            if single:
                o = self.proj_drop(self.proj(o))
            if order is not None:
                o = permute_tokens(o, 1, order[1], order[0])
            outs.append(o)
        out = outs[0] if single else self.proj_drop(self.proj(torch.cat(outs, dim=-1)))
        return out.view(B, H, W, C)


def _orders(layout: RectLayout, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~attnblocks.backends.eager.window_order` of ``layout`` on ``device``."""
    perm, inv = window_order(layout)
    return perm.to(device), inv.to(device)
