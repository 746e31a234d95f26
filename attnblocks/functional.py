"""Stateless ops on tensors: the attention core on ``q, k, v``, and the window cut of the
rectangular lowering.

:func:`attention` is the attention of an :class:`~attnblocks.AttentionLayer` without its
projections: ``q, k, v`` in NATTEN's layout ``(B, H, W, heads, D)``, any partition (or a
:class:`~attnblocks.Split` of partitions over head groups), run by the same group runners and
backends as the layer. ``layer(x)`` equals ``layer.proj(attention(q, k, v, ...))`` for the
layer's own projections of ``x`` (tests/test_functional.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._core import attention_core, plan_call, prepare_qk
from ._errors import AttnblocksError, fmt_shape, fmt_size
from .backends.dense import dense_attention
from .encoders import EncoderModule
from .heads import Split
from .kernels import attend_keys, check_flex_call
from .kernels import flex_attend as _flex_attend
from .lowering import BACKENDS, PAD_MODES, GroupPlan, RectLayout, resolve_groups
from .partition import Downsample, Global, Partition
from .runners import GroupRunner, RunContext, check_rank, runner_for
from .score import ScoreModule

__all__ = ["attention", "partition_windows", "unpartition_windows"]

Keys = torch.Tensor | Sequence[torch.Tensor]
_RUNNERS: dict[GroupPlan, GroupRunner] = {}  # parameter-free runners, one per head group


def _runner(group: GroupPlan) -> GroupRunner:
    """The (parameter-free) runner module of a token-reading head group, made once."""
    runner = _RUNNERS.get(group)
    if runner is None:
        cls = runner_for(group.partition)
        if cls.kv_source != "tokens":  # pragma: no cover - guarded by the caller
            raise AttnblocksError(f"{group.partition!r} makes its own keys: pass them as k, v.")
        runner = _RUNNERS[group] = cls(None, group, group.dim, group.num_heads)
    return runner


def _per_group(t: Keys, name: str, groups: tuple[GroupPlan, ...], rank: int) -> list[torch.Tensor]:
    """``t`` (one tensor, cut by heads) or one tensor per group, as per-group tensors; ``rank``
    map axes, as the queries'."""
    if isinstance(t, torch.Tensor):
        if t.dim() != rank + 3:
            raise AttnblocksError(
                f"attention: {name} must be (B, *map, heads, D) with {rank} map axes as q has, "
                f"got {name}.shape={fmt_shape(t.shape)}."
            )
        return [t[..., g.heads[0] : g.heads[1], :] for g in groups]
    ts = list(t)
    if len(ts) != len(groups):
        raise AttnblocksError(
            f"attention: {name} is a sequence of {len(ts)} tensors, but there are "
            f"{len(groups)} head groups (give one tensor, or one per group)."
        )
    for g, x in zip(groups, ts):
        if not isinstance(x, torch.Tensor) or x.dim() != rank + 3 or x.shape[-2] != g.num_heads:
            shape = fmt_shape(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AttnblocksError(
                f"attention: {name}[{g.index}] must be (B, *key map, {g.num_heads}, D) for head "
                f"group {g.index} ({g.partition!r}), got {shape}."
            )
    return ts


def _groups(partition, heads: Split | None, num_heads: int, dim: int) -> tuple[GroupPlan, ...]:
    if isinstance(partition, Split):
        if heads is not None:
            raise AttnblocksError(
                f"attention: partition={partition!r} already splits the heads; drop "
                f"heads={heads!r}."
            )
        if partition.partitions is None:
            raise AttnblocksError(
                f"attention: {partition!r} gives no partitions; pass partition=Stripe(7), "
                f"heads={partition!r} (a generic partition) or Split(p0, p1, ...)."
            )
        partition, heads = None, partition
    elif partition is not None and not isinstance(partition, Partition):
        raise TypeError(
            f"attention: partition must be a Partition or a Split of partitions, got {partition!r}."
        )
    if heads is not None and not isinstance(heads, Split):
        raise TypeError(f"attention: heads must be a Split such as Split(2), got {heads!r}.")
    if partition is not None and partition.is_generic() and (heads is None or heads.count == 1):
        raise AttnblocksError(
            f"attention: {partition!r} means one form per head group, but there is no head "
            f"split: add heads=Split({_group_count(partition)}) or give the partition its form."
        )
    return resolve_groups(partition, heads, num_heads, dim)


def _group_count(partition: Partition) -> int:
    for name in ("dilation", "ratio"):
        value = getattr(partition, name, None)
        if isinstance(value, tuple):
            return len(value)
    return 2


def attention(
    q: torch.Tensor,
    k: Keys,
    v: Keys,
    partition: Partition | Split | None = None,
    *,
    heads: Split | None = None,
    scale: float | None = None,
    pe: Sequence[EncoderModule] | EncoderModule | None = None,
    score: ScoreModule | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
    pad: str = "mask",
) -> torch.Tensor:
    """Multi-head attention of ``q`` over ``k, v`` restricted by a partition.

    The attention core of :class:`~attnblocks.AttentionLayer`, without projections: the layer
    and this function run the same core (``attnblocks._core``: one call plan, the same group
    runners and backends), so the result equals the layer's (and the dense oracle
    :func:`~attnblocks.dense_mask`'s) for every partition.

    Args:
        q: ``(B, H, W, heads, D)`` queries on an ``H x W`` map (NATTEN's layout).
        k: ``(B, Hk, Wk, heads, D)`` keys. For token partitions (windows,
            stripes, grids, sliding windows) ``Hk, Wk = H, W``: the keys are tokens of a map of
            the query's size (their own map, or another one: cross-attention). :class:`Global`
            takes keys of any size (every query attends to every key); :class:`Downsample`
            takes the reduced map, ``(H // ratio, W // ratio)``. Under a split, ``k`` and ``v``
            may be sequences with one tensor per head group (groups reduced differently).
        v: ``(B, Hk, Wk, heads, D)`` values, on the keys' map (a sequence where ``k`` is one).
        partition: a concrete :class:`~attnblocks.Partition` (``None``: :class:`Global`), a
            generic one with ``heads``, or ``Split(p0, p1, ...)``: group ``i`` takes heads
            ``[i*heads/n, (i+1)*heads/n)`` and partition ``p_i``.
        heads: ``Split(n)`` for a generic partition (``Stripe(7)``: vertical, horizontal, ...).
        scale: the logit scale; ``None`` is ``D ** -0.5`` (with a ``score``: none, the score
            sets its own).
        pe: positional-encoder modules built for these head groups, e.g. ``layer.pe`` or
            ``RelPosBias().build(groups, heads * D, heads)``; their ``rotate``, ``bias``,
            ``offset_bias`` and ``value`` hooks act as in the layer (``prepare``, which acts on
            the layer input, is not run).
        score: a built score module replacing ``q . k * scale``, e.g. ``layer.score`` or
            ``Cosine().build(heads)`` (SwinV2's scaled cosine attention, with its learned
            per-head logit scale): it acts on q and k per token before the partitioning, as in
            the layer; ``k`` must then be one tensor.
        dropout_p: attention dropout (apply it only in training, as with SDPA).
        backend: ``"auto"``, ``"eager"``, ``"flex"`` or ``"dense"``, as ``Attention(backend=)``.
        pad: what happens where the map does not divide into windows, as ``Attention(pad=)``
            (``"timm"`` pads with zeros: there is no projection bias here).

    Shapes:
        ``q: (B, H, W, heads, D)``, ``k, v: (B, Hk, Wk, heads, D)`` -> ``(B, H, W, heads, D)``.

    Example:
        >>> from attnblocks import Cosine, Neighborhood, Split, Stripe, Window
        >>> q = k = v = torch.randn(2, 14, 21, 4, 8)
        >>> attention(q, k, v, Window(7, shift=3)).shape
        torch.Size([2, 14, 21, 4, 8])
        >>> attention(q, k, v, Split(Stripe(7, axis="v"), Neighborhood(5))).shape
        torch.Size([2, 14, 21, 4, 8])
        >>> kr = torch.randn(2, 3, 5, 4, 8)  # keys of a map reduced by 4
        >>> attention(q, kr, kr, Downsample(4)).shape
        torch.Size([2, 14, 21, 4, 8])
        >>> attention(q, k, v, Window(7), score=Cosine().build(4)).shape  # SwinV2's score
        torch.Size([2, 14, 21, 4, 8])
    """
    if not isinstance(q, torch.Tensor) or q.dim() < 4:
        shape = fmt_shape(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        raise AttnblocksError(
            f"attention: q must be (B, *map, heads, D) (NATTEN's layout: (B, H, W, heads, D), "
            f"(B, L, heads, D), (B, T, H, W, heads, D)), got q.shape={shape}."
        )
    if backend not in BACKENDS:
        raise AttnblocksError(f"attention: backend must be one of {BACKENDS}, got {backend!r}.")
    if pad not in PAD_MODES:
        raise AttnblocksError(f"attention: pad must be one of {PAD_MODES}, got {pad!r}.")
    if backend == "dense" and pad not in ("mask", "error"):
        raise AttnblocksError(
            f"attention: backend='dense' needs pad='mask' or 'error', got pad={pad!r}."
        )
    if not 0.0 <= dropout_p < 1.0:
        raise AttnblocksError(f"attention: dropout_p must be in [0, 1), got {dropout_p}.")
    B, *size, h, D = q.shape
    groups = _groups(partition, heads, h, h * D)
    ks, vs = _per_group(k, "k", groups, len(size)), _per_group(v, "v", groups, len(size))
    for g, kg, vg in zip(groups, ks, vs):
        if (
            kg.shape != vg.shape
            or kg.dim() != q.dim()
            or kg.shape[0] != B
            or kg.shape[-2:] != (g.num_heads, D)
        ):
            raise AttnblocksError(
                f"attention: head group {g.index} ({g.partition!r}) needs k and v of shape "
                f"(B={B}, *key map, {g.num_heads}, D={D}) with as many map axes as q; got k "
                f"{fmt_shape(kg.shape)} and v {fmt_shape(vg.shape)} for "
                f"q.shape={fmt_shape(q.shape)}."
            )
    encoders = _encoders(pe)
    check_rank("attention", len(size), encoders)
    _check_score(score, scale, h)
    scale = 1.0 if score is not None else D**-0.5 if scale is None else scale
    rotates = any(getattr(e, "rotates", False) for e in encoders)
    if rotates or score is not None:  # per token on the map, before any partitioning
        if not isinstance(k, torch.Tensor):
            raise AttnblocksError(
                "attention: rotary encoders and a score act on q and k before the partitioning: "
                "give k as one tensor for all head groups."
            )
        if rotates and tuple(k.shape[1:-2]) != tuple(size):
            raise AttnblocksError(
                f"attention: rotary encoders need k on the query's map "
                f"{fmt_size(size)}, got k.shape={fmt_shape(k.shape)}."
            )
        q, kk = prepare_qk(q, k, encoders, score)
        ks = [kk[..., g.heads[0] : g.heads[1], :] for g in groups]
    modules = [*encoders, *([] if score is None else [score])]

    def grad() -> bool:
        return torch.is_grad_enabled() and (
            any(t.requires_grad for t in (q, *ks, *vs))
            or any(p.requires_grad for m in modules for p in m.parameters())
        )

    plan = plan_call(groups, (B, *size), q.device, pad, backend, grad)
    runners, inputs = [], []
    for g, kg, vg in zip(groups, ks, vs):
        qg = q[..., g.heads[0] : g.heads[1], :]
        if _given_keys(g, qg, kg):
            runners.append(partial(_all_keys, g))
            inputs.append((qg, kg, vg))
        else:
            runners.append(_runner(g))
            inputs.append(torch.stack((qg, kg, vg), dim=-3).view(B, *size, 3, g.dim))
    ctx = RunContext(q.new_empty(0), scale, encoders, dropout_p, pad, None, backend)
    outs = attention_core(plan, runners, inputs, ctx)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
    return out.view(B, *size, h, D)


def _check_score(score, scale: float | None, heads: int) -> None:
    if score is None:
        return
    if not isinstance(score, ScoreModule):
        raise TypeError(
            f"attention: score must be a built score module (layer.score, or "
            f"Cosine().build(heads)), got {score!r}."
        )
    if scale is not None:
        raise AttnblocksError(
            f"attention: {score.spec!r} sets its own logit scale; drop scale={scale!r}."
            if hasattr(score, "spec")
            else f"attention: the score sets its own logit scale; drop scale={scale!r}."
        )
    logit_scale = getattr(score, "logit_scale", None)
    if logit_scale is not None and logit_scale.shape[0] != heads:
        raise AttnblocksError(
            f"attention: the score was built for {logit_scale.shape[0]} heads (logit_scale "
            f"{fmt_shape(logit_scale.shape)}), but q has {heads}."
        )


def _encoders(pe) -> nn.ModuleList | list:
    if pe is None:
        return []
    if isinstance(pe, nn.ModuleList):
        return pe
    pes = [pe] if isinstance(pe, nn.Module) else list(pe) if isinstance(pe, (list, tuple)) else [pe]
    for e in pes:
        if not isinstance(e, EncoderModule):
            raise TypeError(
                f"attention: pe must be built encoder modules (e.g. layer.pe, or "
                f"RelPosBias().build(groups, dim, heads)), got {type(e).__name__}."
            )
    return pes


def _given_keys(g: GroupPlan, q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether group ``g`` attends every key of another map (checked): reduced keys, or
    :class:`Global` over keys of another size; else its keys are tokens of the query's map."""
    size, ksize = tuple(q.shape[1:-2]), tuple(k.shape[1:-2])
    part = g.partition
    if isinstance(part, Downsample):
        expected = part.reduced_size(*size)
        if ksize != expected:
            raise AttnblocksError(
                f"attention: {part!r} (head group {g.index}) attends to the map reduced by "
                f"{part.ratio}: on a {fmt_size(size)} map its keys are "
                f"{fmt_size(expected)}, got k.shape={fmt_shape(k.shape)}.\n  Hint: "
                f"use Global() for keys of any size."
            )
        return True
    if ksize != size:
        if isinstance(part, Global):
            return True
        raise AttnblocksError(
            f"attention: {part!r} (head group {g.index}) pairs each query with keys at its own "
            f"map positions, so k and v must be on the query's {fmt_size(size)} map, got "
            f"k.shape={fmt_shape(k.shape)}.\n  Hint: Global() and Downsample() take keys of "
            f"another size."
        )
    return False


def _all_keys(
    g: GroupPlan,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ctx: RunContext,
    backend: str,
) -> torch.Tensor:
    """Every query of ``q: (B, H, W, h, D)`` over every key of ``k, v: (B, Hk, Wk, h, D)``
    (reduced keys, cross-attention) on the planned backend: the core's :func:`attend_keys`
    (the kernel of the :class:`~attnblocks.Downsample` runner), FlexAttention without a mask,
    or the dense oracle. Returns ``(B, H, W, h * D)``."""
    for e in ctx.encoders:
        if e.acts_per_window():
            raise AttnblocksError(
                f"attention: {type(e).__name__} adds per-window biases or values, which need "
                f"keys on the query's map; head group {g.index} ({g.partition!r}) has keys of "
                f"another size."
            )
    B, *size, h, D = q.shape
    N = math.prod(size)
    qt = q.reshape(B, N, h, D).transpose(1, 2)
    kt, vt = (t.reshape(B, -1, h, D).transpose(1, 2) for t in (k, v))
    if backend == "flex":
        check_flex_call(g, q, ctx)
        o = attend_keys(qt, kt, vt, ctx.scale, ctx.dropout_p, _flex_attend)
    elif backend == "dense":
        allowed = torch.ones(N, kt.shape[2], dtype=torch.bool, device=q.device)
        o = dense_attention(qt, kt, vt, allowed, ctx.scale, None, ctx.dropout_p)
    else:
        o = attend_keys(qt, kt, vt, ctx.scale, ctx.dropout_p)
    return o.transpose(1, 2).reshape(B, *size, h * D)


def partition_windows(x: torch.Tensor, layout: RectLayout, heads: int = 1) -> torch.Tensor:
    """Roll, zero-pad and cut a map into the layout's windows.

    Shapes: ``x: (B, H, W, h*d) -> (B, nW, h, T, d)`` with ``nW`` windows of ``T`` tokens.

    Example:
        >>> from attnblocks import Window, rect_layout
        >>> lay = rect_layout(Window(2, shift=1), 3, 4)
        >>> partition_windows(torch.randn(1, 3, 4, 6), lay, heads=2).shape
        torch.Size([1, 4, 2, 4, 3])
    """
    dims = tuple(range(1, layout.ndim + 1))
    if any(layout.shift):
        x = torch.roll(x, tuple(-s for s in layout.shift), dims)
    if any(layout.pad):
        x = F.pad(x, [0, 0] + [w for p in reversed(layout.pad) for w in (0, p)])
    return rearrange(x, layout.pattern, h=heads, **layout.sizes)


def unpartition_windows(w: torch.Tensor, layout: RectLayout) -> torch.Tensor:
    """The inverse of :func:`partition_windows`: ``(B, nW, h, T, d) -> (B, H, W, h*d)``.

    Example:
        >>> from attnblocks import Grid, rect_layout
        >>> lay = rect_layout(Grid(2), 5, 4)
        >>> x = torch.randn(2, 5, 4, 3)
        >>> torch.equal(unpartition_windows(partition_windows(x, lay), lay), x)
        True
    """
    inverse = " -> ".join(reversed(layout.pattern.split(" -> ")))
    x = rearrange(w, inverse, **layout.sizes, **layout.count_sizes)
    if any(layout.pad):
        x = x[(slice(None), *(slice(0, n) for n in layout.shape))]
    if any(layout.shift):
        x = torch.roll(x, layout.shift, tuple(range(1, layout.ndim + 1)))
    return x
