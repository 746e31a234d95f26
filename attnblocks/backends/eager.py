"""The eager backend: tokens gathered into batched windows, attended on strided views.

Measured rules (CPU, fp32, 2 threads, torch 2.14; ``benchmarks/``, stage-1 shapes of the Tiny
models, implementations interleaved in one process):

- Roll + window partition (and their inverses) are one ``index_select`` each with a cached
  token permutation (:func:`window_order`), none where the order is already row-major
  (:func:`is_identity_order`: horizontal stripes, a global window). Whole tokens are gathered
  (``3c`` contiguous values each); on unpadded maps the layer gathers ``x`` (``C`` values)
  into each group's window order before that group's qkv projection instead, and one group
  is projected back in window order, as timm does (``AttentionLayer._forward_ordered``).
- In window order, windows join the batch axis and q, k, v are strided views of the projected
  tokens (:func:`ordered_attention`): no copy. Windows of up to :data:`LOOP_MAX_TOKENS` tokens,
  at least :data:`LOOP_MIN_WINDOWS` of them (or any with a learned bias in training), run one
  ``baddbmm`` (bias folded in) + softmax + ``bmm`` per head on those views. Inference:
  MaxViT-T stage 1 windows (512 x 2 heads x 49 tokens) 13 ms against 18.5 ms for SDPA on the
  same views and 21 ms after a copy to contiguous; 98 tokens 1.15x faster; from 196 tokens
  SDPA wins (1.1-1.3x), and below 16 windows too (per-call overhead); CPU SDPA reads strided
  q/k/v and its output is token-major. Training (fwd+bwd): 56 tokens 10.4 vs 15.3 ms for SDPA,
  98 tokens 3.7 vs 5.0 ms, 196 tokens 13.0 vs 14.3 ms; beyond that SDPA keeps memory down (it
  never stores the scores). SDPA falls back to its unfused path for a bias that needs a
  gradient.
- Shift masks are added per window (``(nW, T, T)`` over the batch of windows); long masked
  windows instead fold windows into the head axis, ``(B, h*nW, T, d)``, so bias and mask are
  one ``(1, h*nW, T, T)`` tensor, never a per-batch ``(B*nW, h, T, T)`` copy.
- In inference the encoders' bias is cached per layout and parameter version.
- Padded maps keep the roll + pad + einops path (:func:`_rect_attention_padded`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from .._cache import size_cache
from ..encoders import EncoderModule
from ..lowering import GroupPlan, RectLayout
from ..masks import additive_mask, window_mask

__all__ = [
    "WindowKernel",
    "attend",
    "attend_matmul",
    "is_identity_order",
    "loops_per_head",
    "ordered_attention",
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
    inputs = (q, k, v) if mask is None else (q, k, v, mask)
    if (
        not torch.compiler.is_compiling()  # first: a torch.cond branch may not read requires_grad
        and torch.is_grad_enabled()
        and any(t.requires_grad for t in inputs)
        and not torch.jit.is_tracing()
        and torch._C._functorch.peek_interpreter_stack() is None  # not under torch.func
    ):
        return _TwiceDifferentiable.apply(q, k, v, mask, scale, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


class _TwiceDifferentiable(torch.autograd.Function):
    """:func:`attend` with a second derivative. The fused kernels SDPA picks (CPU flash, CUDA
    flash / memory-efficient) have none, and which backward will be asked for is unknown at
    forward time. So the forward records SDPA on detached inputs; a first-order backward runs
    that graph (the fused backward, unchanged); a backward with ``create_graph=True`` (grad
    mode on inside it: a gradient penalty, a Hessian-vector product) recomputes the plain
    matmul-softmax form, which has every derivative. Dropout cannot be recomputed: that case
    raises.
    """

    @staticmethod
    def forward(ctx: Any, q, k, v, mask, scale: float, dropout_p: float) -> torch.Tensor:
        inner = [
            None if t is None else t.detach().requires_grad_(t.requires_grad)
            for t in (q, k, v, mask)
        ]
        with torch.enable_grad():
            out = F.scaled_dot_product_attention(
                *inner[:3], attn_mask=inner[3], dropout_p=dropout_p, scale=scale
            )
        ctx.inner, ctx.out, ctx.scale, ctx.dropout_p = inner, out, scale, dropout_p
        ctx.save_for_backward(q, k, v, mask)
        return out.detach()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        q, k, v, mask = ctx.saved_tensors
        needed = [i for i, t in enumerate((q, k, v, mask)) if t is not None and t.requires_grad]
        grads: list[torch.Tensor | None] = [None] * 6
        if not torch.is_grad_enabled():  # first order: the fused kernel's backward
            if ctx.out is None:  # a second pass (retain_graph): the same kernel again
                if ctx.dropout_p > 0:
                    raise RuntimeError(
                        "attnblocks: a second backward pass through attention dropout "
                        f"(attn_drop={ctx.dropout_p}) cannot redraw its mask; use attn_drop=0."
                    )
                ctx.inner = [
                    None if t is None else t.detach().requires_grad_(t.requires_grad)
                    for t in (q, k, v, mask)
                ]
                with torch.enable_grad():
                    ctx.out = F.scaled_dot_product_attention(
                        *ctx.inner[:3], attn_mask=ctx.inner[3], dropout_p=0.0, scale=ctx.scale
                    )
            found = torch.autograd.grad(
                ctx.out, [ctx.inner[i] for i in needed], grad, allow_unused=True
            )
            ctx.inner = ctx.out = None  # freed with the pass, as saved tensors are
        else:  # create_graph: the plain form, which has every derivative
            if ctx.dropout_p > 0:
                raise RuntimeError(
                    "attnblocks: a second derivative through attention dropout "
                    f"(attn_drop={ctx.dropout_p}) cannot be recomputed; use attn_drop=0 or "
                    "model.eval() for a gradient penalty."
                )
            logits = (q @ k.transpose(-2, -1)) * ctx.scale
            if mask is not None:
                logits = logits + mask
            out = torch.softmax(logits, dim=-1) @ v
            found = torch.autograd.grad(
                out,
                [(q, k, v, mask)[i] for i in needed],
                grad,
                create_graph=True,
                allow_unused=True,
            )
        for i, g in zip(needed, found):  # unused: an empty batch's mask
            grads[i] = torch.zeros_like((q, k, v, mask)[i]) if g is None else g
        return tuple(grads)


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


def _head_bias(
    encoders: Sequence[EncoderModule], group: GroupPlan, layout: RectLayout, dtype, device
) -> torch.Tensor | None:
    """The encoders' logit biases summed, ``(h, T, T)``, or ``None``.

    Made every call: a cache keyed on the encoders' parameters would miss edits through
    ``.data`` (an EMA teacher), which change neither ``data_ptr`` nor ``_version``.
    """
    bias = None
    for e in encoders:
        if type(e).bias is EncoderModule.bias:
            continue
        b = e.bias(group, layout)
        if b is not None:
            bias = b if bias is None else bias + b
    return None if bias is None else bias.to(dtype)


def _fold_windows(
    bias: torch.Tensor | None, mask: torch.Tensor | None, group: GroupPlan, layout: RectLayout
) -> torch.Tensor | None:
    """``bias: (h, T, T)`` plus ``mask: (nW, 1, T, T)`` as ``(1, h*nW, T, T)``, or ``None``."""
    if bias is None and mask is None:
        return None
    h, nW, T = group.num_heads, layout.num_windows, layout.tokens
    if bias is None:
        full = mask[:, 0][None].expand(h, nW, T, T)
    else:
        bias = bias[:, None]  # (h, 1, T, T)
        full = bias.expand(h, nW, T, T) if mask is None else bias + mask[:, 0][None]
    return full.reshape(1, h * nW, T, T)


def ordered_attention(
    qkv: torch.Tensor,
    layout: RectLayout,
    group: GroupPlan,
    scale: float,
    encoders: Sequence[EncoderModule] = (),
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention within the windows of tokens that are already in window order.

    Nothing is copied on the way in: windows join the batch axis and q, k, v are strided
    views of ``qkv``. Short windows, enough of them (:func:`loops_per_head`, or any with a
    learned bias in training), run one ``baddbmm`` (bias folded in), softmax and ``bmm`` per
    head on those views: no q/k/v copy, the output written token-major. Others run one SDPA
    call on the views (it reads strides, and its output is token-major too). Masks (shift
    regions) are added per window.

    Shapes: ``qkv: (B, nW*T, 3, c)``, windows one after another, tokens row-major inside a
    window (:func:`window_order` of an unpadded layout); returns ``(B, nW*T, c)`` in the same
    order.
    """
    B, N, _, c = qkv.shape
    h, nW, T = group.num_heads, layout.num_windows, layout.tokens
    d = c // h
    t = qkv.view(B * nW, T, 3, h, d)
    bias = _head_bias(encoders, group, layout, qkv.dtype, qkv.device)  # (h, T, T)
    mask = additive_mask(layout, qkv.dtype, qkv.device)  # (nW, 1, T, T)
    learned = bias is not None and bias.requires_grad
    grad = torch.is_grad_enabled() and (qkv.requires_grad or learned)
    hooks = [e for e in encoders if type(e).value is not EncoderModule.value]
    values = None  # V for the value hooks, (B*nW, T, h, d)
    if loops_per_head(T, B * nW, qkv.device) or (grad and learned):
        q, k, v = _split_heads(t)
        o = _attend_per_head(q, k, v, bias, mask, layout, B, scale, dropout_p)
        if hooks:  # from the same views: indexing qkv would back-propagate a zero-filled copy
            values = v[0][:, :, None] if h == 1 else torch.stack(v, 2)
    else:
        q, k, v4 = t.permute(2, 0, 3, 1, 4).unbind(0)  # (B*nW, h, T, d) views
        m = None if bias is None else bias[None]
        if mask is not None:  # windows differ: a (B*nW, h, T, T) copy (the layer and
            # _rect_attention_gathered fold long masked windows into the heads instead)
            m = mask.expand(nW, h, T, T) if m is None else mask + m
            m = m.expand(B, nW, h, T, T).reshape(B * nW, h, T, T)
        o = attend(q, k, v4, m, scale, dropout_p).transpose(1, 2)  # (B*nW, T, h, d)
        values = v4.transpose(1, 2)
    for e in hooks:
        extra = e.value(group, values.reshape(B, nW, T, h, d).transpose(2, 3), layout)
        if extra is not None:
            o = o + extra.transpose(2, 3).reshape(o.shape)
    return o.reshape(B, N, c)


