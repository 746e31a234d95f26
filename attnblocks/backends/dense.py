"""The dense backend: attention over all ``N`` tokens with the dense mask. The tests' oracle.

Nothing here uses the window layout of the fast path. The mask comes from the partition's
oracle (:func:`~attnblocks.masks.partition_oracle`, written from token coordinates) and
positional encoders are expressed densely from *window coordinates*: every real token's window
id and its (row, col) in its window's frame (``register_coords``, per partition type). An
encoder module type gives its dense form with ``register_dense_encoder``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from .. import hooks
from .._errors import AttnblocksError, fmt_size
from ..encoders import EncoderModule, LePEModule, RelPosBiasModule
from ..lowering import GroupPlan
from ..masks import partition_oracle
from ..partition import Dilated, Partition
from .registry import register_lowering

__all__ = [
    "WindowCoords",
    "dense_attention",
    "dense_lowering",
    "register_coords",
    "register_dense_encoder",
    "window_coords",
]


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    scale: float,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Plain masked softmax attention over all ``N`` tokens.

    Shapes: ``q, k, v: (B, h, N, d)``; ``allowed: (N, N)`` or ``(h, N, N)`` bool (True where
    query ``i`` may attend to key ``j``); ``bias`` additive, broadcastable to ``(B, h, N, N)``.
    Rows with no allowed key give zeros. Returns ``(B, h, N, d)``.

    Example:
        >>> q = torch.randn(1, 1, 3, 2)
        >>> dense_attention(q, q, q, torch.eye(3, dtype=torch.bool), 1.0).allclose(q)
        True
    """
    logits = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        logits = logits + bias
    logits = logits.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


@dataclass(frozen=True)
class WindowCoords:
    """Window frame of every real token (row-major, ``n = y * W + x`` on 2-D).

    ``window: (N,)`` int64 window id; ``pos: (N, n)`` int64, the position inside the window's
    frame per axis ((row, col) on 2-D).
    """

    window: np.ndarray
    pos: np.ndarray

    def same_window(self) -> np.ndarray:
        """``(N, N)`` bool: whether tokens ``i`` and ``j`` share a window."""
        return self.window[:, None] == self.window[None, :]

    def offsets(self) -> np.ndarray:
        """``(N, N, n)``: ``pos[i] - pos[j]`` (meaningful within a window)."""
        return self.pos[:, None, :] - self.pos[None, :, :]


Coords = Callable[[Partition, int, int, str], WindowCoords]


def register_coords(*types: type) -> Callable[[Coords], Coords]:
    """Decorator: ``fn(partition, H, W, pad) -> WindowCoords`` for these partition types (the
    ``coords`` hook of :mod:`attnblocks.hooks`)."""

    def deco(fn: Coords) -> Coords:
        return hooks.register("coords", types, fn)

    return deco


def window_coords(partition: Partition, *shape: int, pad: str = "mask") -> WindowCoords:
    """The registered window coordinates of a concrete partition on a map of size ``shape``.

    Example:
        >>> from attnblocks import Window
        >>> window_coords(Window(2), 2, 4).window.tolist()
        [0, 0, 1, 1, 0, 0, 1, 1]
    """
    fn = hooks.lookup(partition, "coords", None)
    if fn is not None:
        return fn(partition, *shape, pad=pad)
    raise AttnblocksError(
        f"backend='dense': {partition!r} has no window coordinates (register_coords), which its "
        f"positional encoders need."
    )


DenseBias = Callable[[Any, GroupPlan, WindowCoords], torch.Tensor]
DenseValue = Callable[[Any, GroupPlan, torch.Tensor, WindowCoords], torch.Tensor]


