"""NaN containment: a non-finite token reaches exactly the queries that may attend to it.

A lowering attends over tiles, windows or a dense map wider than each query's key set and
masks the rest; a masked key still enters the arithmetic (``0 * NaN = NaN`` in ``P @ V``, and
an additive mask does not stop a NaN logit). So one NaN token would spread to every query
that shares a tile or a window with it. :func:`contained` wraps one head group's attention:

- **Finite inputs** (the fast path, unchanged): the group's output is checked with one
  reduction (a sum, smaller than the q/k/v it came from); finite, it is returned as is. A
  finite output cannot hide a leak: a leaked NaN or inf is never finite.
- **Otherwise** the group is recomputed with the non-finite q, k and v rows zeroed (finite
  everywhere, so the masks hold), and the dependents are marked NaN: the same lowering run
  with ``q = k = 0``, no biases, and ``v`` the indicator of non-finite key/value rows gives
  each allowed key exactly ``1 / |key set|``, so a query's mark is positive exactly when its
  key set (the dense oracle's mask) holds a non-finite token. A query whose own q is
  non-finite is marked too. Outputs that were non-finite with finite inputs (overflow) are
  returned as computed.

Under ``torch.compile`` the inputs' rows are zeroed where non-finite (for finite inputs a
no-op) and the dependents are marked inside a ``torch.cond`` (no graph break; its branch adds
one attention to the graph and some compile time, not run for finite inputs). A program of
one branch (``torch.export``, ``jit.trace``) and ``torch.func`` transforms always run the
recomputed form: the same results, with one more attention pass for masked lowerings.

Encoders that spread values outside the attention (LePE's depthwise conv on V, CPE's conv on
the input) are not part of the dense oracle's mask: their reach is their kernel's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from ._modes import transforming

__all__ = ["contained", "own_keys_contained"]

# fn(qkv, ctx) -> out: one head group's attention; qkv: (..., 3, c), out: (..., c)
GroupFn = Callable[[torch.Tensor, object], torch.Tensor]


def contained(fn: GroupFn, qkv: torch.Tensor, ctx) -> torch.Tensor:
    """``fn(qkv, ctx)`` with non-finite q/k/v rows reaching only their dependents.

    Shapes: ``qkv: (..., 3, c)`` (token axes first, then q/k/v, then channels) ->
    ``(..., c)``, as ``fn`` returns.
    """
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        return _recompute(fn, qkv, ctx)  # a program of one branch: the recomputed form
    if torch.compiler.is_compiling():
        # no data-dependent branch: attend on the zeroed rows (for finite inputs the same
        # tensor), and mark dependents inside a torch.cond (one more attention in the graph)
        finite = torch.isfinite(qkv).all(-1)
        out = fn(qkv.masked_fill(~finite[..., None], 0), ctx)
        return torch.cond(finite.all(), _same, lambda o, f: _mark(fn, ctx, o, f), (out, finite))
    if qkv.device.type == "meta":  # no values: nothing to contain
        return fn(qkv, ctx)
    if _graph_tracing() or transforming():
        return _recompute(fn, qkv, ctx)  # make_fx, vmap: no data-dependent branch either
    out = fn(qkv, ctx)
    if math.isfinite(out.sum(dtype=torch.float32).item()):
        return out
    if bool(torch.isfinite(qkv).all()):  # overflow of finite inputs: as computed
        return out
    return _recompute(fn, qkv, ctx)


def _graph_tracing() -> bool:
    """A fake, proxy or functional mode (make_fx, FakeTensor): values cannot be read. Other
    dispatch modes (FlopCounterMode) see plain tensors and take the eager check."""
    keys = torch._C._TorchDispatchModeKey
    return (
        any(
            torch._C._get_dispatch_mode(getattr(keys, k)) is not None
            for k in ("FAKE", "PROXY", "FUNCTIONAL")
        )
        or type(torch.empty(0)) is not torch.Tensor
    )


def _same(out: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
    return out.clone()  # a cond branch may not return its input itself


def _recompute(fn: GroupFn, qkv: torch.Tensor, ctx) -> torch.Tensor:
    """The group on zeroed non-finite rows, its non-finite dependents marked NaN."""
    finite = torch.isfinite(qkv).all(-1)  # (..., 3): per token, q / k / v
    return _mark(fn, ctx, fn(qkv.masked_fill(~finite[..., None], 0), ctx), finite)


def _mark(fn: GroupFn, ctx, out: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
    """``out`` with NaN at the queries whose q is non-finite or whose key set holds a
    non-finite key or value (``finite: (..., 3)``, per token q / k / v)."""
    kv_bad = ~(finite[..., 1] & finite[..., 2])
    zero = out.new_zeros(out.shape)
    poison = kv_bad[..., None].to(out.dtype).expand_as(zero)
    probe = torch.stack([zero, zero, poison], dim=-2)  # q = k = 0: equal scores
    # equal scores whatever the scale: a constant one keeps a symbolic float (Dynamo's dynamic
    # scale after recompiles) out of the torch.cond branch, whose operands may not hold one
    plain = dataclasses.replace(ctx, encoders=(), dropout_p=0.0, fill=None, scale=1.0)
    hit = (fn(probe, plain) > 0) | ~finite[..., 0, None]
    return out.masked_fill(hit, math.nan)


def own_keys_contained(fn: GroupFn, qkv: torch.Tensor, ctx) -> torch.Tensor:
    """``fn(qkv, ctx)`` with each token's non-finite q (k, v) rows marking its own output
    NaN: for groups that make their own keys (``qkv: (..., 1, c)``, queries only; a
    non-finite key reaches every query, as the math says) and windows of one token. SDPA
    given one key returns its value whatever the logit, so a NaN query would not show."""
    out = fn(qkv, ctx)
    if qkv.device.type == "meta":
        return out
    one_branch = torch.compiler.is_exporting() or torch.jit.is_tracing()
    eager = not (torch.compiler.is_compiling() or one_branch or _graph_tracing() or transforming())
    if eager and math.isfinite(qkv.sum(dtype=torch.float32).item()):
        return out
    bad = ~torch.isfinite(qkv).all(-1).all(-1)
    return out.masked_fill(bad[..., None], math.nan)
