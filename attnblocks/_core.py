"""The attention core: what :class:`~attnblocks.AttentionLayer` and
:func:`attnblocks.functional.attention` both run once q, k and v exist.

One call is three steps, each written once:

- :func:`plan_call` (plain data, :class:`CallPlan`): each head group's backend, ``"auto"``
  decided here, once per call, before any projection; and whether the groups take their
  tokens in their own window order (groups of unpadded windows on the eager backend).
- :func:`prepare_qk`: the per-token q/k transforms on the map, before any partitioning
  (rotary encoders, a score such as :class:`~attnblocks.Cosine`).
- :func:`attention_core`: each head group on its runner or registered lowering, from packed
  ``(B, H, W, 3, c)`` q/k/v on the map, ``(B, N, 3, c)`` in the plan's token order, or given
  keys of another size.

The layer projects into the layout the plan asks for: in token order it gathers ``x`` (``C``
values a token) before its qkv projection, rather than the projected ``3c``, and projects a
single group's output back in that order, as timm does; ``functional.attention`` packs the
caller's q, k, v. Neither knows which backend or kernel runs a group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .backends.registry import auto_backend
from .families.rect.eager import is_identity_order, permute_tokens, window_order
from .lowering import GroupPlan, RectLayout
from .runners import GroupRunner, RunContext, run_group

__all__ = [
    "CallPlan",
    "attention_core",
    "plan_call",
    "prepare_qk",
    "restore_order",
    "to_order",
    "token_order",
]

Order = tuple[torch.Tensor, torch.Tensor]  # (perm, inverse), both (N,) int64


@dataclass(frozen=True)
class CallPlan:
    """How one call runs its head groups.

    ``backends[i]``: the backend of group ``i`` (never ``"auto"``). ``layouts``: ``None`` when
    the groups take their q/k/v on the map; else per group the layout whose window order
    (:func:`token_order`) its tokens come in.

    Example:
        >>> from attnblocks import Attention, Window
        >>> layer = Attention(partition=Window(4)).build(8, 2)
        >>> plan = plan_call(layer.groups, (16, 8, 8), "cpu", "mask", "auto", lambda: False,
        ...                  layer.runners)
        >>> plan.backends, plan.layouts[0].counts
        (('eager',), (2, 2))
    """

    groups: tuple[GroupPlan, ...]
    backends: tuple[str, ...]
    layouts: tuple[RectLayout, ...] | None = None


def plan_call(
    groups: Sequence[GroupPlan],
    shape: tuple[int, ...],
    device: torch.device | str,
    pad: str,
    backend: str,
    grad: Callable[[], bool],
    runners: Sequence[GroupRunner] | None = None,
) -> CallPlan:
    """The plan of one call on a ``(B, *map)`` map (``(B, H, W)``, ``(B, T, H, W)``, ...).

    ``grad()`` says whether the call records a graph (asked only where ``"auto"`` needs it).
    ``runners``: given when the caller can hand the groups their tokens in window order (q/k/v
    projected per token, nothing transformed on the map first); the plan takes that order
    where every group runs eagerly and has a layout for it (``runner.ordered_layout``).
    """
    device = torch.device(device)
    backends = tuple(
        auto_backend(g.partition, device, grad) if backend == "auto" else backend for g in groups
    )
    layouts = None
    if runners is not None and all(b == "eager" for b in backends):
        B, *size = shape
        found = []
        for r in runners:
            ordered = getattr(r, "ordered_layout", None)
            layout = None if ordered is None else ordered(tuple(size), pad, B, device)
            if layout is None:
                break
            found.append(layout)
        else:
            layouts = tuple(found)
    return CallPlan(tuple(groups), backends, layouts)


def token_order(layout: RectLayout, device: torch.device) -> Order | None:
    """The window order of an unpadded layout on ``device``, ``(perm, inverse)``, or ``None``
    where it is the row-major order itself.

    Example:
        >>> from attnblocks import Window, rect_layout
        >>> perm, inv = token_order(rect_layout(Window(2), 2, 4), torch.device("cpu"))
        >>> perm.tolist()
        [0, 1, 4, 5, 2, 3, 6, 7]
    """
    if is_identity_order(layout):
        return None
    perm, inv = window_order(layout)
    return perm.to(device), inv.to(device)


def to_order(t: torch.Tensor, order: Order | None) -> torch.Tensor:
    """``t: (B, N, ...)`` with its tokens in ``order``."""
    return t if order is None else permute_tokens(t, 1, *order)


def restore_order(t: torch.Tensor, order: Order | None) -> torch.Tensor:
    """The inverse of :func:`to_order`: ``t: (B, N, ...)`` back in row-major order."""
    return t if order is None else permute_tokens(t, 1, order[1], order[0])


def prepare_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    encoders: Sequence[nn.Module] = (),
    score: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-token transforms of q and k on the map, before any partitioning: the rotary
    encoders' ``rotate`` (absolute positions), then the score's ``prepare_qk``.

    Shapes: ``q: (B, H, W, h, d)``, ``k: (B, Hk, Wk, h, d)`` (rotary encoders: on q's map) ->
    the same shapes.
    """
    for e in encoders:
        if getattr(e, "rotates", False):
            q, k = e.rotate(q, k)
    if score is not None:
        q, k = score.prepare_qk(q, k)
    return q, k


Input = torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def attention_core(
    plan: CallPlan,
    runners: Sequence[GroupRunner | Callable],
    inputs: Sequence[Input],
    ctx: RunContext,
) -> list[torch.Tensor]:
    """Each head group's attention, on its planned backend.

    ``inputs[i]``, group ``i``'s projected tokens: ``(B, H, W, 3, c)`` packed q/k/v on the map
    (``(B, H, W, 1, c)``, its queries, for a runner that makes its own keys); where the plan
    has layouts, ``(B, N, 3, c)`` in its token order; or ``(q, k, v)`` with
    ``q: (B, H, W, h, d)`` and keys ``(B, Hk, Wk, h, d)`` of another map, every query over
    every key: ``runners[i]`` is then a callable ``(q, k, v, ctx, backend) -> (B, H, W, c)``
    (``functional.attention``'s, on :func:`~attnblocks.kernels.attend_keys`).

    Returns per group ``(B, H, W, c)``, or ``(B, N, c)`` in the token order it came in.
    """
    outs = []
    for i, (runner, t, backend) in enumerate(zip(runners, inputs, plan.backends)):
        if isinstance(t, tuple):
            outs.append(runner(*t, ctx, backend))
        elif plan.layouts is not None:
            outs.append(runner.forward_ordered(t, plan.layouts[i], ctx))
        else:
            outs.append(run_group(runner, t, ctx, backend))
    return outs
