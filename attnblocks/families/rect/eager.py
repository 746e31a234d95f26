"""The eager backend: tokens gathered into batched windows, attended on strided views.

Measured rules (CPU; the numbers behind them: ``benchmarks/rules.md``):

- Roll + window partition (and their inverses) are one ``index_select`` each with a cached
  token permutation (:func:`window_order`), none where the order is already row-major
  (:func:`is_identity_order`: horizontal stripes, a global window). Whole tokens are gathered
  (``3c`` contiguous values each); on unpadded maps the layer gathers ``x`` (``C`` values)
  into each group's window order before that group's qkv projection instead, and one group
  is projected back in window order, as timm does (``AttentionLayer._forward_ordered``).
- In window order, windows join the batch axis and q, k, v are strided views of the projected
  tokens (:func:`ordered_attention`): no copy. Windows of up to :data:`LOOP_MAX_TOKENS` tokens,
  at least :data:`LOOP_MIN_WINDOWS` of them (or any with a learned bias in training), run one
  ``baddbmm`` (bias folded in) + softmax + ``bmm`` per head on those views: faster than SDPA
  on the same views for short windows, in inference and training; longer windows, and fewer
  windows (per-call overhead), run one SDPA call (CPU SDPA reads strided q/k/v, its output is
  token-major, and it never stores the scores). SDPA falls back to its unfused path for a bias
  that needs a gradient.
- Shift masks are added per window (``(nW, T, T)`` over the batch of windows); long masked
  windows instead fold windows into the head axis, ``(B, h*nW, T, d)``, so bias and mask are
  one ``(1, h*nW, T, T)`` tensor, never a per-batch ``(B*nW, h, T, T)`` copy.
- In inference the encoders' bias is cached per layout and parameter version.
- Padded maps keep the roll + pad + einops path (:func:`_rect_attention_padded`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from ..._cache import size_cache
from ..._modes import transforming
from ...encoders import EncoderModule
from ...kernels import attend, attend_matmul, use_matmul
from ...lowering import GroupPlan, RectLayout
from ...masks import additive_mask, window_mask

__all__ = [
    "WindowKernel",
    "is_identity_order",
    "loops_per_head",
    "ordered_attention",
    "permute_tokens",
    "rect_attention",
    "window_kernel",
    "window_order",
]

# (q, k, v: (B, nW, h, T, d), bias: (h, T, T) | None, layout, scale, dropout_p) -> (B, nW, h, T, d)
WindowKernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None", RectLayout, float, float],
    torch.Tensor,
]


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
    """Pad ``t: (B, *shape, 3, c)`` at the end of every axis to ``(B, *padded, 3, c)``."""
    if not any(layout.pad):
        return t
    widths = [0, 0, 0, 0]
    for p in reversed(layout.pad):
        widths += [0, p]
    out = F.pad(t, widths)
    if fill is not None:  # padded tokens carry the projection bias, as if x were zero-padded
        real = torch.zeros(*layout.padded, 1, 1, dtype=t.dtype, device=t.device)
        real[tuple(slice(0, n) for n in layout.shape)] = 1
        out = out + (1 - real) * fill
    return out


def _roll(t: torch.Tensor, shift: tuple[int, ...], sign: int) -> torch.Tensor:
    """``t: (B, *shape, ...)`` rolled by ``sign * shift`` over the map's axes."""
    if not any(shift):
        return t
    return torch.roll(t, tuple(sign * s for s in shift), tuple(range(1, len(shift) + 1)))


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
        qkv: ``(B, *shape, 3, c)`` (``(B, H, W, 3, c)`` on 2-D), the group's q, k and v.
        layout: the group's window geometry for this map.
        group: the head group (its heads and channels).
        scale: the logit scale.
        encoders: positional-encoder modules (their ``bias`` and ``value`` hooks are used).
        dropout_p: attention dropout probability (0 in eval).
        fill: ``(3, c)`` values of padded tokens (``pad="timm"``); zeros when ``None``.
        kernel: attends within the windows (:data:`WindowKernel`); ``None`` is the measured
            eager path (:func:`window_kernel`, SDPA, on padded maps).

    Returns:
        ``(B, *shape, c)``.
    """
    if kernel is None and not any(layout.pad):
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
    h = group.num_heads
    pad_first = layout.pad_mode == "torchvision"  # torchvision rolls the padded map
    t = _pad_map(qkv, layout, fill) if pad_first else qkv
    t = _roll(t, layout.shift, -1)
    t = t if pad_first else _pad_map(t, layout, fill)
    pattern = layout.pattern.replace("(h d) ->", "three (h d) -> three")
    q, k, v = rearrange(t, pattern, h=h, **layout.sizes)

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
    out = rearrange(o, inverse, **layout.sizes, **layout.count_sizes)
    if pad_first:
        out = _roll(out, layout.shift, 1)
    if any(layout.pad):
        out = out[(slice(None), *(slice(0, n) for n in layout.shape))]
    if not pad_first:
        out = _roll(out, layout.shift, 1)
    return out


@size_cache(256)
def window_order(layout: RectLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Roll + window partition of an unpadded map as one token permutation, and its inverse.

    Returns:
        ``perm: (nW*T,)`` int64, the row-major token (``y * W + x`` on 2-D) at each window
        slot (window-major, tokens row-major inside a window, after the roll by ``-shift``),
        and ``inv: (N,)``, the window slot of each token.
    """
    idx = torch.arange(math.prod(layout.shape)).view(1, *layout.shape, 1)
    idx = _roll(idx, layout.shift, -1)
    perm = rearrange(idx, layout.pattern, h=1, **layout.sizes).reshape(-1)
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
    if (
        not (torch.is_grad_enabled() and x.requires_grad)
        or transforming()  # torch.func: the autograd function has no vmap rule
    ):
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
    fields = (layout.shape, layout.window, layout.shift, layout.grid, layout.pad_mode)
    if (torch.is_grad_enabled() and a.requires_grad) or not _edge_masked(*fields):
        return (a.view(B, nW, T, T) + mask[:, 0]).view(a.shape)
    # only on 2-D maps (_edge_masked)
    nh, nw = layout.counts
    a5, m4 = a.view(B, nh, nw, T, T), mask.view(nh, nw, T, T)
    a5[:, :, -1] += m4[:, -1]
    a5[:, -1, :-1] += m4[-1, :-1]
    return a