def register_dense_encoder(
    module_type: type, bias: DenseBias | None = None, value: DenseValue | None = None
) -> None:
    """Give an encoder module type its dense form.

    ``bias(module, group, coords) -> (h_g, N, N)`` additive logits; ``value(module, group, v,
    coords)`` with ``v: (B, h_g, N, d)`` returns the term added to the output, same shape.
    (The ``dense_encoder`` hook of :mod:`attnblocks.hooks`.)
    """
    hooks.register("dense_encoder", [module_type], (bias, value))


def _dense_form(module: EncoderModule) -> tuple[DenseBias | None, DenseValue | None]:
    form = hooks.lookup(module, "dense_encoder", None)
    if form is not None:
        return form
    if module.acts_per_window():
        raise AttnblocksError(
            f"backend='dense': the encoder {type(module).__name__} has no dense form "
            f"(register_dense_encoder)."
        )
    return (None, None)


def _relpos_dense_bias(module: RelPosBiasModule, group: GroupPlan, co: WindowCoords):
    if isinstance(group.partition, Dilated):
        part = group.partition
        rank = co.pos.shape[-1]
        if rank != 2 or not part.is_plain:  # as the eager runner refuses them
            why = f"a {rank}-D map" if rank != 2 else "stride or causal axes"
            raise AttnblocksError(
                f"RelPosBias on {part!r} (head group {group.index}): NAT's offset table is "
                f"defined for plain 2-D neighbourhoods, not for {why}."
            )
        return _offset_dense_bias(module.tables[group.index], part, co)
    table = module.tables[group.index]
    size = np.array(module.sizes[group.index])
    same, off = co.same_window(), co.offsets()
    if len(size) != off.shape[-1]:
        extent = tuple(co.pos.max(0) + 1)
        raise AttnblocksError(
            f"RelPosBias: head group {group.index} has a table for {len(size)}-D windows, but "
            f"{group.partition!r} makes {off.shape[-1]}-D windows of {extent} tokens."
        )
    too_far = same & (np.abs(off) >= size).any(-1)
    if too_far.any():
        extent = co.pos.max(0) + 1
        raise AttnblocksError(
            f"RelPosBias: head group {group.index} has a table for "
            f"{fmt_size(size)} windows, but {group.partition!r} makes "
            f"{fmt_size(extent)} windows."
        )
    off = np.where(same[..., None], off, 0)  # pairs across windows are masked anyway
    if module.index == "torchvision":  # the full window's index, its top-left T x T block
        return _torchvision_dense_bias(table, tuple(size), co, same)
    index = np.zeros(off.shape[:-1], dtype=np.int64)
    for a, m in enumerate(size):
        index = index * (2 * m - 1) + off[..., a] + m - 1
    index = torch.from_numpy(index).to(table.device)
    return table[index].permute(2, 0, 1)


def _torchvision_dense_bias(table, size, co: WindowCoords, same: np.ndarray) -> torch.Tensor:
    """torchvision's clipped-window bias, densely: the token at frame position ``p`` of a
    window of extent ``e`` is slot ``ravel(p, e)``, and reads the full window's relative
    position between the tokens at those slots of a ``size`` window."""
    extent = tuple(int(v) for v in co.pos.max(0) + 1)
    slot = np.ravel_multi_index(tuple(co.pos.T), extent)
    full = np.stack(np.unravel_index(slot, size), 1)  # the slot's place in the full window
    off = full[:, None, :] - full[None, :, :]
    index = np.zeros(off.shape[:-1], dtype=np.int64)
    for a, m in enumerate(size):
        index = index * (2 * m - 1) + off[..., a] + m - 1
    index = torch.from_numpy(np.where(same, index, 0)).to(table.device)
    return table[index].permute(2, 0, 1)


