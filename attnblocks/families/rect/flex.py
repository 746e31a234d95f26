"""The flex backend: FlexAttention over window-major tokens with a block mask.

The group's tokens are put in window-major order (the eager lowering's windows, padding
included, laid end to end: token ``t`` of window ``w`` is ``w * T + t``), so a window is one
``T x T`` block on the diagonal (``BLOCK_SIZE = T``) and every other block is skipped. The
``mask_mod`` keeps pairs in the same window that the window mask allows (shift regions, padded
keys); a ``score_mod`` adds the encoders' per-window bias. Run it under ``torch.compile`` for
the fused kernel; without compile FlexAttention materialises the scores.

On CPU FlexAttention has no backward (torch 2.14): a call that records a graph raises.

Under ``torch.compile`` on CPU, inductor's FlexAttention kernel (torch 2.14.1) needs its
inputs to be computed buffers rather than views, and the ``mask_mod``'s mask to be a graph
constant: both are arranged here (:func:`fresh_inputs`), so shifted and padded windows and
stripes compile and match eager; measured 1.2-1.7x slower than the compiled eager lowering on
2 CPU threads, so ``"auto"`` does not pick it on CPU. A per-window bias (``RelPosBias``, ...)
read in the ``score_mod`` still fails in that kernel (``NoValidChoicesError``): that case
raises a clear error; eager flex and CUDA have no such limit.
"""

from __future__ import annotations

from dataclasses import fields
from functools import partial
from typing import Any

import torch

from ..._cache import size_cache
from ..._errors import AttnblocksError
from ...backends.registry import register_lowering
from ...kernels import _check_dropout, check_flex_call, fresh_inputs
from ...lowering import RectLayout, rect_layout
from ...masks import window_mask
from ...partition import Global, Grid, Stripe, Window
from .eager import rect_attention

__all__ = ["block_mask", "flex_lowering", "flex_window_kernel"]


def _mask_mod(allowed: torch.Tensor | None, T: int, b, h, q_idx, kv_idx):
    same = (q_idx // T) == (kv_idx // T)
    if allowed is None:
        return same
    return same & allowed[q_idx // T, q_idx % T, kv_idx % T]


def _score_mod(bias: torch.Tensor, T: int, score, b, h, q_idx, kv_idx):
    return score + bias[h, q_idx % T, kv_idx % T]


@size_cache(64, constant=True)
def _allowed(layout_fields: tuple, device: torch.device) -> torch.Tensor | None:
    """The window mask as a graph constant under compile (inductor's CPU flex kernel takes only
    input or constant buffers in a ``mask_mod``, not ones computed in the graph). The layout
    travels as its field values: Dynamo passes plain data to a constant function."""
    return window_mask(RectLayout(*layout_fields), device)


@size_cache(64)
def block_mask(layout: RectLayout, device: torch.device):
    """The :class:`BlockMask` of a window layout: ``nW`` dense ``T x T`` diagonal blocks."""
    from torch.nn.attention.flex_attention import create_block_mask

    T, L = layout.tokens, layout.num_windows * layout.tokens
    allowed = _allowed(tuple(getattr(layout, f.name) for f in fields(layout)), device)
    mod = partial(_mask_mod, allowed, T)
    return create_block_mask(mod, None, None, L, L, device=device, BLOCK_SIZE=T)


def flex_window_kernel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    layout: RectLayout,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The windows' attention as one FlexAttention call over window-major tokens.

    Shapes: ``q, k, v: (B, nW, h, T, d)``, ``bias: (h, T, T)``; returns ``(B, nW, h, T, d)``.
    """
    from torch.nn.attention.flex_attention import flex_attention

    _check_dropout(dropout_p)
    B, nW, h, T, d = q.shape
    qf, kf, vf = (t.transpose(1, 2).reshape(B, h, nW * T, d) for t in (q, k, v))
    if torch.compiler.is_compiling() and q.device.type == "cpu" and bias is not None:
        raise AttnblocksError(
            f"backend='flex' under torch.compile on CPU cannot add the encoders' per-window "
            f"bias ({tuple(bias.shape)}): inductor's CPU FlexAttention kernel (torch "
            f"{torch.__version__}) rejects a score_mod that reads a tensor computed in the "
            f"graph. Use backend='eager' (or 'auto'), flex without compile, or a CUDA device."
        )
    qf, kf, vf, negated = fresh_inputs(qf, kf, vf)
    score = None if bias is None else partial(_score_mod, bias.to(q.dtype), T)
    o = flex_attention(
        qf, kf, vf, score_mod=score, block_mask=block_mask(layout, q.device), scale=scale
    )
    o = o.view(B, h, nW, T, d).transpose(1, 2)
    return -o if negated else o


@register_lowering("flex", Window, Stripe, Global, Grid)
def flex_lowering(runner: Any, qkv: torch.Tensor, ctx: Any) -> torch.Tensor:
    """One rectangular head group with FlexAttention: ``(B, H, W, 3, c) -> (B, H, W, c)``."""
    g = runner.group
    check_flex_call(g, qkv, ctx)
    layout = rect_layout(g.partition, *qkv.shape[1:-2], pad=ctx.pad)
    fill = None if ctx.fill is None else ctx.fill[:, g.channels[0] : g.channels[1]]
    return rect_attention(
        qkv, layout, g, ctx.scale, ctx.encoders, ctx.dropout_p, fill, kernel=flex_window_kernel
    )
