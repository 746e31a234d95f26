"""Cost model: multiply-accumulates, attended keys per query and attention-matrix memory.

``cost(layer_or_spec, (H, W))`` counts what the chosen lowering computes, not an ideal: the
eager and flex lowerings compute whole (padded) windows, the dense one all ``N x N`` pairs.
MACs are the matmul family (the qkv and output projections, ``q k^T`` and ``attn v``) plus the
encoders' own (LePE's depthwise conv); softmax, masks and gathers are not counted. Per head group
the numbers come from a function registered for (backend, partition type) with
:func:`register_cost` and, per encoder spec type, :func:`register_encoder_cost`; ``"auto"`` is
counted as ``"eager"`` (what it runs on CPU). A group that makes its own keys and values
(:class:`~attnblocks.Downsample`) takes its channels out of the fused ``[k | v]`` projection, and
its own path (reduction, ``kv`` linear) is counted with the encoders, from a function registered
per partition type with :func:`register_kv_cost`. Sliding windows and downsampled keys are
registered in :mod:`attnblocks.families.sliding.cost`, :mod:`attnblocks.families.reduced`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import hooks
from ._errors import AttnblocksError
from .attention import Attention
from .lowering import GroupPlan
from .masks import partition_oracle
from .partition import Partition
from .pe import CPE, AxialRoPE, ContinuousPosBias, LePE, PositionalEncoder, RelPosBias

__all__ = [
    "Cost",
    "GroupCost",
    "cost",
    "register_cost",
    "register_encoder_cost",
    "register_kv_cost",
]


@dataclass(frozen=True)
class GroupCost:
    """One head group: ``attention_macs`` (``q k^T`` + ``attn v``), attended keys per real query
    (``keys_mean``, ``keys_max``), ``scores`` (score entries computed, batch included),
    ``mask_bytes`` (masks and biases the lowering materialises) and ``frames`` (positions an
    encoder's per-window value path runs over: padded windows, or ``N`` when dense);
    ``frame`` is the shape of one window frame there (``()`` when it is not run per window),
    and ``tokens`` the layer's input positions ``B * N`` (filled in by :func:`cost`).
    """

    attention_macs: int
    keys_mean: float
    keys_max: int
    scores: int
    mask_bytes: int
    frames: int
    dense_tokens: int = 0
    frame: tuple[int, ...] = ()
    tokens: int = 0


@dataclass(frozen=True)
class Cost:
    """The cost of one forward call; ``parts`` splits ``macs`` into qkv, attention, encoders,
    proj; ``attn_bytes`` is the score matrices at ``itemsize`` (an upper bound for fused kernels,
    which tile them) plus the materialised masks and biases.

    Example:
        >>> from attnblocks import Window, Attention
        >>> c = cost(Attention(partition=Window(7)), (14, 14), dim=64, num_heads=2)
        >>> c.keys_per_query, c.parts["attention"] == 2 * 196 * 49 * 64
        ((49.0, 49), True)
    """

    spec: Attention
    hw: tuple[int, int]
    batch: int
    backend: str
    macs: int
    parts: dict[str, int]
    keys_per_query: tuple[float, int]
    attn_bytes: int
    groups: tuple[GroupCost, ...] = field(repr=False)


GroupCostFn = Callable[[GroupPlan, tuple, str, int, int, bool], GroupCost]
EncoderCostFn = Callable[[Any, GroupPlan, GroupCost, str], int]
KvCostFn = Callable[[GroupPlan, tuple, int, int], int]


def register_cost(backend: str, *types: type) -> Callable[[GroupCostFn], GroupCostFn]:
    """Decorator: ``fn(group, shape, pad, batch, itemsize, has_bias) -> GroupCost`` with
    ``shape`` the map's size, ``(H, W)`` or of any rank (the ``cost:BACKEND`` hook of
    :mod:`attnblocks.hooks`)."""

    def deco(fn: GroupCostFn) -> GroupCostFn:
        return hooks.register(f"cost:{backend}", types, fn)

    return deco


def register_encoder_cost(*types: type) -> Callable[[EncoderCostFn], EncoderCostFn]:
    """Decorator: ``fn(encoder_spec, group, group_cost, backend) -> MACs`` of an encoder (the
    ``encoder_cost`` hook)."""

    def deco(fn: EncoderCostFn) -> EncoderCostFn:
        return hooks.register("encoder_cost", types, fn)

    return deco


def register_kv_cost(*types: type) -> Callable[[KvCostFn], KvCostFn]:
    """Decorator: ``fn(group, shape, batch, dim) -> MACs`` of a group's own key/value path
    (``dim``: the layer's channels ``C``), for partition types whose runner makes its keys
    (the ``kv_cost`` hook).

    Example:
        >>> from attnblocks import Downsample
        >>> hooks.lookup(Downsample, "kv_cost").__name__
        '_downsample_kv'
    """

    def deco(fn: KvCostFn) -> KvCostFn:
        return hooks.register("kv_cost", types, fn)

    return deco


def _lookup(hook: str, obj: Any, what: str, register: str):
    fn = hooks.lookup(obj, hook, None)
    if fn is None:
        raise AttnblocksError(f"cost: no cost model for {obj!r}{what} ({register}).")
    return fn


@register_cost("dense", Partition)
def _dense_cost(g: GroupPlan, shape: tuple, pad: str, batch: int, itemsize: int, bias: bool):
    N, h, d = math.prod(shape), g.num_heads, g.dim // g.num_heads
    keys = partition_oracle(g.partition, *shape).sum(-1).astype(np.float64)
    scores = batch * h * N * N
    mask = N * N + (h * N * N * itemsize if bias else 0)
    return GroupCost(
        2 * scores * d, float(keys.mean()), int(keys.max()), scores, mask, batch * N, N
    )


@register_encoder_cost(LePE)
def _lepe_cost(spec: LePE, g: GroupPlan, gc: GroupCost, backend: str) -> int:
    taps = spec.kernel**spec.ndim
    if backend == "dense":  # k^n (N, N) shift matrices times V; the weighting is elementwise
        return taps * gc.frames * g.dim * gc.dense_tokens
    if spec.ndim == 2 and 1 in gc.frame:  # a frame one token thin: LePEModule's 1 x k conv
        taps = spec.kernel
    return taps * gc.frames * g.dim  # the depthwise conv over every (padded) window frame


@register_encoder_cost(ContinuousPosBias)
def _cpb_cost(spec: ContinuousPosBias, g: GroupPlan, gc: GroupCost, backend: str) -> int:
    rows = math.prod(2 * w - 1 for w in gc.frame)  # one MLP input per relative offset
    return rows * spec.hidden * (len(gc.frame) + g.num_heads)


@register_encoder_cost(CPE)
def _cpe_cost(spec: CPE, g: GroupPlan, gc: GroupCost, backend: str) -> int:
    return spec.kernel**spec.ndim * gc.tokens * g.dim  # the group's channels of the input conv


@register_encoder_cost(RelPosBias, AxialRoPE)
def _no_macs(spec: PositionalEncoder, g: GroupPlan, gc: GroupCost, backend: str) -> int:
    return 0  # a gather from the table; rotations are elementwise


def cost(
    layer_or_spec: Any,
    hw: tuple[int, ...],
    batch: int = 1,
    *,
    dim: int | None = None,
    num_heads: int | None = None,
    dtype: torch.dtype | None = None,
) -> Cost:
    """The cost of one forward call of a built layer or a spec on an ``H x W`` map (or a map
    of any rank).

    Args:
        layer_or_spec: an :class:`~attnblocks.AttentionLayer` or an :class:`~attnblocks.Attention`
            (give ``dim`` and ``num_heads`` unless the spec fixes them).
        hw: the map size ``(H, W)``, ``(L,)``, ``(T, H, W)``.
        batch: the batch size ``B``.
        dtype: the element type for the byte counts (the layer's, or float32).

    Example:
        >>> from attnblocks import zoo
        >>> c = cost(zoo.swin(7, shift=3), (56, 56), dim=96, num_heads=3)
        >>> c.parts["attention"], round(c.keys_per_query[0], 2), c.keys_per_query[1]
        (29503488, 43.18, 49)
    """
    if isinstance(layer_or_spec, Attention):
        spec = layer_or_spec
        dim, num_heads = spec._check_dims(dim or spec.dim, num_heads or spec.num_heads)
        encoders: tuple = spec.encoders
        itemsize = torch.empty(0, dtype=dtype or torch.float32).element_size()
    elif isinstance(getattr(layer_or_spec, "spec", None), Attention):
        spec, dim, num_heads = layer_or_spec.spec, layer_or_spec.dim, layer_or_spec.num_heads
        encoders = spec.encoders
        param_dtype = next(layer_or_spec.parameters()).dtype
        itemsize = torch.empty(0, dtype=dtype or param_dtype).element_size()
    else:
        raise TypeError(
            f"cost expects an Attention spec or a built layer, got {type(layer_or_spec).__name__}."
        )
    from .runners import runner_for

    shape = tuple(hw)
    backend = "eager" if spec.backend == "auto" else spec.backend
    has_bias = any(isinstance(e, RelPosBias) for e in encoders)
    groups, enc_macs, own_channels = [], 0, 0
    for g in spec.groups(dim, num_heads):
        fn = _lookup(f"cost:{backend}", g.partition, f" on backend={backend!r}", "register_cost")
        gc = dataclasses.replace(
            fn(g, shape, spec.pad, batch, itemsize, has_bias), tokens=batch * math.prod(shape)
        )
        groups.append(gc)
        if runner_for(g.partition).kv_source == "own":
            kv = _lookup("kv_cost", g.partition, "'s own keys", "register_kv_cost")
            enc_macs += kv(g, shape, batch, dim)
            own_channels += g.dim
        for e in encoders:
            enc_macs += _lookup("encoder_cost", e, "", "register_encoder_cost")(e, g, gc, backend)
    N = math.prod(shape)
    parts = {
        "qkv": batch * N * dim * (3 * dim - 2 * own_channels),
        "attention": sum(gc.attention_macs for gc in groups),
        "encoders": enc_macs,
        "proj": batch * N * dim * dim,
    }
    weights = [g.num_heads for g in spec.groups(dim, num_heads)]
    mean = sum(w * gc.keys_mean for w, gc in zip(weights, groups)) / sum(weights)
    attn_bytes = sum(gc.scores * itemsize + gc.mask_bytes for gc in groups)
    return Cost(
        spec,
        shape,
        batch,
        backend,
        sum(parts.values()),
        parts,
        (mean, max(gc.keys_max for gc in groups)),
        attn_bytes,
        tuple(groups),
    )
