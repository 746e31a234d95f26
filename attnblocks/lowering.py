"""Lowering: from specs and a map size to plain-data plans (no tensors).

``resolve_groups`` turns an attention spec into its head groups (each with its concrete
partition, heads and channels); ``rect_layout`` turns a rectangular partition and a map size
into the window geometry (padding, roll, window shape, masking rules). Both are pure and
cached, so a module computes each plan once per map size. (How a plan is then run is a
*backend* per head group, and a family may have several *strategies*: the sliding windows'
slices and tiles.) :func:`~attnblocks.explain` prints the plans of a spec.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from . import hooks
from ._cache import size_cache
from ._errors import AttnblocksError, fmt_size
from ._spec import per_axis
from .heads import Split
from .partition import Global, Grid, Partition, Stripe, Window

__all__ = [
    "BACKENDS",
    "PAD_MODES",
    "GroupPlan",
    "RectLayout",
    "map_shape",
    "rect_layout",
    "register_describe",
    "resolve_groups",
]

PAD_MODES = ("mask", "zeros", "timm", "torchvision", "error")
# the pad modes whose padded tokens are zero inputs to the projection (they carry its bias)
INPUT_PADS = ("timm", "torchvision")
BACKENDS = ("auto", "eager", "flex", "dense")


@dataclass(frozen=True)
class GroupPlan:
    """One head group: its concrete partition, heads ``[h0, h1)`` and channels ``[c0, c1)``.

    Example:
        >>> from attnblocks import Attention, Split, Stripe
        >>> Attention(partition=Stripe(7), heads=Split(2)).groups(dim=64, num_heads=4)[1]
        GroupPlan(index=1, partition=Stripe(7, axis='h'), heads=(2, 4), channels=(32, 64))
    """

    index: int
    partition: Partition
    heads: tuple[int, int]
    channels: tuple[int, int]

    @property
    def num_heads(self) -> int:
        return self.heads[1] - self.heads[0]

    @property
    def dim(self) -> int:
        return self.channels[1] - self.channels[0]


@dataclass(frozen=True)
class RectLayout:
    """Window geometry of a rectangular partition on a token map of any rank.

    The map (``shape``, e.g. ``(H, W)`` or ``(T, H, W)``) is rolled by ``-shift``, padded at
    the end of every axis to ``padded`` (padded, then rolled, for ``pad_mode="torchvision"``)
    and cut into ``counts`` windows of ``window`` tokens: contiguous blocks (``grid=False``,
    ``b (n0 w0) (n1 w1) ... c``) or dilated grids (``grid=True``, ``b (w0 n0) (w1 n1) ... c``).
    ``regions`` says how the shift's wrapped-around tokens are kept apart (``"wrap"``: by
    whether a token wrapped, on the real map; ``"timm"``: Swin's three bands per axis on the
    padded canvas, as timm and torchvision compute them) and ``mask_pad`` whether padded keys
    are masked out.

    Example:
        >>> from attnblocks import Window
        >>> layout = rect_layout(Window(7, shift=3), 14, 20)
        >>> layout.pad, layout.counts, layout.tokens, layout.needs_mask
        ((0, 1), (2, 3), 49, True)
        >>> rect_layout(Window((8, 7, 7)), 4, 14, 14).window
        (8, 7, 7)
    """

    shape: tuple[int, ...]
    window: tuple[int, ...]
    shift: tuple[int, ...] = ()
    grid: bool = False
    pad_mode: str = "mask"

    def __post_init__(self) -> None:
        if not self.shift:
            object.__setattr__(self, "shift", (0,) * len(self.shape))

    @property
    def ndim(self) -> int:
        """The map's rank."""
        return len(self.shape)

    @property
    def H(self) -> int:
        """The first axis (a 2-D map's height)."""
        return self.shape[0]

    @property
    def W(self) -> int:
        """The last axis (a 2-D map's width)."""
        return self.shape[-1]

    @property
    def padded(self) -> tuple[int, ...]:
        """The padded map's size per axis (a multiple of the window)."""
        return tuple(math.ceil(n / w) * w for n, w in zip(self.shape, self.window))

    @property
    def Hp(self) -> int:
        return self.padded[0]

    @property
    def Wp(self) -> int:
        return self.padded[-1]

    @property
    def pad(self) -> tuple[int, ...]:
        """Tokens of padding added at the end of each axis (bottom and right on 2-D)."""
        return tuple(p - n for p, n in zip(self.padded, self.shape))

    @property
    def counts(self) -> tuple[int, ...]:
        """Number of windows along each axis (``(nh, nw)`` on 2-D)."""
        return tuple(p // w for p, w in zip(self.padded, self.window))

    @property
    def num_windows(self) -> int:
        return math.prod(self.counts)

    @property
    def tokens(self) -> int:
        """Tokens per window, ``T = prod(window)``."""
        return math.prod(self.window)

    @property
    def mask_pad(self) -> bool:
        return self.pad_mode == "mask" and any(self.pad)

    @property
    def regions(self) -> str | None:
        if not any(self.shift):
            return None
        return "timm" if self.pad_mode in INPUT_PADS else "wrap"

    @property
    def needs_mask(self) -> bool:
        return self.mask_pad or self.regions is not None

    @property
    def sizes(self) -> dict[str, int]:
        """The window extents by the axis names of :attr:`pattern` (``wh``, ``ww`` on 2-D)."""
        return dict(zip(_window_names(self.ndim), self.window))

    @property
    def count_sizes(self) -> dict[str, int]:
        """The window counts by the axis names of :attr:`pattern` (``nh``, ``nw`` on 2-D)."""
        return dict(zip(_count_names(self.ndim), self.counts))

    @property
    def pattern(self) -> str:
        """The einops pattern that cuts the (rolled, padded) map into windows."""
        ws, ns = _window_names(self.ndim), _count_names(self.ndim)
        axes = [f"({w} {n})" if self.grid else f"({n} {w})" for w, n in zip(ws, ns)]
        return f"b {' '.join(axes)} (h d) -> b ({' '.join(ns)}) h ({' '.join(ws)}) d"


def _window_names(rank: int) -> tuple[str, ...]:
    return ("wh", "ww") if rank == 2 else tuple(f"w{i}" for i in range(rank))


def _count_names(rank: int) -> tuple[str, ...]:
    return ("nh", "nw") if rank == 2 else tuple(f"n{i}" for i in range(rank))


def resolve_groups(
    partition: Partition | None, heads: Split | None, num_heads: int, dim: int
) -> tuple[GroupPlan, ...]:
    """Split ``num_heads`` heads and ``dim`` channels into head groups with their partitions."""
    split = heads or Split(1)
    split.check(num_heads)
    n = split.count
    hg, cg = num_heads // n, dim // n
    groups = []
    for i in range(n):
        base = split.partitions[i] if split.partitions is not None else partition
        part = (base or Global()).resolve(i, n)
        groups.append(GroupPlan(i, part, (i * hg, (i + 1) * hg), (i * cg, (i + 1) * cg)))
    return tuple(groups)


def _divisibility_error(spec: Partition, shape: tuple[int, ...], window: tuple[int, ...]) -> str:
    axis = next(i for i, (n, w) in enumerate(zip(shape, window)) if n % w)
    fit = fmt_size(math.ceil(n / w) * w for n, w in zip(shape, window))
    return (
        f"{spec!r} cannot partition a {fmt_size(shape)} token map without padding: "
        f"{shape[axis]} is not divisible by {window[axis]}.\n  Hint: use pad='mask' (default) "
        f"or resize the map to {fit}."
    )


def map_shape(spec: Partition, shape: tuple) -> tuple[int, ...]:
    """Check a token map's size: ints, at least one axis, each at least 1; and the rank the
    spec fixes (:attr:`~attnblocks.Partition.rank`)."""
    if not shape or any(isinstance(n, (str, bool)) for n in shape):
        raise TypeError(
            f"{spec!r}: the token map's size must be one int per axis (pad is a keyword), got "
            f"{shape!r}."
        )
    # sizes as ints: under compile a symbolic size is specialised here (one graph per map
    # size, as the plans are per size), so plans hold plain ints after a dynamic recompile
    shape = tuple(int(n) for n in shape)
    if min(shape) < 1:
        raise AttnblocksError(
            f"{spec!r}: the token map must be at least 1 token per axis, got {fmt_size(shape)}."
        )
    if spec.rank is not None and spec.rank != len(shape):
        raise AttnblocksError(
            f"{spec!r} is written for {spec.rank}-D token maps, got a {len(shape)}-D map of "
            f"size {fmt_size(shape)}."
        )
    return tuple(shape)


@size_cache(1024)
def rect_layout(partition: Partition, *shape: int, pad: str = "mask") -> RectLayout:
    """The window geometry of a rectangular partition (Window, Stripe, Global, Grid) on a map
    of size ``shape`` (``H, W``; ``T, H, W``; ``L``).

    Example:
        >>> from attnblocks import Stripe
        >>> rect_layout(Stripe(7, axis="h"), 14, 20)
        RectLayout(shape=(14, 20), window=(7, 20), shift=(0, 0), grid=False, pad_mode='mask')
    """
    shape = map_shape(partition, shape)
    if pad not in PAD_MODES:
        raise AttnblocksError(f"pad must be one of {PAD_MODES}, got {pad!r}.")
    n, name = len(shape), type(partition).__name__
    grid = False
    shift = (0,) * n
    if isinstance(partition, Window):
        window = per_axis(name, "size", partition.size, n)
        shift = per_axis(name, "shift", partition.shift, n)
        if partition.clamp == "swin" and min(shape) <= min(window):
            window, shift = (min(shape),) * n, (0,) * n
        elif partition.clamp in ("timm", "torchvision"):
            # per axis: no shift where the map is not larger than the window; timm also shrinks
            # the window to the map (torchvision's 2-D attention pads the map instead)
            shift = tuple(0 if r <= w else s for r, w, s in zip(shape, window, shift))
            if partition.clamp == "timm":
                window = tuple(min(r, w) for r, w in zip(shape, window))
    elif isinstance(partition, Stripe):
        axis = partition.axis_index(n)
        window = tuple(r if i == axis else partition.width for i, r in enumerate(shape))
    elif isinstance(partition, Global):
        window = shape
    elif isinstance(partition, Grid):
        window, grid = per_axis(name, "size", partition.size, n), True
    else:
        raise AttnblocksError(f"{partition!r} is not a rectangular partition.")
    if pad == "error" and any(r % w for r, w in zip(shape, window)):
        raise AttnblocksError(_divisibility_error(partition, shape, window))
    return RectLayout(shape, window, shift, grid, pad)


Describe = Callable[[Partition, int, int, str], list[str]]


def register_describe(*types: type[Partition]) -> Callable[[Describe], Describe]:
    """Decorator: ``fn(partition, H, W, pad) -> lines`` says how ``types`` lower, for
    :func:`~attnblocks.explain` (the ``describe`` hook). A partition class with a
    ``describe(H, W, pad)`` method needs none."""

    def deco(fn: Describe) -> Describe:
        return hooks.register("describe", types, fn)

    return deco