@size_cache(256, constant=True)
def _edge_masked(
    shape: tuple[int, ...],
    window: tuple[int, ...],
    shift: tuple[int, ...],
    grid: bool,
    pad_mode: str,
) -> bool:
    """Whether only the last row and column of windows have a mask (unpadded shifted windows
    on a 2-D map). The layout travels as its fields: under compile a constant function takes
    plain data (a layout object made in the trace cannot be passed out of it)."""
    layout = RectLayout(shape, window, shift, grid, pad_mode)
    allowed = window_mask(layout)
    if allowed is None or layout.ndim != 2:
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
    cost more than they save (measured: ``benchmarks/rules.md``). Elsewhere (CUDA: the fused
    kernels; not measured here) one SDPA call."""
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
    if any(layout.pad) or any(layout.shift):
        return False
    # window order enumerates (n0 n1 ... w0 w1 ...), the map (n0 w0) (n1 w1) ... for blocks or
    # (w0 n0) (w1 n1) ... for grids: the same order unless a window axis longer than 1 comes
    # before a count axis longer than 1 in one and after it in the other
    w, n = layout.window, layout.counts
    later = range(len(w)) if layout.grid else range(1, len(w) + 1)
    return not any(w[a] > 1 and any(c > 1 for c in n[b:]) for a, b in enumerate(later))


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
    B, *shape, _, c = qkv.shape
    N = math.prod(shape)
    h, nW, T = group.num_heads, layout.num_windows, layout.tokens
    d = c // h
    perm, inv = window_order(layout)
    if perm.device != qkv.device:
        perm, inv = perm.to(qkv.device), inv.to(qkv.device)
    if not layout.needs_mask or loops_per_head(T, B * nW, qkv.device):
        # gather whole tokens (3c contiguous values) into window order and attend on views
        same = is_identity_order(layout)
        t = qkv.reshape(B, N, 3, c)
        t = t if same else permute_tokens(t, 1, perm, inv)
        o = ordered_attention(t, layout, group, scale, encoders, dropout_p)
        o = o if same else permute_tokens(o, 1, inv, perm)
        return o.view(B, *shape, c)
    # (B, H, W, 3, h*d) -> (3, B, h, N, d) as a view; gathering N in window order gives
    # (3, B, h, nW*T, d) contiguous: windows fold into the head axis as (B, h*nW, T, d)
    t = permute_tokens(qkv.reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4), 3, perm, inv)
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
    return o.view(B, *shape, c)
