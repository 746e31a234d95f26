"""Partition specs: which tokens attend to which.

A partition is a frozen, hashable description with no tensors. Lowering it to index
arithmetic for a concrete map size happens in :mod:`attnblocks.lowering`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from . import hooks
from ._errors import AttnblocksError, fmt_size
from ._spec import (
    Spec,
    any_rank,
    axes,
    check_ndim,
    fixed_rank,
    pair,
    per_axis,
    positive_int,
    ranks_of,
)

__all__ = [
    "ACTIVATIONS",
    "BORDERS",
    "CLAMP_RULES",
    "Dilated",
    "Downsample",
    "Global",
    "Grid",
    "Neighborhood",
    "Partition",
    "Stripe",
    "Window",
]

CLAMP_RULES = (None, "swin", "timm", "torchvision")
ACTIVATIONS = (None, "gelu")
_AXES = {"v": "v", "vertical": "v", "h": "h", "horizontal": "h"}


class Partition(Spec):
    """Base class of partition specs.

    A partition may be *generic* (it means one thing per head group, such as ``Stripe(7)``
    with no axis, whose groups alternate vertical and horizontal stripes); ``resolve`` turns
    it into the concrete partition of one head group.

    Example:
        >>> isinstance(Window(7), Partition), Stripe(7).is_generic()
        (True, True)
    """

    generic: ClassVar[bool] = False

    def resolve(self, index: int, count: int) -> Partition:
        """The concrete partition used by head group ``index`` of ``count`` groups."""
        return self

    def is_generic(self) -> bool:
        """True when the spec needs a head split to mean one concrete partition."""
        return False

    @property
    def rank(self) -> int | None:
        """The token-map rank the spec is written for (per-axis tuples fix it), or ``None``
        where it holds for maps of any rank."""
        return None

    def _set_op(self, other: object, op: str) -> Partition:
        if not isinstance(other, Partition):
            return NotImplemented
        # the "set:|" and "set:&" hooks: registered by attnblocks.extend (KeyUnion,
        # KeyIntersection), which imports this module, so the specs need no lowering machinery
        make = hooks.lookup(self, f"set:{op}", None)
        if make is None:
            raise AttnblocksError(f"{self!r} {op} {other!r}: import attnblocks.extend first.")
        return make((self, other))

    def __or__(self, other: object) -> Partition:
        """``p | q``: one softmax over the union of the key sets (:class:`~attnblocks.KeyUnion`)."""
        return self._set_op(other, "|")

    def __and__(self, other: object) -> Partition:
        """``p & q``: the keys both allow (:class:`~attnblocks.KeyIntersection`)."""
        return self._set_op(other, "&")


@dataclass(frozen=True, repr=False)
class Window(Partition):
    """Non-overlapping windows of ``size`` tokens, optionally cyclically shifted (Swin).

    Args:
        size: the window's extent per axis: an int (every axis of a map of any rank), an
            ``(h, w)`` pair, or one entry per axis of any rank (``(8, 7, 7)``: Video Swin's
            ``(t, h, w)``; ``(16,)``: a 1-D sequence).
        shift: cyclic shift (Swin's SW-MSA); ``0 <= shift < size`` per axis. Tokens that the
            roll brings together from opposite borders do not attend to each other.
        clamp: what happens when the map is not larger than the window. ``None``: the window
            keeps its size and the map is padded (see ``Attention(pad=...)``). ``"swin"``: the
            authors' rule, if ``min(H, W) <= size`` the window becomes ``min(H, W)`` and the
            shift 0. ``"timm"``: timm 1.0's rule, per axis: the window becomes ``min(H, size)``
            and the shift is 0 on any axis where the map is not larger than the window.
            ``"torchvision"``: torchvision's rule, per axis: the window keeps its size (the map
            is padded) and the shift is 0 on any axis where the map is not larger than the
            window.

    Example:
        >>> Window(7, shift=3)
        Window(7, shift=3)
        >>> Window((7, 7)) == Window(7)
        True
        >>> Window((8, 7, 7), shift=(4, 3, 3)).rank
        3
    """

    size: int | tuple[int, ...]
    shift: int | tuple[int, ...] = 0
    clamp: str | None = None
    _positional: ClassVar[tuple[str, ...]] = ("size",)

    def __post_init__(self) -> None:
        size = axes("Window", "size", self.size)
        shift = axes("Window", "shift", self.shift, minimum=0)
        if len(ranks_of(size, shift)) > 1:
            raise AttnblocksError(
                f"Window: size={size} and shift={shift} give different numbers of axes."
            )
        rank = fixed_rank(size, shift) or 2
        if any(
            t >= w
            for w, t in zip(
                per_axis("Window", "size", size, rank), per_axis("Window", "shift", shift, rank)
            )
        ):
            raise AttnblocksError(
                f"Window: shift must be smaller than the window per axis, got "
                f"size={size}, shift={shift}."
            )
        if self.clamp not in CLAMP_RULES:
            raise AttnblocksError(
                f"Window: clamp must be one of {CLAMP_RULES}, got {self.clamp!r}."
            )
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "shift", shift)

    @property
    def rank(self) -> int | None:
        """The map rank the spec fixes (a per-axis size or shift of other than two equal
        entries), or ``None`` where it holds for any rank."""
        return fixed_rank(self.size, self.shift)


@dataclass(frozen=True, repr=False)
class Stripe(Partition):
    """Stripes of ``width`` tokens spanning the whole map along one axis (CSWin).

    Args:
        width: the stripe width (CSWin's ``split_size``).
        axis: the axis the stripe spans whole: ``"v"`` (vertical: full height, ``width``
            columns) or ``"h"`` (horizontal: ``width`` rows, full width), or an axis index
            of a map of any rank (negative counts from the last). A stripe is ``width`` tokens
            along every other axis; ``"v"`` and ``"h"`` name the last two axes (height and
            width, also of a ``(T, H, W)`` map), so on a 2-D map ``"v"`` is axis 0. ``None``
            means one axis per head group: under ``Split(n)`` the groups alternate vertical,
            horizontal, ... so ``Stripe(7)`` under ``Split(2)`` is CSWin's pair of branches.

    Example:
        >>> Stripe(7, axis="horizontal")
        Stripe(7, axis='h')
        >>> Stripe(7).resolve(1, 2)
        Stripe(7, axis='h')
        >>> Stripe(2, axis=0)  # a 3-D map: whole in time, 2 x 2 in space
        Stripe(2, axis=0)
    """

    width: int
    axis: str | int | None = None
    _positional: ClassVar[tuple[str, ...]] = ("width",)

    def __post_init__(self) -> None:
        pair("Stripe", "width", self.width)
        if isinstance(self.width, tuple):
            raise TypeError(f"Stripe: width must be an int, got {self.width!r}.")
        if self.axis is not None:
            if isinstance(self.axis, int) and not isinstance(self.axis, bool):
                return
            if self.axis not in _AXES:
                raise AttnblocksError(
                    f"Stripe: axis must be 'v' (vertical), 'h' (horizontal) or an axis index, "
                    f"got {self.axis!r}."
                )
            object.__setattr__(self, "axis", _AXES[self.axis])

    def is_generic(self) -> bool:
        return self.axis is None

    def resolve(self, index: int, count: int) -> Stripe:
        if self.axis is not None:
            return self
        return Stripe(self.width, axis="v" if index % 2 == 0 else "h")

    def axis_index(self, rank: int) -> int:
        """The index of the axis the stripe spans on a map of ``rank`` axes."""
        if self.axis is None:
            raise AttnblocksError(
                f"{self!r} has no axis and no head group to take one from: use "
                f"Stripe({self.width}, axis='v') or heads=Split(2)."
            )
        if isinstance(self.axis, str):
            if rank < 2:
                raise AttnblocksError(
                    f"{self!r}: axis {self.axis!r} names the height or width of an image, but "
                    f"the token map has {rank} axis: give an axis index (Stripe(w, axis=0) "
                    f"spans a 1-D map whole, which is Global())."
                )
            return rank - 2 if self.axis == "v" else rank - 1
        if not -rank <= self.axis < rank:
            raise AttnblocksError(
                f"{self!r}: axis {self.axis} does not exist on a token map of {rank} axes."
            )
        return self.axis % rank

    @property
    def rank(self) -> int | None:
        """Stripes hold for any rank (``"v"`` and ``"h"`` for at least two axes)."""
        return None


@dataclass(frozen=True, repr=False)
class Global(Partition):
    """Every token attends to every token.

    Example:
        >>> Global()
        Global()
    """


@dataclass(frozen=True, repr=False)
class Grid(Partition):
    """MaxViT's grid attention: a ``size x size`` grid of tokens spaced evenly over the map.

    The map is cut as ``b (g1 h) (g2 w) c -> (b h w) (g1 g2) c`` with ``g1, g2 = size``: each
    token set holds the tokens ``H/g1`` rows and ``W/g2`` columns apart, a dilated global
    window. It is a :class:`Window` of the transposed index order. In any rank the same holds
    per axis: ``size`` is an int or one grid extent per axis.

    Example:
        >>> Grid(7)
        Grid(7)
    """

    size: int | tuple[int, ...]
    _positional: ClassVar[tuple[str, ...]] = ("size",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", axes("Grid", "size", self.size))

    @property
    def rank(self) -> int | None:
        """The map rank a per-axis size fixes (see :attr:`Window.rank`)."""
        return fixed_rank(self.size)


@dataclass(frozen=True, repr=False)
class Downsample(Partition):
    """Every query attends to all tokens of a reduced copy of the map (PVTv2, Shunted).

    Queries stay at full resolution; keys and values come from the input map reduced by
    ``ratio``: a strided ``Conv2d(C, C, kernel=stride=ratio)`` over all ``C`` input channels,
    flatten, ``LayerNorm(C, eps=1e-5)``, optionally exact (erf) GELU, then the head group's own
    ``kv = Linear(C, 2*c)`` (first ``c`` outputs K, last ``c`` V, for the group's ``c``
    channels). Each head group owns its reduction and ``kv``. Ratio 1 means no conv and no norm
    (``kv`` reads the map directly, PVTv2's and Shunted's ``sr = 1``) unless ``conv1x1=True``.

    Map sizes not divisible by the ratio follow the authors' strided conv: it floors, so the
    last ``H % ratio`` rows and ``W % ratio`` columns feed no key (``Attention(pad="error")``
    refuses such maps instead). A map smaller than the ratio (nothing left to attend to) is an
    error.

    Args:
        ratio: the reduction factor, or a tuple with one factor per head group: under
            ``Split(2)``, ``Downsample((8, 4))`` reduces group 0 by 8 and group 1 by 4
            (Shunted's branches ``sr`` and ``sr/2``). A tuple of equal factors is one factor.
        act: ``None`` (PVTv2) or ``"gelu"`` (Shunted): the activation after the norm.
        conv1x1: whether a ratio of 1 still runs its reduction as a 1x1 conv + norm (+ act),
            as Shunted's second branch does at ``sr = 2``.
        ndim: the token map's rank, 2 for images (PVTv2, Shunted): the reduction is a
            ``Conv1d``, ``Conv2d`` or ``Conv3d`` of kernel and stride ``ratio`` on every axis.

    Example:
        >>> Downsample(8)
        Downsample(8)
        >>> Downsample((8, 4), act="gelu").resolve(1, 2)
        Downsample(4, act='gelu')
    """

    ratio: int | tuple[int, ...]
    act: str | None = None
    conv1x1: bool = False
    ndim: int = 2
    _positional: ClassVar[tuple[str, ...]] = ("ratio",)

    def __post_init__(self) -> None:
        ratio = self.ratio
        if isinstance(ratio, (tuple, list)):
            if not ratio:
                raise AttnblocksError("Downsample: ratio must be an int or a non-empty tuple.")
            ratio = tuple(positive_int("Downsample", "ratio", r) for r in ratio)
            if len(set(ratio)) == 1:
                ratio = ratio[0]
        else:
            positive_int("Downsample", "ratio", ratio)
        if self.act not in ACTIVATIONS:
            raise AttnblocksError(
                f"Downsample: act must be one of {ACTIVATIONS}, got act={self.act!r}."
            )
        if not isinstance(self.conv1x1, bool):
            raise TypeError(f"Downsample: conv1x1 must be a bool, got {self.conv1x1!r}.")
        check_ndim("Downsample", self.ndim)
        object.__setattr__(self, "ratio", ratio)

    def is_generic(self) -> bool:
        return isinstance(self.ratio, tuple)

    def resolve(self, index: int, count: int) -> Downsample:
        if not isinstance(self.ratio, tuple):
            return self
        if len(self.ratio) != count:
            raise AttnblocksError(
                f"{self!r} gives {len(self.ratio)} ratios, one per head group, but the heads "
                f"are split into {count} groups."
            )
        return dataclasses.replace(self, ratio=self.ratio[index])

    @property
    def rank(self) -> int:
        """The token-map rank the reduction's convolution is built for (``ndim``)."""
        return self.ndim

    @property
    def reduces(self) -> bool:
        """Whether keys pass through a reduction (conv + norm) rather than the raw map."""
        return isinstance(self.ratio, tuple) or self.ratio > 1 or self.conv1x1

    def reduced_size(self, *shape: int) -> tuple[int, ...]:
        """The key map's size on a map of size ``shape``: ``(H // ratio, W // ratio)`` (floor)
        on 2-D, ``shape // ratio`` per axis in any rank."""
        if isinstance(self.ratio, tuple):
            raise AttnblocksError(
                f"{self!r} has one ratio per head group: resolve it with heads=Split(n)."
            )
        r = self.ratio
        if len(shape) != self.ndim:
            raise AttnblocksError(
                f"{self!r} reduces {self.ndim}-D token maps (ndim={self.ndim}), got a "
                f"{len(shape)}-D map of size {fmt_size(shape)}."
            )
        if min(shape) < r:
            raise AttnblocksError(
                f"{self!r} cannot reduce a {fmt_size(shape)} token map: it is smaller than the "
                f"ratio {r}, so no key would be left.\n  Hint: use a ratio of at most {min(shape)} "
                f"on this map."
            )
        return tuple(n // r for n in shape)

    def describe(self, *shape: int, pad: str = "mask") -> list[str]:
        """Lines for :func:`~attnblocks.explain`."""
        reduced = self.reduced_size(*shape)
        size, rsize = fmt_size(shape), fmt_size(reduced)
        if not self.reduces:
            return [f"keys: all {size} tokens, no reduction"]
        conv = f"Conv{self.ndim}d"
        steps = f"{conv}(k=s={self.ratio}) -> LayerNorm" + (" -> GELU" if self.act else "")
        dropped = ""
        if any(n % self.ratio for n in shape) and len(shape) == 2:
            dropped = (
                f", last {shape[0] % self.ratio} rows / {shape[1] % self.ratio} columns dropped"
            )
        elif any(n % self.ratio for n in shape):
            left = ", ".join(str(n % self.ratio) for n in shape)
            dropped = f", last ({left}) tokens per axis dropped"
        return [f"keys: {rsize} reduced tokens ({steps}){dropped}"]


BORDERS = ("zeros", "shift", "mask")


def _stored(value) -> tuple:
    """A Dilated field as ``per_axis`` reads it: a tuple as is, an int or bool as its pair."""
    return value if isinstance(value, tuple) else (value, value)


def _any_true(causal: bool | tuple[bool, ...]) -> bool:
    """Whether a stored ``causal`` field makes any axis causal."""
    return any(_stored(causal))


def _axis_ints(name: str, field_name: str, value) -> int | tuple[int, ...]:
    """An int, or a per-axis tuple of ints; an equal pair is stored as its int (any rank),
    as :func:`~attnblocks._spec.any_rank` reads sizes, and other tuples fix the rank."""
    if isinstance(value, (tuple, list)):
        if not value:
            raise AttnblocksError(
                f"{name}: {field_name} must be an int or a non-empty per-axis tuple, got {value!r}."
            )
        axes = tuple(positive_int(name, field_name, v) for v in value)
        return axes[0] if any_rank(axes) else axes
    return positive_int(name, field_name, value)


def _axis_bools(name: str, field_name: str, value) -> bool | tuple[bool, ...]:
    """A bool, or a per-axis tuple of bools; an equal pair is stored as its bool (any rank)."""
    if isinstance(value, (tuple, list)):
        if not value or not all(isinstance(v, bool) for v in value):
            raise TypeError(
                f"{name}: {field_name} must be a bool or a non-empty per-axis tuple of bools, "
                f"got {value!r}."
            )
        return value[0] if any_rank(tuple(value)) else tuple(value)
    if not isinstance(value, bool):
        raise TypeError(f"{name}: {field_name} must be a bool, got {value!r}.")
    return value


@dataclass(frozen=True, repr=False)
class Dilated(Partition):
    """A ``kernel x kernel`` neighbourhood around each query, its keys ``dilation`` apart.

    Query ``(y, x)`` attends to the keys ``(y + a*r, x + b*r)`` for ``a, b`` in
    ``-(k-1)/2 .. (k-1)/2`` (DilateFormer's sliding window). ``border`` says what happens where
    that window leaves the map:

    - ``"zeros"`` (DilateFormer): out-of-map keys are zero vectors that stay in the softmax
      (logit 0, value 0), exactly as the authors' zero-padded unfold.
    - ``"shift"`` (NAT / DiNAT / NATTEN): the window slides inward, so every query sees exactly
      ``k*k`` real keys on its dilation sub-grid (positions congruent to it modulo ``r``).
      Needs ``kernel * dilation <= H`` and ``<= W``; an even kernel has its extra key on the
      low side. See :class:`Neighborhood`.
    - ``"mask"``: the centred window, out-of-map keys excluded.

    Kernel and dilation may differ per axis, as NATTEN's ``kernel_size`` and ``dilation``
    tuples: ``kernel=(7, 5)`` is 7 rows by 5 columns. A tuple of dilations means one per head
    group (DilateFormer), so a per-axis dilation is written as one group's pair:
    ``dilation=((2, 3),)`` (rows 2 apart, columns 3 apart); under a split each group's entry
    may be an int or a pair, ``dilation=(1, (2, 3))``.

    Any rank: a token map of shape ``(L_0, ..., L_{n-1})`` (1-D sequences, 2-D images, 3-D
    videos) takes the same rule on every axis, and the key set of a query is the product over
    the axes of its per-axis key sets. An int (kernel, dilation, stride) or bool (causal) holds
    on every axis; a per-axis tuple fixes the rank: ``Neighborhood((3, 7, 7),
    dilation=((1, 2, 2),), stride=(1, 2, 2), causal=(True, False, False))`` is a 3-D map.

    The rule along one axis of length ``L``, as NATTEN 0.21 computes it (its ``na1d`` /
    ``na2d`` / ``na3d``; checked against them, ``tests/test_natten_nd.py``): position ``p``
    lies on sub-grid ``p % r`` at index ``i = p // r``, a sub-grid of
    ``L_g = ceil((L - p % r) / r)`` positions; keys are the positions ``p % r + j * r`` of the
    query's own sub-grid with ``j`` in:

    - ``stride`` ``s``: the queries ``i`` of one tile ``i // s`` share one key set, that of
      their tile's *leader* (non-causal: ``min(s * (i // s) + s // 2, L_g - 1)``, the centre
      query, the right one of an even tile; causal: ``min(s * (i // s) + s - 1, L_g - 1)``,
      the last). ``stride == kernel`` (on maps that the kernel divides) is blocked attention,
      :class:`Window` of the kernel. ``1 <= s <= k``, as NATTEN requires.
    - ``"shift"``, not causal: ``start <= j < start + k`` with
      ``start = clip(leader - k // 2, 0, L_g - k)``.
    - ``"shift"``, causal (NATTEN's ``is_causal``): ``leader - k < j <= i``: the window ends
      at the query itself (not at its leader), so along a causal axis a key never lies after
      its query; near the start a query has fewer keys (no inward shift).
    - ``"mask"``: ``|j - leader| <= k // 2`` and ``0 <= j < L_g``; ``"zeros"``: the same
      slots, the out-of-map ones kept as zero keys. ``causal`` needs ``border="shift"``.

    Args:
        kernel: the window side ``k`` (odd for ``"zeros"`` and ``"mask"``), or one per axis.
        dilation: the step ``r`` between keys, ``((ry, rx),)`` per axis, or a tuple with one
            entry per head group (a generic partition: ``Dilated(3, dilation=(1, 2, 3))`` under
            ``Split(3)`` is DilateFormer's multi-scale dilated attention).
        border: ``"zeros"``, ``"shift"`` or ``"mask"``.
        stride: the query tile ``s`` whose queries share one key set (NATTEN's ``stride``),
            an int or one per axis, ``1 <= s <= k``.
        causal: whether a key never lies after its query (NATTEN's ``is_causal``), a bool or
            one per axis; ``border="shift"`` only.

    Example:
        >>> Dilated(3, dilation=(1, 2, 3))
        Dilated(3, dilation=(1, 2, 3))
        >>> Dilated(3, dilation=(1, 2, 3)).resolve(2, 3)
        Dilated(3, dilation=3)
        >>> Dilated(7, border="shift")
        Dilated(7, border='shift')
        >>> Neighborhood((7, 5), dilation=((2, 3),)).kernel_size
        (7, 5)
        >>> Neighborhood((3, 7, 7), stride=(1, 2, 2), causal=(True, False, False))
        Neighborhood((3, 7, 7), stride=(1, 2, 2), causal=(True, False, False))
    """

    kernel: int | tuple[int, ...]
    dilation: int | tuple = 1
    border: str = "zeros"
    stride: int | tuple[int, ...] = 1
    causal: bool | tuple[bool, ...] = False
    _positional: ClassVar[tuple[str, ...]] = ("kernel",)

    def __post_init__(self) -> None:
        name = type(self).__name__
        kernel = _axis_ints(name, "kernel", self.kernel)
        if self.border not in BORDERS:
            raise AttnblocksError(f"{name}: border must be one of {BORDERS}, got {self.border!r}.")
        ks = kernel if isinstance(kernel, tuple) else (kernel,)
        if self.border != "shift" and any(k % 2 == 0 for k in ks):
            raise AttnblocksError(
                f"{name}: border={self.border!r} centres the window on the query, so the kernel "
                f"must be odd, got kernel={kernel} (border='shift' allows even kernels)."
            )
        dilation = self.dilation
        if isinstance(dilation, (tuple, list)):
            if not dilation:
                raise AttnblocksError(f"{name}: dilation must not be an empty tuple.")
            dilation = tuple(
                _axis_ints(name, "dilation", r)
                if isinstance(r, (tuple, list))
                else positive_int(name, "dilation", r)
                for r in dilation
            )
            if len(dilation) == 1 and not isinstance(dilation[0], tuple):
                dilation = dilation[0]
        else:
            positive_int(name, "dilation", dilation)
        stride = _axis_ints(name, "stride", self.stride)
        causal = _axis_bools(name, "causal", self.causal)
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "dilation", dilation)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "causal", causal)
        given = {"kernel": kernel, "stride": stride, "causal": causal}
        groups = dilation if isinstance(dilation, tuple) else (dilation,)
        given.update({f"dilation[{i}]": r for i, r in enumerate(groups)})
        ranks = {f: len(v) for f, v in given.items() if isinstance(v, tuple)}
        if len(set(ranks.values())) > 1:
            raise AttnblocksError(
                f"{name}: the per-axis tuples give different ranks: "
                + ", ".join(f"{f}={given[f]!r} ({n} axes)" for f, n in ranks.items())
                + "."
            )
        rank = next(iter(ranks.values()), 1)
        for k, s in zip(
            per_axis(name, "kernel", _stored(kernel), rank),
            per_axis(name, "stride", _stored(stride), rank),
        ):
            if s > k:
                raise AttnblocksError(
                    f"{name}: stride must be at most the kernel on every axis (NATTEN's rule: a "
                    f"tile of queries shares one window), got kernel={kernel!r}, "
                    f"stride={stride!r}."
                )
        if _any_true(causal) and self.border != "shift":
            raise AttnblocksError(
                f"{name}: causal={causal!r} needs border='shift' (NATTEN's causal "
                f"neighbourhood: the window ends at the query), got border={self.border!r}; "
                f"use Neighborhood(...) or intersect with Causal()."
            )

    def __repr__(self) -> str:  # Spec's pair-collapsing would print dilation=(2, 2) as 2
        parts = [repr(self.kernel)]
        if self.dilation != 1:
            parts.append(f"dilation={self.dilation!r}")
        shown = {f.name for f in dataclasses.fields(self) if f.repr}
        if "border" in shown and self.border != "zeros":
            parts.append(f"border={self.border!r}")
        if self.stride != 1:
            parts.append(f"stride={self.stride!r}")
        if self.causal is not False:
            parts.append(f"causal={self.causal!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def is_generic(self) -> bool:
        return isinstance(self.dilation, tuple) and len(self.dilation) > 1

    def resolve(self, index: int, count: int) -> Dilated:
        if not self.is_generic():
            return self
        if len(self.dilation) != count:
            raise AttnblocksError(
                f"{self!r} gives one dilation per head group ({len(self.dilation)} dilations), "
                f"but the heads are split into {count} groups: use "
                f"heads=Split({len(self.dilation)}) or give {count} dilations (a per-axis "
                f"dilation is one group's pair: dilation=((2, 3),))."
            )
        r = self.dilation[index]
        return dataclasses.replace(self, dilation=(r,) if isinstance(r, tuple) else r)

    @property
    def rank(self) -> int | None:
        """The rank the per-axis tuples fix, or ``None`` (every field holds on any rank)."""
        groups = self.dilation if isinstance(self.dilation, tuple) else (self.dilation,)
        for v in (self.kernel, self.stride, self.causal, *groups):
            if isinstance(v, tuple):
                return len(v)
        return None

    @property
    def is_plain(self) -> bool:
        """Whether stride is 1 and no axis is causal (the classic sliding window)."""
        return set(_stored(self.stride)) == {1} and not _any_true(self.causal)

    def axes(self, rank: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...],
                                       tuple[bool, ...]]:  # fmt: skip
        """``(kernel, dilation, stride, causal)``, each one entry per axis of a rank-``rank``
        map (a concrete partition only); raises where a per-axis tuple has another rank."""
        if self.is_generic():
            raise AttnblocksError(f"{self!r} has one dilation per head group: resolve it first.")
        r = self.dilation[0] if isinstance(self.dilation, tuple) else self.dilation
        owner = repr(self)
        return (
            per_axis(owner, "kernel", _stored(self.kernel), rank),
            per_axis(owner, "dilation", _stored(r), rank),
            per_axis(owner, "stride", _stored(self.stride), rank),
            per_axis(owner, "causal", _stored(self.causal), rank),
        )

    @property
    def kernel_size(self) -> tuple[int, int]:
        """``(kh, kw)``: the window's rows and columns on a 2-D map (other ranks:
        :meth:`axes`)."""
        return self._planar("kernel", self.kernel)

    @property
    def dilation_size(self) -> tuple[int, int]:
        """``(ry, rx)``: the step between keys per axis of a 2-D map (a concrete partition
        only; other ranks: :meth:`axes`)."""
        r = self.dilation
        if self.is_generic():
            raise AttnblocksError(f"{self!r} has one dilation per head group: resolve it first.")
        return self._planar("dilation", r[0] if isinstance(r, tuple) else r)

    def _planar(self, name: str, value) -> tuple[int, int]:
        if not isinstance(value, tuple):
            return (value, value)
        if len(value) != 2:
            raise AttnblocksError(
                f"{self!r}: {name}={value!r} is written for {len(value)}-D token maps, and this "
                f"use of it (a 2-D (h, w) {name}) is 2-D only."
            )
        return value


@dataclass(frozen=True, repr=False)
class Neighborhood(Dilated):
    """NAT / DiNAT neighbourhood attention: ``Dilated(kernel, dilation, border="shift")``.

    Hassani et al., "Neighborhood Attention Transformer" (CVPR 2023) and "Dilated Neighborhood
    Attention Transformer" (2022). Each query attends to the ``k*k`` keys nearest to it on its
    dilation sub-grid; at the borders the window shifts inward, never padded. Any rank, with
    NATTEN's ``stride`` and ``is_causal`` (``causal``) per axis: see :class:`Dilated`.

    Example:
        >>> Neighborhood(7, dilation=2)
        Neighborhood(7, dilation=2)
        >>> Neighborhood(5, stride=5, causal=(True, False))
        Neighborhood(5, stride=5, causal=(True, False))
    """

    border: str = field(default="shift", init=False, repr=False)
