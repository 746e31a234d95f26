"""The eager backend: tokens gathered into batched windows plus one fused attention call.

Measured rules (CPU, fp32, 2 threads, torch 2.14; ``benchmarks/``, stage-1 shapes of the Tiny
models, implementations interleaved in one process):

- Roll + window partition (and their inverses) are one ``index_select`` each with a cached
  token permutation (:func:`window_order`): the q/k/v layout ``(3, B, h, nW, T, d)`` comes out
  of a single gather, where ``torch.roll`` + rearrange made two or three copies.
- Windows are folded into the head axis, ``(B, h*nW, T, d)``, so a bias and a shift mask are one
  ``(1, h*nW, T, T)`` tensor, never a per-batch ``(B*nW, h, T, T)`` copy; in inference (no grad
  to the bias) that combined tensor is cached per layout and parameter version.
- Training (gradients flow): explicit ``softmax(q k^T * scale + bias) v`` matmuls beat CPU SDPA
  when the bias needs a gradient (SDPA then takes its unfused path anyway; Swin-T stage 1 fwd+bwd
  0.89x the time) and for short windows, ``T <= 64`` (CSWin-T stage 1, stripes of 56 tokens:
  0.84x); SDPA wins for longer ones (CSWin-T stage 3, 98 tokens: matmuls 1.28x slower) and in
  inference (matmuls 1.09x slower for Swin, 1.09x for CSWin stage 3, 0.97x for stage 1).
  See :func:`use_matmul`.
- Padded maps keep the roll + pad + einops path (:func:`_rect_attention_padded`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from .._cache import size_cache
from ..encoders import EncoderModule
from ..lowering import GroupPlan, RectLayout
from ..masks import additive_mask

__all__ = [
    "WindowKernel",
    "attend",
    "attend_matmul",
    "permute_tokens",
    "rect_attention",
    "use_matmul",
    "window_kernel",
    "window_order",
]

# (q, k, v: (B, nW, h, T, d), bias: (h, T, T) | None, layout, scale, dropout_p) -> (B, nW, h, T, d)
WindowKernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None", RectLayout, float, float],
    torch.Tensor,
]

MATMUL_MAX_TOKENS = 64  # training with windows of at most this many tokens: matmuls (measured)


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


def attend_matmul(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """:func:`attend` as explicit matmuls; same shapes and result.

    Example:
        >>> q = torch.randn(1, 2, 5, 4)
        >>> torch.allclose(attend_matmul(q, q, q, None, 0.5), attend(q, q, q, None, 0.5), atol=1e-6)
        True
    """
    a = (q * scale) @ k.transpose(-2, -1)
    if mask is not None:
        a = a + mask
    a = a.softmax(-1)
    if dropout_p:
        a = F.dropout(a, dropout_p)
    return a @ v


def use_matmul(q: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """The measured rule: explicit matmuls when training with a learned bias or short windows.

    ``q: (B, h, T, d)``. Inference (no gradient) always uses the fused call.
    """
    if not torch.is_grad_enabled():
        return False
    learned = mask is not None and mask.requires_grad
    if not (learned or q.requires_grad):
        return False
    return learned or q.shape[-2] <= MATMUL_MAX_TOKENS


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
        kernel: attends within the windows (:data:`WindowKernel`); ``None`` is the measured
            eager path (:func:`window_kernel`, SDPA, on padded maps).

    Returns:
        ``(B, H, W, c)``.
    """
    if kernel is None and layout.pad == (0, 0):
        return _rect_attention_gathered(qkv, layout, group, scale, encoders, dropout_p)
    kernel = kernel or window_kernel
    return _rect_attention_padded(qkv, layout, group, scale, encoders, dropout_p, fill, kernel)


def _rect_attention_padded(
    qkv: torch.Tensor,
    layout: RectLayout,
    group: GroupPlan,
    scale: float,
    encoders: Sequence[EncoderModule] = (),
    dropout_p: float = 0.0,
    fill: torch.Tensor | None = None,
    kernel: WindowKernel = window_kernel,
) -> torch.Tensor:
    """:func:`rect_attention` by roll, pad, einops, a window kernel, unpad and roll back: maps
    that need padding, and any replacement kernel (FlexAttention)."""
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
    o = kernel(q, k, v, bias, layout, scale, dropout_p)
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