def _split_heads(
    t: torch.Tensor,
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """``t: (B*nW, T, 3, h, d)`` -> per-head q, k, v views ``(B*nW, T, d)``.

    Unbind, not indexing: its backward is one stack, where each index would back-propagate a
    zero-filled copy of the whole qkv; one unbind over ``(3 h)`` where the strides allow.
    """
    Bn, T, _, h, d = t.shape
    if t.stride(2) == h * t.stride(3) and t.stride(3) == d * t.stride(4):
        heads = t.view(Bn, T, 3 * h, d).unbind(2)
        return heads[:h], heads[h : 2 * h], heads[2 * h :]
    q, k, v = (x.unbind(2) for x in t.unbind(2))
    return q, k, v


def _add_mask(a: torch.Tensor, mask: torch.Tensor, B: int, layout: RectLayout) -> torch.Tensor:
    """``a: (B*nW, T, T)`` logits plus ``mask: (nW, 1, T, T)``.

    In inference, shifted windows get the mask in place on the last row and column of windows
    only: the others wrap nothing and their mask is zero (Swin-T stage 1: 15 of 64 windows).
    With a graph recorded, one out-of-place add (an in-place add on views would make autograd
    clone the whole gradient).
    """
    nW, T = mask.shape[0], mask.shape[-1]
    if (torch.is_grad_enabled() and a.requires_grad) or not _edge_masked(layout):
        return (a.view(B, nW, T, T) + mask[:, 0]).view(a.shape)
    nh, nw = layout.counts
    a5, m4 = a.view(B, nh, nw, T, T), mask.view(nh, nw, T, T)
    a5[:, :, -1] += m4[:, -1]
    a5[:, -1, :-1] += m4[-1, :-1]
    return a


@size_cache(256, constant=True)
def _edge_masked(layout: RectLayout) -> bool:
    """Whether only the last row and column of windows have a mask (unpadded shifted windows)."""
    allowed = window_mask(layout)
    if allowed is None:
        return False
    nh, nw = layout.counts
    inner = allowed.view(nh, nw, *allowed.shape[1:])[:-1, :-1]
    return bool(inner.all())


LOOP_MAX_TOKENS = 128  # per-head bmm up to this many tokens a window, SDPA beyond (measured)
LOOP_MIN_WINDOWS = 16  # ... and from this many windows in the batch (fewer: per-op overhead)


def loops_per_head(tokens: int, windows: int, device: torch.device | str = "cpu") -> bool:
    """The measured rule: on CPU, windows of at most :data:`LOOP_MAX_TOKENS` tokens, at least
    :data:`LOOP_MIN_WINDOWS` of them (batch x windows), run head by head (bmm) rather than in
    one SDPA call, in inference and in training. With fewer windows the loop's small calls
    cost more than they save (2 windows x 4 heads x 98 tokens: 0.60 vs 0.46 ms; 16 windows:
    3.6 vs 4.5 ms). Elsewhere (CUDA: the fused kernels; not measured here) one SDPA call."""
    return (
        tokens <= LOOP_MAX_TOKENS
        and windows >= LOOP_MIN_WINDOWS
        and torch.device(device).type == "cpu"
    )


def _attend_per_head(
    qs: Sequence[torch.Tensor],
    ks: Sequence[torch.Tensor],
    vs: Sequence[torch.Tensor],
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    layout: RectLayout,
    B: int,
    scale: float,
    dropout_p: float,
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias + mask) v`` head by head on strided views.

    ``qs, ks, vs``: per head ``(B*nW, T, d)``; ``bias: (h, T, T)``, ``mask: (nW, 1, T, T)``;
    returns ``(B*nW, T, h, d)``.
    """
    h, (Bn, T, _) = len(qs), qs[0].shape
    outs = []
    for j in range(h):
        if bias is None:
            a = torch.bmm(qs[j] * scale, ks[j].transpose(1, 2))
        else:
            a = torch.baddbmm(bias[j].expand(Bn, T, T), qs[j], ks[j].transpose(1, 2), alpha=scale)
        if mask is not None:
            a = _add_mask(a, mask, B, layout)
        a = a.softmax(-1)
        if dropout_p:
            a = F.dropout(a, dropout_p)
        outs.append(torch.bmm(a, vs[j]))
    return outs[0][:, :, None] if h == 1 else torch.stack(outs, 2)


def is_identity_order(layout: RectLayout) -> bool:
    """Whether the window order of an unpadded, unrolled layout is the row-major order (no
    gather needed): windows one row high or as wide as the map (horizontal stripes, one
    global window); grids of single tokens, of one-row windows in one column, or of one window.

    Example:
        >>> from attnblocks import Stripe, Window
        >>> from attnblocks.lowering import rect_layout
        >>> is_identity_order(rect_layout(Stripe(2, axis="h"), 8, 8))
        True
        >>> is_identity_order(rect_layout(Window(4), 8, 8))
        False
    """
    if layout.pad != (0, 0) or layout.shift != (0, 0):
        return False
    (wh, ww), (nh, nw) = layout.window, layout.counts
    if layout.grid:
        return (wh == 1 and (ww == 1 or nw == 1)) or (nh == 1 and nw == 1)
    return wh == 1 or nw == 1


def _rect_attention_gathered(
    qkv: torch.Tensor,
    layout: RectLayout,
    group: GroupPlan,
    scale: float,
    encoders: Sequence[EncoderModule],
    dropout_p: float,
) -> torch.Tensor:
    """:func:`rect_attention` on an unpadded map: one gather in, attention, one gather out.

    Windows without a mask, and masked ones that loop over heads (:func:`loops_per_head`), take
    :func:`ordered_attention`; the other masked ones fold into the head axis, so the mask is
    one ``(1, h*nW, T, T)`` tensor.
    """
    B, H, W, _, c = qkv.shape
    h, nW, T = group.num_heads, layout.num_windows, layout.tokens
    d = c // h
    perm, inv = window_order(layout)
    if perm.device != qkv.device:
        perm, inv = perm.to(qkv.device), inv.to(qkv.device)
    if not layout.needs_mask or loops_per_head(T, B * nW, qkv.device):
        # gather whole tokens (3c contiguous values) into window order and attend on views
        same = is_identity_order(layout)
        t = qkv.reshape(B, H * W, 3, c)
        t = t if same else permute_tokens(t, 1, perm, inv)
        o = ordered_attention(t, layout, group, scale, encoders, dropout_p)
        o = o if same else permute_tokens(o, 1, inv, perm)
        return o.view(B, H, W, c)
    # (B, H, W, 3, h*d) -> (3, B, h, N, d) as a view; gathering N in window order gives
    # (3, B, h, nW*T, d) contiguous: windows fold into the head axis as (B, h*nW, T, d)
    t = permute_tokens(qkv.reshape(B, H * W, 3, h, d).permute(2, 0, 3, 1, 4), 3, perm, inv)
    q, k, v = t.view(3, B, h * nW, T, d).unbind(0)
    mask = _fold_windows(
        _head_bias(encoders, group, layout, q.dtype, q.device),
        additive_mask(layout, q.dtype, q.device),
        group,
        layout,
    )
    att = attend_matmul if use_matmul(q, mask) else attend
    o = att(q, k, v, mask, scale, dropout_p).view(B, h, nW, T, d)
    for e in encoders:
        extra = e.value(group, v.view(B, h, nW, T, d).transpose(1, 2), layout)
        if extra is not None:
            o = o + extra.transpose(1, 2)
    # (B, h, nW*T, d) -> (B, nW*T, h, d) as a view; gathering tokens back in map order
    o = permute_tokens(o.reshape(B, h, nW * T, d).transpose(1, 2), 1, inv, perm)
    return o.view(B, H, W, c)
