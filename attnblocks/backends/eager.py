"""The eager backend: einops rearrangement into batched windows plus one fused attention call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from ..encoders import EncoderModule
from ..lowering import GroupPlan, RectLayout
from ..masks import additive_mask

__all__ = ["WindowKernel", "attend", "rect_attention", "window_kernel"]

# (q, k, v: (B, nW, h, T, d), bias: (h, T, T) | None, layout, scale, dropout_p) -> (B, nW, h, T, d)
WindowKernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None", RectLayout, float, float],
    torch.Tensor,
]


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Softmax attention ``softmax(q k^T * scale + mask) v`` with one fused call.

    Shapes: ``q: (B, h, Tq, d)``, ``k, v: (B, h, Tk, d)``, ``mask`` additive and broadcastable
    to ``(B, h, Tq, Tk)``; returns ``(B, h, Tq, d)``.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


def window_kernel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    layout: RectLayout,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention within each window with one fused SDPA call, masked per ``layout``.

    Shapes: ``q, k, v: (B, nW, h, T, d)``, ``bias: (h, T, T)``; returns ``(B, nW, h, T, d)``.
    """
    B, nW, h, T, d = q.shape
    mask = additive_mask(layout, q.dtype, q.device)
    if mask is not None:  # per-window mask: fold windows into the head axis, (1, nW*h, T, T)
        full = mask if bias is None else mask + bias.to(q.dtype)
        full = full.expand(nW, h, T, T).reshape(1, nW * h, T, T)
        shape = (B, nW * h, T, d)
        o = attend(q.reshape(shape), k.reshape(shape), v.reshape(shape), full, scale, dropout_p)
    else:  # at most a per-head bias: windows join the batch axis, (1, h, T, T)
        m = None if bias is None else bias.to(q.dtype)[None]
        shape = (B * nW, h, T, d)
        o = attend(q.reshape(shape), k.reshape(shape), v.reshape(shape), m, scale, dropout_p)
    return o.view(B, nW, h, T, d)


def _pad_map(t: torch.Tensor, layout: RectLayout, fill: torch.Tensor | None) -> torch.Tensor:
    """Pad ``t: (B, H, W, 3, c)`` on the bottom/right to ``(B, Hp, Wp, 3, c)``."""
    ph, pw = layout.pad
    if ph == 0 and pw == 0:
        return t
    out = F.pad(t, (0, 0, 0, 0, 0, pw, 0, ph))
    if fill is not None:  # padded tokens carry the projection bias, as if x were zero-padded
        real = torch.zeros(layout.Hp, layout.Wp, 1, 1, dtype=t.dtype, device=t.device)
        real[: layout.H, : layout.W] = 1
        out = out + (1 - real) * fill
    return out


def rect_attention(
    qkv: torch.Tensor,
    layout: RectLayout,
    group: GroupPlan,
    scale: float,
    encoders: Sequence[EncoderModule] = (),
    dropout_p: float = 0.0,
    fill: torch.Tensor | None = None,
    kernel: WindowKernel | None = None,
) -> torch.Tensor:
    """Attention of one head group over a rectangular partition (windows, stripes, grids).

    Args:
        qkv: ``(B, H, W, 3, c)``, the group's channels of q, k and v.
        layout: the group's window geometry for this map.
        group: the head group (its heads and channels).
        scale: the logit scale.
        encoders: positional-encoder modules (their ``bias`` and ``value`` hooks are used).
        dropout_p: attention dropout probability (0 in eval).
        fill: ``(3, c)`` values of padded tokens (``pad="timm"``); zeros when ``None``.
        kernel: attends within the windows (:data:`WindowKernel`); :func:`window_kernel`
            (SDPA) when ``None``.

    Returns:
        ``(B, H, W, c)``.
    """
    H, W = qkv.shape[1:3]
    h = group.num_heads
    (wh, ww), (sh, sw) = layout.window, layout.shift
    t = torch.roll(qkv, (-sh, -sw), (1, 2)) if sh or sw else qkv
    t = _pad_map(t, layout, fill)
    pattern = layout.pattern.replace("(h d) ->", "three (h d) -> three")
    q, k, v = rearrange(t, pattern, h=h, wh=wh, ww=ww)

    bias = None
    for e in encoders:
        b = e.bias(group, layout)
        if b is not None:
            bias = b if bias is None else bias + b
    o = (kernel or window_kernel)(q, k, v, bias, layout, scale, dropout_p)
    for e in encoders:
        extra = e.value(group, v, layout)
        if extra is not None:
            o = o + extra
    inverse = " -> ".join(reversed(layout.pattern.split(" -> ")))
    nh, nw = layout.counts
    out = rearrange(o, inverse, wh=wh, ww=ww, nh=nh, nw=nw)
    if layout.pad != (0, 0):
        out = out[:, :H, :W]
    if sh or sw:
        out = torch.roll(out, (sh, sw), (1, 2))
    return out
