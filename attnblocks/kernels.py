"""Kernels every family shares: one fused softmax attention (:func:`attend`, with a second
derivative), its explicit-matmul form and the rule that picks it, and FlexAttention's call
checks and its attention without a mask (:func:`flex_attend`).

Shapes: ``q: (B, h, Tq, d)``, ``k, v: (B, h, Tk, d)``, an additive mask broadcastable to
``(B, h, Tq, Tk)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ._errors import AttnblocksError
from ._modes import transforming

__all__ = [
    "MATMUL_MAX_TOKENS",
    "attend",
    "attend_keys",
    "attend_lse",
    "attend_matmul",
    "check_flex_call",
    "flex_attend",
    "fresh_inputs",
    "needs_grad",
    "use_matmul",
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
    if transforming():
        # torch.func (grad, vmap, jvp, hessian): the fused CPU kernel has no forward-mode
        # derivative, no vmap rule (a per-sample loop) and none for a batched mask
        return attend_matmul(q, k, v, mask, scale, dropout_p)
    if (
        not torch.compiler.is_compiling()  # first: a torch.cond branch may not read requires_grad
        and torch.is_grad_enabled()
        and any(t.requires_grad for t in inputs)
        and not torch.jit.is_tracing()
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


def attend_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`attend` (no dropout) and the log-sum-exp of each query's logits, as matmuls with
    every derivative. Partial attentions over disjoint key sets merge by their log-sum-exp:
    ``o = sum_i exp(lse_i - lse) o_i`` with ``lse = logsumexp_i lse_i``.

    Shapes: ``q: (..., Tq, d)``, ``k, v: (..., Tk, d)``, ``mask`` additive and broadcastable to
    ``(..., Tq, Tk)``; returns ``o: (..., Tq, d)`` and ``lse: (..., Tq)``.

    Example:
        >>> q = torch.randn(1, 2, 5, 4)
        >>> o, lse = attend_lse(q, q, q, None, 0.5)
        >>> torch.allclose(o, attend(q, q, q, None, 0.5), atol=1e-6), lse.shape
        (True, torch.Size([1, 2, 5]))
    """
    a = (q * scale) @ k.transpose(-2, -1)
    if mask is not None:
        a = a + mask
    lse = torch.logsumexp(a, -1, keepdim=True)
    return torch.exp(a - lse) @ v, lse.squeeze(-1)


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


def needs_grad(qkv: torch.Tensor, modules: Any) -> bool:
    """True when this call records a graph: grad mode on and an input or parameter needs it."""
    if not torch.is_grad_enabled():
        return False
    return qkv.requires_grad or any(p.requires_grad for m in modules for p in m.parameters())


def fresh_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """``q, k, v`` as computed buffers when inductor compiles for CPU; the flag says they (and
    so the output) are negated.

    inductor's CPU flex kernel (torch 2.14.1) reads the sizes of its inputs' base buffers, which
    for views of 5-d layouts are wrong: a crash for q and k, silently wrong values for v. Negating
    q, k and v (and the output) is exact, leaves ``q k^T`` unchanged, and is not an op inductor
    removes as a no-op (a clone is). Elsewhere the inputs pass unchanged.
    """
    if torch.compiler.is_compiling() and q.device.type == "cpu":
        return -q, -k, -v, True
    return q, k, v, False


def check_flex_call(group: Any, qkv: torch.Tensor, ctx: Any) -> None:
    """Raise for what FlexAttention cannot do in this call: a backward on CPU (a graph is
    recorded), attention dropout. ``group``: the :class:`~attnblocks.GroupPlan` to name."""
    if qkv.device.type == "cpu" and needs_grad(qkv, ctx.encoders):
        raise AttnblocksError(
            f"backend='flex' cannot run {group.partition!r} with gradients on CPU: FlexAttention "
            f"has no CPU backward in torch {torch.__version__}. Use backend='eager' (or 'auto') "
            f"to train, or call under torch.no_grad()."
        )
    _check_dropout(ctx.dropout_p)


def _check_dropout(dropout_p: float) -> None:
    if dropout_p:
        raise AttnblocksError(
            f"backend='flex' has no attention dropout: got attn_drop={dropout_p} in training; "
            f"use backend='eager' or attn_drop=0."
        )


def flex_attend(q, k, v, mask, scale: float, dropout_p: float = 0.0) -> torch.Tensor:
    """``attend`` with FlexAttention: ``q: (B, h, N, d)``, ``k, v: (B, h, M, d)``."""
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, scale=scale)


def attend_keys(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    dropout_p: float = 0.0,
    kernel: Callable | None = None,
) -> torch.Tensor:
    """Every query over every key, no mask: ``kernel`` (``attend``'s signature), or the eager
    rule: explicit matmuls in training with few keys (:func:`use_matmul`; measured:
    ``benchmarks/rules.md``), else SDPA.

    Shapes: ``q: (B, h, N, d)``, ``k, v: (B, h, M, d)`` -> ``(B, h, N, d)``.
    """
    if kernel is None:
        kernel = attend_matmul if use_matmul(k, None) else attend
    return kernel(q, k, v, None, scale, dropout_p)