@size_cache(256)
def window_order(layout: RectLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Roll + window partition of an unpadded map as one token permutation, and its inverse.

    Returns:
        ``perm: (nW*T,)`` int64, the row-major token (``y * W + x``) at each window slot
        (window-major, tokens row-major inside a window, after the roll by ``-shift``), and
        ``inv: (H*W,)``, the window slot of each token.
    """
    (wh, ww), (sh, sw) = layout.window, layout.shift
    idx = torch.arange(layout.H * layout.W).view(1, layout.H, layout.W, 1)
    if sh or sw:
        idx = torch.roll(idx, (-sh, -sw), (1, 2))
    perm = rearrange(idx, layout.pattern, h=1, wh=wh, ww=ww).reshape(-1)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    return perm, inv


class _PermuteTokens(torch.autograd.Function):
    """``x.index_select(dim, perm)`` for a permutation ``perm``, back-propagated as a gather
    with ``inv`` (index_select's own backward zero-fills and scatter-adds: measured 2-3x
    slower for Swin's and CSWin's stage-1 q/k/v)."""

    @staticmethod
    def forward(x: torch.Tensor, dim: int, perm: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        return x.index_select(dim, perm)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        ctx.dim, ctx.inv = inputs[1], inputs[3]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        return grad.index_select(ctx.dim, ctx.inv), None, None, None


def permute_tokens(
    x: torch.Tensor, dim: int, perm: torch.Tensor, inv: torch.Tensor
) -> torch.Tensor:
    """Reorder axis ``dim`` of ``x`` by the permutation ``perm`` (``inv`` its inverse).

    Example:
        >>> perm = torch.tensor([2, 0, 1])
        >>> x = torch.tensor([10.0, 20.0, 30.0], requires_grad=True)
        >>> y = permute_tokens(x, 0, perm, torch.argsort(perm))
        >>> y.tolist(), torch.autograd.grad(y, x, torch.tensor([1.0, 2.0, 3.0]))[0].tolist()
        ([30.0, 10.0, 20.0], [2.0, 3.0, 1.0])
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.index_select(dim, perm)
    return _PermuteTokens.apply(x, dim, perm, inv)


_LOGIT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _logit_bias(
    encoders: Sequence[EncoderModule], group: GroupPlan, layout: RectLayout, dtype, device
) -> torch.Tensor | None:
    """Encoders' biases plus the window mask as one ``(1, h*nW, T, T)`` tensor, or ``None``.

    Cached (per encoder list, group, layout and parameter version) when no gradient flows to
    the encoders, i.e. in inference.
    """
    owners = [e for e in encoders if type(e).bias is not EncoderModule.bias]
    cacheable = bool(owners) and not (
        torch.is_grad_enabled() and any(p.requires_grad for e in owners for p in e.parameters())
    )
    key = None
    if cacheable and isinstance(encoders, torch.nn.Module):
        params = tuple((p.data_ptr(), p._version) for e in owners for p in e.parameters())
        key = (group.index, layout, dtype, device, params)
        hit = _LOGIT_CACHE.get(encoders, {}).get(key)
        if hit is not None:
            return hit
    bias = None
    for e in owners:
        b = e.bias(group, layout)
        if b is not None:
            bias = b if bias is None else bias + b
    mask = additive_mask(layout, dtype, device)  # (nW, 1, T, T)
    if bias is None and mask is None:
        return None
    h, nW, T = group.num_heads, layout.num_windows, layout.tokens
    if bias is None:
        full = mask[:, 0][None].expand(h, nW, T, T)
    else:
        bias = bias.to(dtype)[:, None]  # (h, 1, T, T)
        full = bias.expand(h, nW, T, T) if mask is None else bias + mask[:, 0][None]
    full = full.reshape(1, h * nW, T, T)
    if key is not None:
        _LOGIT_CACHE.setdefault(encoders, {})
        cache = _LOGIT_CACHE[encoders]
        if len(cache) > 64:
            cache.clear()
        cache[key] = full
    return full


def _rect_attention_gathered(
    qkv: torch.Tensor,
    layout: RectLayout,
    group: GroupPlan,
    scale: float,
    encoders: Sequence[EncoderModule],
    dropout_p: float,
) -> torch.Tensor:
    """:func:`rect_attention` on an unpadded map: one gather in, one attention call, one out."""
    B, H, W, _, c = qkv.shape
    h, nW, T = group.num_heads, layout.num_windows, layout.tokens
    d = c // h
    perm, inv = window_order(layout)
    if perm.device != qkv.device:
        perm, inv = perm.to(qkv.device), inv.to(qkv.device)
    # (B, H, W, 3, h*d) -> (3, B, h, N, d) as a view; gathering N in window order gives
    # (3, B, h, nW*T, d) contiguous: windows fold into the head axis as (B, h*nW, T, d)
    t = permute_tokens(qkv.reshape(B, H * W, 3, h, d).permute(2, 0, 3, 1, 4), 3, perm, inv)
    q, k, v = t.view(3, B, h * nW, T, d).unbind(0)
    mask = _logit_bias(encoders, group, layout, q.dtype, q.device)
    att = attend_matmul if use_matmul(q, mask) else attend
    o = att(q, k, v, mask, scale, dropout_p).view(B, h, nW, T, d)
    for e in encoders:
        extra = e.value(group, v.view(B, h, nW, T, d).transpose(1, 2), layout)
        if extra is not None:
            o = o + extra.transpose(1, 2)
    # (B, h, nW*T, d) -> (B, nW*T, h, d) as a view; gathering tokens back in map order
    o = permute_tokens(o.reshape(B, h, nW * T, d).transpose(1, 2), 1, inv, perm)
    return o.view(B, H, W, c)