def _offset_dense_bias(table: torch.Tensor, partition: Dilated, co: WindowCoords):
    """NAT's bias ``table: (h, 2k-1, 2k-1)`` for every token pair, ``(h, N, N)``: entry
    ``[h, (yk - yq)/r + k-1, (xk - xq)/r + k-1]``; pairs off the query's sub-grid or further than
    ``k-1`` steps are in no window (masked) and read the centre."""
    k, r = np.array(partition.kernel_size), np.array(partition.dilation_size)
    step = -co.offsets()  # key minus query, in tokens, (N, N, 2)
    near = ((step % r == 0) & (np.abs(step) <= r * (k - 1))).all(-1)
    step = np.where(near[..., None], step // r, 0)
    index = torch.from_numpy(step + k - 1).to(table.device)
    return table[:, index[..., 0], index[..., 1]]


def _lepe_dense_value(module: LePEModule, group: GroupPlan, v: torch.Tensor, co: WindowCoords):
    if isinstance(group.partition, Dilated):  # as the eager runner: no per-window values
        raise AttnblocksError(
            f"backend='dense': {type(module).__name__} adds per-window values, which "
            f"{group.partition!r} (head group {group.index}) does not support."
        )
    c0, c1 = group.channels
    k, p = module.kernel, module.kernel // 2
    same, off = co.same_window(), co.offsets()
    n = off.shape[-1]
    if n != module.ndim:
        raise AttnblocksError(
            f"backend='dense': {type(module).__name__} was built for {module.ndim}-D maps, "
            f"head group {group.index} ({group.partition!r}) has {n}-D windows."
        )
    # shifts[o, i, j]: token j sits at kernel offset o from token i, in i's window
    shifts = np.stack(
        [
            same & np.all(off == p - np.array(o), axis=-1)
            for o in itertools.product(range(k), repeat=n)
        ]
    )
    s = torch.from_numpy(shifts).to(v)
    h = group.num_heads
    w = module.conv.weight[c0:c1].reshape(h, -1, k**n).permute(2, 0, 1)  # (k^n, h, d)
    w = w[:, None, :, None, :].to(v)
    b = rearrange(module.conv.bias[c0:c1], "(h d) -> h 1 d", h=h).to(v)
    # one matmul (the k*k shifted copies of V), then the per-channel weights elementwise
    shifted = s[:, None, None] @ v  # (k*k, B, h, N, d)
    return (shifted * w).sum(0) + b


register_dense_encoder(RelPosBiasModule, bias=_relpos_dense_bias)
register_dense_encoder(LePEModule, value=_lepe_dense_value)


@register_lowering("dense", Partition)
def dense_lowering(runner: Any, qkv: torch.Tensor, ctx: Any) -> torch.Tensor:
    """One head group as dense masked attention: ``qkv: (B, H, W, 3, c) -> (B, H, W, c)``."""
    g = runner.group
    if runner.kv_source != "tokens":
        raise AttnblocksError(f"backend='dense' has no lowering for {g.partition!r}.")
    if ctx.pad not in ("mask", "error"):
        raise AttnblocksError(f"backend='dense' needs pad='mask' or 'error', got {ctx.pad!r}.")
    B, *shape, _, c = qkv.shape
    forms = [(e, *_dense_form(e)) for e in ctx.encoders]
    coords = None
    has_coords = hooks.lookup(g.partition, "coords", None) is not None
    if (ctx.pad == "error" and has_coords) or any(bf or vf for _, bf, vf in forms):
        coords = window_coords(g.partition, *shape, pad=ctx.pad)  # also checks pad="error"
    allowed = torch.from_numpy(partition_oracle(g.partition, *shape)).to(qkv.device)
    t = qkv.reshape(B, math.prod(shape), 3, g.num_heads, c // g.num_heads)
    q, k, v = t.permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, d)
    bias = None
    for e, bf, _ in forms:
        if bf is not None:
            term = bf(e, g, coords).to(q.dtype)
            bias = term if bias is None else bias + term
    o = dense_attention(q, k, v, allowed, ctx.scale, bias, ctx.dropout_p)
    for e, _, vf in forms:
        if vf is not None:
            o = o + vf(e, g, v, coords)
    return o.transpose(1, 2).reshape(B, *shape, c)
