"""The extension contract: a partition family from a rule, and token sets that compose.

A new token set is one class. It states *who may attend to whom* from token coordinates
(:meth:`RulePartition.allows`, vectorised over tensors, so the same function is the dense
oracle and a FlexAttention ``mask_mod``), and may declare more to earn faster paths. Every
hook below has a default derived from the rule; the only required one is the rule itself
(``allows``, or ``oracle`` for a set that is easier to state as a mask), and a class that has
neither fails when it is *defined*, not on first use.

The hooks, each with what is derived when it is absent:

- ``allows(q, k)``: the rule, may query ``q`` attend to key ``k`` (coordinate tuples of any
  length). Required, or ``oracle``.
- ``oracle(H, W)``: the ``(N, N)`` bool mask. From ``allows``.
- ``mask_mod(H, W, device)``: FlexAttention's ``mask_mod``. From ``allows``, or a lookup in
  ``oracle``.
- ``layout(H, W, pad)``: the windows it cuts the map into (a :class:`~attnblocks.RectLayout`).
  ``None``: no eager kernel, the dense lowering runs.
- ``sliding(H, W)``: the sliding window (a ``Neighborhood`` / ``Dilated``) the rule is, checked
  once per size like ``layout``. ``None``: no sliding kernel.
- ``window_size``: the table size of ``RelPosBias``. ``None``: RelPosBias needs ``size=``.
- ``frames(H, W, pad)``: every token's window id and in-window position (LePE, RelPosBias).
  The layout's windows, else the whole map as one frame.
- ``describe(H, W, pad)``: the lines of :func:`~attnblocks.explain`. Keys per query and the
  lowering per backend.
- ``examples()``: instances for the contract test. ``cls()``.

What each backend runs: ``"dense"`` the rule's mask over all ``N`` tokens; ``"flex"`` one
FlexAttention call over the row-major tokens with the rule as ``mask_mod`` (no CPU backward);
``"eager"`` / ``"auto"`` the eager window runner when ``layout`` is declared, the sliding
family's kernels when ``sliding`` is (without encoders), else the dense lowering
(:func:`~attnblocks.explain` says which). Costs, pictures (:func:`~attnblocks.draw_pattern`),
:func:`~attnblocks.dense_mask` and configs come from the same hooks. The class is made a
frozen dataclass for you: fields are plain annotations.

``p | q`` (:class:`KeyUnion`) is one softmax over the union of the key sets (a key in both
counts once), ``p & q`` (:class:`KeyIntersection`) over their intersection; built-in
partitions compose the same way.

Example:
    >>> import torch
    >>> from attnblocks import Attention, Split, Window
    >>> class Axial(RulePartition):
    ...     "Criss-cross: the query's row and column."
    ...     def allows(self, q, k):
    ...         return (q[0] == k[0]) | (q[1] == k[1])
    >>> spec = Attention(heads=Split(Window(4), Axial() | Window(2)))
    >>> spec.build(16, 2)(torch.randn(1, 8, 8, 16)).shape
    torch.Size([1, 8, 8, 16])
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from einops import rearrange

from . import hooks
from ._cache import size_cache
from ._errors import AttnblocksError, fmt_size
from .backends.dense import WindowCoords, _dense_form, dense_attention, register_coords
from .backends.registry import register_lowering
from .cost import GroupCost, _dense_cost, register_cost
from .encoders import LePEModule, RelPosBiasModule
from .families.rect.cost import _layout_cost
from .families.rect.eager import loops_per_head, rect_attention
from .families.rect.runner import RectRunner
from .families.sliding.cost import sliding_cost
from .families.sliding.runner import DilatedRunner
from .kernels import attend_lse, check_flex_call, fresh_inputs
from .lowering import RectLayout, rect_layout
from .masks import additive_mask, mask_value, partition_oracle, register_oracle, token_coords
from .partition import Dilated, Partition
from .runners import RunContext, register_runner

__all__ = [
    "Causal",
    "KeyIntersection",
    "KeyUnion",
    "RulePartition",
    "RuleRunner",
    "UnionRunner",
    "declared_layout",
    "declared_sliding",
    "part_lowering",
    "rule_dense_lowering",
    "rule_flex_lowering",
    "union_plan",
]

REQUIRED = (("allows", "oracle"),)  # each entry: at least one of these must be defined


class RulePartition(Partition):
    """Base class of a partition family defined by a rule (see the module docstring).

    Subclass it, give fields as annotations, and define ``allows``; nothing else is needed.
    Pass ``abstract=True`` in the class statement for an intermediate base with no rule.

    Shapes: in ``allows(q, k)`` (or ``allows(q, k, shape)``), ``q`` and ``k`` are tuples of
    int64 tensors, one per map axis (``(y, x)``), broadcastable against each other; the result
    is a bool tensor of their broadcast shape. Write it with tensor operators (``==``, ``&``,
    ``|``, ``abs``, ``//``, ``%``), no Python ``if`` on values, so it also runs as a
    FlexAttention ``mask_mod``.

    Example:
        >>> class Rows(RulePartition):
        ...     "Every token of the query's row."
        ...     def allows(self, q, k):
        ...         return q[0] == k[0]
        >>> Rows(), Rows().oracle(2, 2).astype(int).tolist()
        (Rows(), [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    """

    window_size: ClassVar[tuple[int, int] | None] = None
    _rule_takes_shape: ClassVar[bool] = False

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for names in () if abstract else REQUIRED:
            if not any(_defines(cls, n) for n in names):
                raise TypeError(
                    f"{cls.__name__}: a RulePartition must define "
                    f"{' or '.join(names)} (who may attend to whom); see attnblocks.extend."
                )
        if not abstract and _defines(cls, "allows"):
            params = [p for p in inspect.signature(cls.allows).parameters][1:]
            if len(params) not in (2, 3):
                raise TypeError(
                    f"{cls.__name__}.allows takes (q, k) or (q, k, shape), got "
                    f"({', '.join(params)})."
                )
            cls._rule_takes_shape = len(params) == 3
        for name in ("layout", "sliding", "frames", "describe", "oracle", "mask_mod"):
            if name in cls.__dict__ and not callable(cls.__dict__[name]):
                raise TypeError(f"{cls.__name__}.{name} must be a method.")
        # a frozen, hashable spec with a readable repr: the user writes annotations only
        if "__dataclass_fields__" not in cls.__dict__:
            dataclasses.dataclass(frozen=True, repr=False)(cls)
            # frozenness comes from RulePartition.__setattr__, so an explicit @dataclass(frozen=
            # True) on the class still applies on top of this one
            for name in ("__setattr__", "__delattr__"):
                if name in cls.__dict__:
                    delattr(cls, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    # -- the rule ---------------------------------------------------------------------------

    def has_rule(self) -> bool:
        """Whether the set is stated by ``allows`` (else only by its ``oracle`` mask)."""
        return _defines(type(self), "allows")

    def rule(self, q: tuple, k: tuple, shape: tuple[int, ...]) -> torch.Tensor:
        """``allows(q, k)`` as a bool tensor of the broadcast shape of ``q`` and ``k``."""
        out = self.allows(q, k, shape) if self._rule_takes_shape else self.allows(q, k)
        if not isinstance(out, torch.Tensor):  # a constant rule (True / False)
            return (q[0] >= 0) if bool(out) else (q[0] < 0)
        if out.dtype != torch.bool:
            raise AttnblocksError(
                f"{self!r}.allows must return a bool tensor, got dtype {out.dtype}."
            )
        return out

    def allows(self, q: tuple, k: tuple) -> torch.Tensor:  # pragma: no cover - documented hook
        """The rule: whether query ``q`` may attend to key ``k`` (coordinate tuples)."""
        raise NotImplementedError

    def oracle(self, *shape: int) -> np.ndarray:
        """``(N, N)`` bool with ``N = H * W`` (``prod(shape)`` on a map of any rank): the rule
        evaluated on every token pair."""
        c = token_coords(shape)
        q, k = tuple(t[:, None] for t in c), tuple(t[None, :] for t in c)
        N = int(np.prod(shape))
        return self.rule(q, k, tuple(shape)).expand(N, N).numpy().copy()

    def mask_mod(self, H: int, W: int, device: torch.device) -> Callable:
        """FlexAttention's ``mask_mod(b, h, q_idx, kv_idx)`` over row-major tokens."""
        shape = (H, W)
        if self.has_rule():

            def mod(b, h, q_idx, kv_idx):
                return self.rule(token_coords(shape, q_idx), token_coords(shape, kv_idx), shape)

            return mod
        allowed = _allowed(self, device, H, W)

        def lookup(b, h, q_idx, kv_idx):
            return allowed[q_idx, kv_idx]

        return lookup

    # -- what it may declare for faster paths ----------------------------------------------

    def layout(self, H: int, W: int, pad: str = "mask") -> RectLayout | None:
        """The windows the set cuts an ``H x W`` map into, or ``None`` (the default).

        A declared layout runs the eager window runner (batched windows, fused SDPA). The
        rule must then allow exactly the pairs in the same window (checked once per size).
        """
        return None

    def sliding(self, H: int, W: int) -> Partition | None:
        """The sliding window (a :class:`~attnblocks.Neighborhood` or
        :class:`~attnblocks.Dilated` with ``border="mask"`` or ``"shift"``) whose key sets on
        ``H x W`` are exactly the rule's, or ``None`` (the default).

        A declared sliding window runs the sliding family's eager kernels (without encoders;
        with them the dense lowering, over the rule's own frames). Checked once per size.
        """
        return None

    def frames(self, H: int, W: int, pad: str = "mask") -> WindowCoords:
        """Every token's frame (window id) and position in it, for the encoders."""
        lay = self.layout(H, W, pad)
        y, x = np.divmod(np.arange(H * W), W)
        if lay is None:
            return WindowCoords(np.zeros(H * W, dtype=np.int64), np.stack([y, x], 1))
        return _layout_frames(lay)

    def describe(self, *shape: int, pad: str = "mask") -> list[str]:
        """Lines for :func:`~attnblocks.explain`, on a map of size ``shape``."""
        keys = partition_oracle(self, *shape).sum(-1)
        how = "its rule" if self.has_rule() else "its mask"
        lines = [f"keys per query: mean {keys.mean():.1f}, max {keys.max()} (from {how})"]
        flex = f"flex: one block-masked call, mask_mod from {how}; dense: N x N mask"
        if len(shape) != 2:
            return [
                *lines,
                "eager/auto: the dense lowering (N x N): declared layouts and sliding windows "
                f"are 2-D, this map is {len(shape)}-D",
                flex,
            ]
        H, W = shape
        lay = self.layout(H, W, pad)
        slide = self.sliding(H, W) if lay is None else None
        if slide is not None:
            lines.append(
                f"eager/auto: sliding window {slide!r} (checked against the rule): the sliding "
                "family's kernels; with encoders the dense lowering (N x N)"
            )
        elif lay is None:
            lines.append("eager/auto: no eager kernel declared: runs the dense lowering (N x N)")
        else:
            (nh, nw), (wh, ww) = lay.counts, lay.window
            lines.append(f"eager/auto: windows {nh}x{nw} of {wh}x{ww} tokens, pad {lay.pad}")
        lines.append(flex)
        return lines

    @classmethod
    def examples(cls) -> tuple[RulePartition, ...]:
        """Instances that the contract test runs (default: ``cls()``)."""
        try:
            return (cls(),)
        except TypeError as e:
            raise TypeError(
                f"{cls.__name__}: define examples() (instances for the contract test): {e}"
            ) from None


def _normal_tensors(fn: Callable) -> Callable:
    """Run a cached builder outside inference mode: its tensors outlive the call and may be
    saved for backward by a later call in grad mode (inference tensors cannot be)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def _defines(cls: type, name: str) -> bool:
    """Whether ``cls`` overrides ``RulePartition``'s ``name``."""
    return getattr(cls, name, None) is not getattr(RulePartition, name, None)


def _layout_frames(lay: RectLayout) -> WindowCoords:
    (wh, ww), (sh, sw), (nh, nw) = lay.window, lay.shift, lay.counts
    y, x = np.divmod(np.arange(lay.H * lay.W), lay.W)
    r, c = (y - sh) % lay.H, (x - sw) % lay.W
    if lay.grid:
        return WindowCoords((r % nh) * nw + (c % nw), np.stack([r // nh, c // nw], 1))
    return WindowCoords((r // wh) * nw + (c // ww), np.stack([r % wh, c % ww], 1))


def _layout_oracle(lay: RectLayout) -> np.ndarray:
    """``(N, N)``: same window and (under a shift) same region, as ``pad='mask'`` means it."""
    fr = _layout_frames(lay)
    (sh, sw), (H, W) = lay.shift, (lay.H, lay.W)
    y, x = np.divmod(np.arange(H * W), W)
    r, c = (y - sh) % H, (x - sw) % W
    region = 3 * (r >= H - sh) * (sh > 0) + (c >= W - sw) * (sw > 0)
    return fr.same_window() & (region[:, None] == region[None, :])


@size_cache(256, constant=True)
@_normal_tensors
def _allowed(partition: Partition, device: torch.device, *shape: int) -> torch.Tensor:
    """The oracle as a bool tensor on ``device`` (a graph constant under compile; the sizes
    are separate int arguments, which the constant cache specialises)."""
    return torch.from_numpy(partition_oracle(partition, *shape)).to(device)


@size_cache(256, constant=True)
def _checked_layout(partition: RulePartition, H: int, W: int) -> bool:
    """Raise unless the declared layout's windows are exactly the rule's key sets."""
    lay = partition.layout(H, W, "mask")
    if lay is not None and not np.array_equal(
        _layout_oracle(lay), partition_oracle(partition, H, W)
    ):
        raise AttnblocksError(
            f"{partition!r}: layout() declares {lay.window[0]}x{lay.window[1]} windows on a "
            f"{H}x{W} map, but its rule allows other pairs than those of a window; fix the "
            f"rule or the layout (they must say the same thing)."
        )
    return True


def declared_layout(partition: RulePartition, H: int, W: int, pad: str) -> RectLayout | None:
    """The partition's declared layout on ``H x W`` (checked against its rule), or ``None``."""
    lay = partition.layout(H, W, pad)
    if lay is not None:
        _checked_layout(partition, H, W)
    return lay


@size_cache(256, constant=True)
def _checked_sliding(partition: RulePartition, H: int, W: int) -> bool:
    """Raise unless the declared sliding window's key sets are exactly the rule's."""
    slide = partition.sliding(H, W)
    if not isinstance(slide, Dilated) or slide.border == "zeros" or slide.is_generic():
        raise AttnblocksError(
            f"{partition!r}: sliding() must return a concrete Neighborhood or Dilated with "
            f"border='mask' or 'shift' (a set of keys), got {slide!r}."
        )
    if not np.array_equal(partition_oracle(slide, H, W), partition_oracle(partition, H, W)):
        raise AttnblocksError(
            f"{partition!r}: sliding() declares {slide!r} on a {H}x{W} map, but its rule allows "
            f"other pairs than that window's; fix the rule or the declaration (they must say "
            f"the same thing)."
        )
    return True


def declared_sliding(partition: RulePartition, H: int, W: int) -> Dilated | None:
    """The partition's declared sliding window on ``H x W`` (checked against its rule), or
    ``None``."""
    slide = partition.sliding(H, W)
    if slide is not None:
        _checked_sliding(partition, H, W)
    return slide


register_oracle(RulePartition)(lambda p, *shape: p.oracle(*shape))
register_coords(RulePartition)(lambda p, H, W, pad: p.frames(H, W, pad))


# -- encoders, densely -------------------------------------------------------------------------


@size_cache(128, constant=True)
@_normal_tensors
def _relpos_index(
    partition: RulePartition, H: int, W: int, pad: str, size: tuple[int, int], group: int
) -> torch.Tensor:
    """``(N, N)`` int64 index into a ``RelPosBias`` table of ``size`` for every allowed pair."""
    fr, allowed = partition.frames(H, W, pad), partition_oracle(partition, H, W)
    off = fr.offsets()
    bad = allowed & ~fr.same_window()
    far = allowed & ((np.abs(off[..., 0]) >= size[0]) | (np.abs(off[..., 1]) >= size[1]))
    if bad.any() or far.any():
        i, j = np.argwhere(bad | far)[0]
        raise AttnblocksError(
            f"RelPosBias: head group {group} has a table for {size[0]}x{size[1]} windows, but "
            f"{partition!r} lets query {tuple(divmod(int(i), W))} attend to key "
            f"{tuple(divmod(int(j), W))} on a {H}x{W} map, "
            + ("outside its frame" if bad[i, j] else f"{tuple(int(o) for o in off[i, j])} away")
            + ".\n  Hint: declare a larger window_size, or RelPosBias(size=...)."
        )
    off = np.where(allowed[..., None], off, 0)
    return torch.from_numpy(
        (off[..., 0] + size[0] - 1) * (2 * size[1] - 1) + off[..., 1] + size[1] - 1
    )


@size_cache(128, constant=True)
@_normal_tensors
def _lepe_shifts(partition: RulePartition, H: int, W: int, pad: str, k: int) -> torch.Tensor:
    """``(k*k, N, N)`` bool: key ``j`` sits at kernel offset ``o`` from query ``i`` in its frame."""
    fr, p = partition.frames(H, W, pad), k // 2
    same, off = fr.same_window(), fr.offsets()
    return torch.from_numpy(
        np.stack(
            [
                same & (off[..., 0] == p - a) & (off[..., 1] == p - b)
                for a in range(k)
                for b in range(k)
            ]
        )
    )


def _encoder_terms(g: Any, encoders: Sequence, H: int, W: int, pad: str, q: torch.Tensor):
    """The encoders' dense bias ``(h, N, N)`` (or ``None``) and value hooks ``f(v)``."""
    part, bias, values = g.partition, None, []
    for e in encoders:
        if isinstance(e, RelPosBiasModule):
            index = _relpos_index(part, H, W, pad, tuple(e.sizes[g.index]), g.index)
            term = e.tables[g.index][index.to(q.device)].permute(2, 0, 1).to(q.dtype)
            bias = term if bias is None else bias + term
        elif isinstance(e, LePEModule):
            values.append(_lepe_value(e, g, _lepe_shifts(part, H, W, pad, e.kernel)))
        else:
            bf, vf = _dense_form(e)  # other encoders with a registered dense form
            if bf is not None:
                term = bf(e, g, part.frames(H, W, pad)).to(q.dtype)
                bias = term if bias is None else bias + term
            if vf is not None:
                values.append(lambda v, e=e, vf=vf: vf(e, g, v, part.frames(H, W, pad)))
    return bias, values


def _lepe_value(module: LePEModule, g: Any, shifts: torch.Tensor) -> Callable:
    """LePE's term on ``v: (B, h, N, d)`` from the frames' shift matrices ``(k*k, N, N)``."""

    def value(v: torch.Tensor) -> torch.Tensor:
        c0, c1 = g.channels
        h = g.num_heads
        w = rearrange(module.conv.weight[c0:c1], "(h d) 1 ka kb -> (ka kb) 1 h 1 d", h=h)
        b = rearrange(module.conv.bias[c0:c1], "(h d) -> h 1 d", h=h)
        shifted = shifts.to(v)[:, None, None] @ v  # (k*k, B, h, N, d)
        return (shifted * w.to(v)).sum(0) + b.to(v)

    return value


def _check_pad(g: Any, ctx: Any, backend: str) -> None:
    if ctx.pad not in ("mask", "error"):
        raise AttnblocksError(
            f"{g.partition!r} on backend={backend!r} attends over the real tokens only: it needs "
            f"pad='mask' or 'error', got {ctx.pad!r}."
        )


def _rule_inputs(g: Any, qkv: torch.Tensor, ctx: Any) -> tuple:
    """A rule group's ``q, k, v: (B, h, N, d)`` over row-major tokens, and its encoders' dense
    bias and value terms (:func:`_encoder_terms`; positional encoders on 2-D maps only)."""
    B, *shape, _, c = qkv.shape
    t = qkv.reshape(B, math.prod(shape), 3, g.num_heads, c // g.num_heads)
    q, k, v = t.permute(2, 0, 3, 1, 4).unbind(0)
    bias, values = None, []
    if ctx.encoders:
        if len(shape) != 2:
            raise AttnblocksError(
                f"{g.partition!r} with positional encoders runs on 2-D maps only, got a "
                f"{len(shape)}-D map of size {fmt_size(shape)}."
            )
        bias, values = _encoder_terms(g, ctx.encoders, *shape, ctx.pad, q)
    return q, k, v, bias, values


@register_lowering("dense", RulePartition)
def rule_dense_lowering(runner: Any, qkv: torch.Tensor, ctx: Any) -> torch.Tensor:
    """A rule's head group as dense masked attention: ``(B, *shape, 3, c) -> (B, *shape, c)``
    (positional encoders on 2-D maps only)."""
    g = runner.group
    _check_pad(g, ctx, "dense")
    q, k, v, bias, values = _rule_inputs(g, qkv, ctx)
    B, *shape, _, c = qkv.shape
    allowed = _allowed(g.partition, qkv.device, *shape)
    o = dense_attention(q, k, v, allowed, ctx.scale, bias, ctx.dropout_p)
    for f in values:
        o = o + f(v)
    return o.transpose(1, 2).reshape(B, *shape, c)


def _score_mod(bias: torch.Tensor, score, b, h, q_idx, kv_idx):
    return score + bias[h, q_idx, kv_idx]


@size_cache(64)
@_normal_tensors
def _block_mask(partition: RulePartition, shape: tuple[int, ...], device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    N = math.prod(shape)
    if len(shape) == 2:  # the rule's own mask_mod(H, W, device), which a family may override
        mod = partition.mask_mod(*shape, device)
    elif partition.has_rule():

        def mod(b, h, q_idx, kv_idx):
            return partition.rule(token_coords(shape, q_idx), token_coords(shape, kv_idx), shape)

    else:
        allowed = _allowed(partition, device, *shape)

        def mod(b, h, q_idx, kv_idx):
            return allowed[q_idx, kv_idx]

    return create_block_mask(mod, None, None, N, N, device=device)


@register_lowering("flex", RulePartition)
def rule_flex_lowering(runner: Any, qkv: torch.Tensor, ctx: Any) -> torch.Tensor:
    """A rule's head group as one FlexAttention call over the row-major tokens, the rule as
    ``mask_mod``: ``(B, *shape, 3, c) -> (B, *shape, c)`` (positional encoders: 2-D)."""
    from functools import partial

    from torch.nn.attention.flex_attention import flex_attention

    g = runner.group
    check_flex_call(g, qkv, ctx)
    _check_pad(g, ctx, "flex")
    q, k, v, bias, values = _rule_inputs(g, qkv, ctx)
    B, *shape, _, c = qkv.shape
    if bias is not None and torch.compiler.is_compiling() and q.device.type == "cpu":
        raise AttnblocksError(
            f"backend='flex' under torch.compile on CPU cannot add the encoders' bias to "
            f"{g.partition!r} (inductor's CPU FlexAttention kernel rejects a score_mod that reads "
            f"a computed tensor). Use backend='dense', flex without compile, or a CUDA device."
        )
    qf, kf, vf, negated = fresh_inputs(q.contiguous(), k.contiguous(), v.contiguous())
    score = None if bias is None else partial(_score_mod, bias)
    bm = _block_mask(g.partition, tuple(shape), q.device)
    o = flex_attention(qf, kf, vf, score_mod=score, block_mask=bm, scale=ctx.scale)
    o = -o if negated else o
    for f in values:
        o = o + f(v)
    return o.transpose(1, 2).reshape(B, *shape, c)


@register_runner(RulePartition)
class RuleRunner(RectRunner):
    """Runs a rule's head group eagerly: the window runner on its declared layout, else the
    dense lowering (:func:`rule_dense_lowering`).

    Shapes: ``qkv: (B, H, W, 3, c) -> (B, H, W, c)``.
    """

    def key_sets(self, shape: tuple[int, ...], pad: str) -> str:
        """``"masked"``: a rule's lowering may compute with keys outside its sets (the generic
        containment of :func:`~attnblocks.runners.run_group` applies)."""
        return "masked"

    def forward(self, qkv: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        g = self.group
        if qkv.dim() != 5:  # the declared layouts and sliding windows are 2-D
            return rule_dense_lowering(self, qkv, ctx)
        H, W = qkv.shape[1], qkv.shape[2]
        layout = declared_layout(g.partition, H, W, ctx.pad)
        if layout is None:
            slide = None if ctx.encoders else declared_sliding(g.partition, H, W)
            if slide is None:
                return rule_dense_lowering(self, qkv, ctx)
            sub = dataclasses.replace(g, partition=slide)
            return DilatedRunner(None, sub, g.dim, g.num_heads)(qkv, ctx)
        fill = None if ctx.fill is None else ctx.fill[:, g.channels[0] : g.channels[1]]
        return rect_attention(qkv, layout, g, ctx.scale, ctx.encoders, ctx.dropout_p, fill)

    def ordered_layout(
        self,
        shape: tuple[int, ...],
        pad: str,
        batch: int = 1,
        device: torch.device | str = "cpu",
    ) -> RectLayout | None:
        if len(shape) != 2:
            return None
        layout = declared_layout(self.group.partition, *shape, pad)
        if layout is None or any(layout.pad):
            return None
        if layout.needs_mask and not loops_per_head(
            layout.tokens, batch * layout.num_windows, device
        ):
            return None
        return layout


def _rule_cost(g, shape: tuple, pad: str, batch: int, itemsize: int, bias: bool) -> GroupCost:
    if len(shape) != 2:  # the dense lowering (layouts and sliding windows are declared in 2-D)
        return _dense_cost(g, shape, pad, batch, itemsize, bias)
    H, W = shape
    lay = g.partition.layout(H, W, pad)
    slide = g.partition.sliding(H, W) if lay is None and not bias else None
    if slide is not None:
        return sliding_cost(dataclasses.replace(g, partition=slide), H, W, batch, itemsize)
    if lay is None:  # the dense lowering runs (flex on CPU materialises the scores too)
        return _dense_cost(g, shape, pad, batch, itemsize, bias)
    return _layout_cost(lay, g, batch, itemsize, bias)


register_cost("eager", RulePartition)(_rule_cost)
register_cost("flex", RulePartition)(_dense_cost)  # counted densely: an upper bound


# -- token sets compose ------------------------------------------------------------------------


class _KeySetOp(RulePartition, abstract=True):
    """Shared by :class:`KeyUnion` and :class:`KeyIntersection`: ``parts`` combined per pair."""

    parts: tuple[Partition, ...]
    symbol: ClassVar[str] = "?"
    word: ClassVar[str] = "?"

    def __post_init__(self) -> None:
        name = type(self).__name__
        parts = self.parts
        if not isinstance(parts, (tuple, list)) or len(parts) < 2:
            raise AttnblocksError(f"{name}: give at least two partitions, got {parts!r}.")
        flat: list[Partition] = []
        for p in parts:
            if not isinstance(p, Partition):
                raise TypeError(f"{name}: parts must be partitions, got {p!r}.")
            if _own_keys(p):
                raise AttnblocksError(
                    f"{name}: {p!r} attends to keys of its own (a reduced map), not to the map's "
                    f"tokens, so its key set cannot be combined with another's."
                )
            flat.extend(p.parts if type(p) is type(self) else (p,))
        ranks = {p.rank for p in flat} - {None}
        if len(ranks) > 1:
            raise AttnblocksError(
                f"{name}: the parts are written for maps of different ranks: "
                + ", ".join(f"{p!r} ({p.rank}-D)" for p in flat if p.rank is not None)
                + "."
            )
        object.__setattr__(self, "parts", tuple(flat))

    def __repr__(self) -> str:
        def show(p: Partition) -> str:
            return f"({p!r})" if isinstance(p, _KeySetOp) else repr(p)

        return f" {self.symbol} ".join(show(p) for p in self.parts)

    def is_generic(self) -> bool:
        return any(p.is_generic() for p in self.parts)

    def resolve(self, index: int, count: int) -> Partition:
        return type(self)(tuple(p.resolve(index, count) for p in self.parts))

    def has_rule(self) -> bool:
        return all(isinstance(p, RulePartition) and p.has_rule() for p in self.parts)

    def rule(self, q: tuple, k: tuple, shape: tuple[int, ...]) -> torch.Tensor:
        out = None
        for p in self.parts:
            r = p.rule(q, k, shape)
            out = r if out is None else self.combine(out, r)
        return out

    def oracle(self, *shape: int) -> np.ndarray:
        out = None
        for p in self.parts:
            m = partition_oracle(p, *shape)
            out = m if out is None else self.combine(out, m)
        return out

    @property
    def rank(self) -> int | None:
        """The rank the parts fix (they agree: checked at construction), or ``None``."""
        ranks = {p.rank for p in self.parts} - {None}
        return ranks.pop() if ranks else None

    def describe(self, *shape: int, pad: str = "mask") -> list[str]:
        lines = [
            f"{self.word} of {len(self.parts)} key sets, one softmax (a key in both counts once)"
        ]
        return lines + super().describe(*shape, pad=pad)

    @classmethod
    def examples(cls) -> tuple[RulePartition, ...]:
        from .partition import Global, Stripe, Window

        return (cls((Window(3), Stripe(1, axis="h"))), cls((Window((2, 3), shift=1), Global())))


def _own_keys(p: Partition) -> bool:
    from .runners import runner_for

    try:
        return runner_for(p).kv_source == "own"
    except AttnblocksError:
        return False


class KeyUnion(_KeySetOp):
    """``p | q``: each query attends to the union of the parts' key sets, in one softmax.

    A key in several sets counts once (Longformer's sliding window plus global tokens, a
    window plus a rule). Lowered from the parts' oracles: dense, flex (the parts' rules as one
    ``mask_mod`` when all are rules, else a lookup in the combined mask).

    Shapes: as any partition; ``parts`` a tuple of two or more partitions.

    Example:
        >>> from attnblocks import Stripe, Window
        >>> Window(4) | Stripe(1, axis="h")
        Window(4) | Stripe(1, axis='h')
    """

    symbol: ClassVar[str] = "|"
    word: ClassVar[str] = "union"

    @staticmethod
    def combine(a, b):
        return a | b

    def describe(self, *shape: int, pad: str = "mask") -> list[str]:
        lines = super().describe(*shape, pad=pad)
        plan = union_plan(self, *shape)
        kinds = [_part_kind(p, *shape) for p in self.parts]
        if plan == "disjoint" and "dense" in kinds:
            dense = self.parts[kinds.index("dense")]
            how = (
                f"disjoint key sets, but {dense!r} has no form cheaper than N x N keys: runs "
                "the dense lowering (N x N)"
            )
        elif plan == "disjoint":
            how = (
                "disjoint key sets: each part's partial attention ("
                + ", ".join(kinds)
                + ") merged by log-sum-exp"
            )
        elif isinstance(plan, int):
            how = f"nested key sets: runs {self.parts[plan]!r} alone (its set is the union)"
        else:
            how = "overlapping key sets: runs the dense lowering (N x N)"
        lines = [ln for ln in lines if not ln.startswith("eager/auto:")]
        return [*lines, f"eager/auto: {how}; with encoders or dropout: the dense lowering"]


class KeyIntersection(_KeySetOp):
    """``p & q``: each query attends to the keys that every part allows (a window restricted by
    a rule), in one softmax.

    Shapes: as any partition; ``parts`` a tuple of two or more partitions.

    Example:
        >>> from attnblocks import Stripe, Window
        >>> (Window(4) & Stripe(1, axis="v")).oracle(4, 4).sum(-1).tolist()[:4]
        [4, 4, 4, 4]
    """

    symbol: ClassVar[str] = "&"
    word: ClassVar[str] = "intersection"

    @staticmethod
    def combine(a, b):
        return a & b


# -- a fast lowering of unions: disjoint parts merged by log-sum-exp, nested parts alone -------


@size_cache(256, constant=True)
def union_plan(partition: KeyUnion, *shape: int) -> str | int | None:
    """How the eager runner lowers ``partition`` on a map of size ``shape`` (``H, W``, or any
    rank), decided once per size from the parts' oracles: ``"disjoint"`` (no key in two parts'
    sets for any query: partial attentions merged by log-sum-exp), the index of a part whose
    set is the whole union (nested: that part alone), or ``None`` (overlapping sets, or a
    query with no key: the dense lowering).
    """
    masks = [partition_oracle(p, *shape) for p in partition.parts]
    union = np.logical_or.reduce(masks)
    if not union.any(-1).all():
        return None
    for i, m in enumerate(masks):
        if np.array_equal(m, union):
            return i
    if (np.sum(masks, axis=0) <= 1).all():
        return "disjoint"
    return None


def _part_layout(part: Partition, *shape: int) -> RectLayout | None:
    """A part's windows (built-in rectangular, or a rule's declared layout, which is 2-D),
    else ``None``."""
    if isinstance(part, RulePartition):
        return declared_layout(part, *shape, "mask") if len(shape) == 2 else None
    from .runners import runner_for

    if issubclass(runner_for(part), RectRunner):
        return rect_layout(part, *shape, pad="mask")
    return None


COLUMNS_MAX = 0.5  # a part whose queries use at most this fraction of the keys: those columns
GATHER_MAX = 1 / 32  # else per-query key lists of at most this fraction (a gathered key costs
# ~20-30x a dense one on CPU: benchmarks/union_lowering.py)


@size_cache(256, constant=True)
def part_lowering(part: Partition, shape: tuple[int, ...], columns: float, gather: float) -> str:
    """How one part of a disjoint union runs on a map of size ``shape`` (``(H, W)`` or any
    rank; decided once per size):
    ``"windows"`` (its rectangular layout), ``"columns"`` (dense over the few keys any query
    uses: global tokens), ``"gathered keys"`` (each query's key list), or ``"dense"`` (no
    cheaper form: the union then takes the dense lowering). ``columns`` and ``gather`` are the
    fractions of the ``N`` keys (:data:`COLUMNS_MAX`, :data:`GATHER_MAX`)."""
    if _part_layout(part, *shape) is not None:
        return "windows"
    allowed, N = partition_oracle(part, *shape), math.prod(shape)
    if allowed.any(0).sum() <= columns * N:
        return "columns"
    if allowed.sum(-1).max() <= gather * N:
        return "gathered keys"
    return "dense"


def _part_kind(part: Partition, *shape: int) -> str:
    return part_lowering(part, tuple(shape), COLUMNS_MAX, GATHER_MAX)  # the limits read per call


@size_cache(128, constant=True)
@_normal_tensors
def _key_columns(
    partition: Partition, shape: tuple[int, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(K,)`` int64 keys that some query uses and ``(N, K)`` bool: who uses which."""
    allowed = partition_oracle(partition, *shape)
    cols = np.flatnonzero(allowed.any(0))
    return torch.from_numpy(cols).to(device), torch.from_numpy(allowed[:, cols]).to(device)


@size_cache(128, constant=True)
@_normal_tensors
def _key_lists(
    partition: Partition, shape: tuple[int, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K)`` int64 key indices of each query (allowed first) and ``(N, K)`` bool valid."""
    allowed = partition_oracle(partition, *shape)
    K = max(int(allowed.sum(-1).max()), 1)
    order = np.argsort(~allowed, axis=1, kind="stable")[:, :K]
    valid = np.take_along_axis(allowed, order, 1)
    index = np.where(valid, order, 0)
    return torch.from_numpy(index).to(device), torch.from_numpy(valid).to(device)


def _lse_window_kernel(q, k, v, bias, layout: RectLayout, scale: float, dropout_p: float = 0.0):
    """A window kernel (:data:`~attnblocks.families.rect.eager.WindowKernel`) that appends
    each query's log-sum-exp to its output: ``(B, nW, h, T, d) -> (B, nW, h, T, d + 1)``."""
    mask = additive_mask(layout, q.dtype, q.device)
    o, lse = attend_lse(q, k, v, mask, scale)
    return torch.cat([o, lse[..., None]], -1)


def _partial(part: Partition, g: Any, qkv: torch.Tensor, scale: float):
    """One part's attention and log-sum-exp.

    Shapes: ``qkv: (B, *shape, 3, c)`` -> ``o: (B, *shape, h, d)``, ``lse: (B, *shape, h)``
    (``shape`` the map's, ``(H, W)`` on 2-D).
    """
    B, shape = qkv.shape[0], tuple(qkv.shape[1:-2])
    h = g.num_heads
    lay = _part_layout(part, *shape)
    if lay is not None:  # the window runner's gather, with a kernel that keeps the lse
        out = rect_attention(qkv, lay, g, scale, kernel=_lse_window_kernel)
        out = out.view(B, *shape, h, g.dim // h + 1)
        return out[..., :-1], out[..., -1]
    q, k, v = qkv.flatten(1, -3).unflatten(-1, (h, -1)).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
    if _part_kind(part, *shape) == "columns":
        cols, allowed = _key_columns(part, shape, qkv.device)
        mask = torch.zeros((), dtype=q.dtype, device=q.device).masked_fill(
            ~allowed, mask_value(q.dtype)
        )
        o, lse = attend_lse(q, k[:, :, cols], v[:, :, cols], mask, scale)
    else:  # gathered keys
        index, valid = _key_lists(part, shape, qkv.device)
        kg, vg = k[:, :, index], v[:, :, index]  # (B, h, N, K, d)
        a = torch.einsum("bhnd,bhnkd->bhnk", q * scale, kg)
        a = a.masked_fill(~valid, mask_value(a.dtype))
        lse = torch.logsumexp(a, -1)
        o = torch.einsum("bhnk,bhnkd->bhnd", torch.exp(a - lse[..., None]), vg)
    return o.transpose(1, 2).unflatten(1, shape), lse.transpose(1, 2).unflatten(1, shape)


@register_runner(KeyUnion)
class UnionRunner(RuleRunner):
    """Runs a union's head group eagerly, lowered per :func:`union_plan`: disjoint parts as
    partial attentions (each on its windows, or its gathered keys) merged by log-sum-exp;
    nested parts as the largest part's own runner; otherwise (and with encoders or attention
    dropout) the dense lowering.

    Shapes: ``qkv: (B, *shape, 3, c) -> (B, *shape, c)``, a map of any rank.
    """

    def __init__(self, spec, group, dim: int, num_heads: int, device=None, dtype=None):
        super().__init__(spec, group, dim, num_heads, device=device, dtype=dtype)
        from .runners import runner_for

        # the parts' runners hold no tensors (a union refuses parts with keys of their own);
        # a plain tuple keeps them out of the module tree and the state dict
        self._parts = tuple(
            runner_for(p)(spec, dataclasses.replace(group, partition=p), dim, num_heads)
            for p in group.partition.parts
        )

    def forward(self, qkv: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        g = self.group
        shape = tuple(qkv.shape[1:-2])
        if ctx.encoders or ctx.dropout_p or ctx.pad not in ("mask", "error"):
            return rule_dense_lowering(self, qkv, ctx)
        plan = union_plan(g.partition, *shape)
        if isinstance(plan, int):
            # its own runner, on the real tokens only (as the union's pad='mask' or 'error')
            return self._parts[plan](qkv, dataclasses.replace(ctx, pad="mask", fill=None))
        parts = g.partition.parts
        if plan != "disjoint" or any(_part_kind(p, *shape) == "dense" for p in parts):
            return rule_dense_lowering(self, qkv, ctx)
        outs, lses = zip(*(_partial(p, g, qkv, ctx.scale) for p in parts))
        lse = torch.logsumexp(torch.stack(lses), 0)
        o = sum(torch.exp(s - lse)[..., None] * o for o, s in zip(outs, lses))
        return o.flatten(-2)


hooks.register("set:|", [Partition], KeyUnion)
hooks.register("set:&", [Partition], KeyIntersection)


class Causal(RulePartition):
    """A key never lies after its query: the causal rule, to intersect with any partition
    (``Window(7) & Causal()``, ``Neighborhood(7) & Causal(axes=(0,))``).

    ``axes=None``: in the tokens' row-major order (an autoregressive image or sequence: the
    key's index is at most the query's). A tuple of axis indices: along each named axis
    (``k[a] <= q[a]``), free along the others (``axes=(0,)`` on ``(T, H, W)`` is causal in time
    only). Coordinates are tuples of any length, so the rule holds in any rank. Intersected
    with a sliding window it keeps the window's past half; NATTEN's ``is_causal``, which moves
    the window into the past, is not this rule.

    Shapes: as any partition (keys and queries are the map's tokens).

    Example:
        >>> from attnblocks import Window
        >>> Causal().oracle(1, 4).astype(int).tolist()
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
        >>> (Window(2) & Causal(axes=(1,))).oracle(2, 2).sum(-1).tolist()
        [2, 4, 2, 4]
    """

    axes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.axes is None:
            return
        axes = (self.axes,) if isinstance(self.axes, int) else self.axes
        if (
            not isinstance(axes, tuple)
            or not axes
            or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in axes)
        ):
            raise AttnblocksError(
                f"Causal: axes must be None (row-major order) or axis indices >= 0 such as (0,), "
                f"got {self.axes!r}."
            )
        object.__setattr__(self, "axes", tuple(sorted(set(axes))))

    def allows(self, q, k):
        if self.axes is not None:
            if max(self.axes) >= len(q):
                raise AttnblocksError(
                    f"{self!r}: axis {max(self.axes)} of a {len(q)}-D token map does not exist."
                )
            ok = k[self.axes[0]] <= q[self.axes[0]]
            for a in self.axes[1:]:
                ok = ok & (k[a] <= q[a])
            return ok
        # row-major order: lexicographic on the coordinates, the first axis slowest
        before = k[-1] <= q[-1]
        for a in range(len(q) - 2, -1, -1):
            before = (k[a] < q[a]) | ((k[a] == q[a]) & before)
        return before

    @classmethod
    def examples(cls) -> tuple[Causal, ...]:
        return (cls(), cls(axes=(0,)), cls(axes=(1,)), cls(axes=(0, 1)))
