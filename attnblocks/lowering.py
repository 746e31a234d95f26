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
from ._errors import AttnblocksError
from .heads import Split
from .partition import Global, Grid, Partition, Stripe, Window

__all__ = [
    "BACKENDS",
    "PAD_MODES",
    "GroupPlan",
    "RectLayout",
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
    """Window geometry of a rectangular partition on an ``H x W`` map.

    The map is rolled by ``-shift``, padded on the bottom/right to ``Hp x Wp`` (padded, then
    rolled, for ``pad_mode="torchvision"``) and cut into
    ``nh x nw`` windows of ``window`` tokens: contiguous blocks (``grid=False``,
    ``b (nh wh) (nw ww) c``) or dilated grids (``grid=True``, ``b (wh nh) (ww nw) c``).
    ``regions`` says how the shift's wrapped-around tokens are kept apart (``"wrap"``: by
    whether a token wrapped, on the real map; ``"timm"``: Swin's three bands on the padded
    canvas, as timm computes them) and ``mask_pad`` whether padded keys are masked out.

    Example:
        >>> from attnblocks import Window
        >>> layout = rect_layout(Window(7, shift=3), 14, 20)
        >>> layout.pad, layout.counts, layout.tokens, layout.needs_mask
        ((0, 1), (2, 3), 49, True)
    """

    H: int
    W: int
    window: tuple[int, int]
    shift: tuple[int, int] = (0, 0)
    grid: bool = False
    pad_mode: str = "mask"

    @property
    def Hp(self) -> int:
        return math.ceil(self.H / self.window[0]) * self.window[0]

    @property
    def Wp(self) -> int:
        return math.ceil(self.W / self.window[1]) * self.window[1]

    @property
    def pad(self) -> tuple[int, int]:
        """Rows and columns of padding added at the bottom and right."""
        return (self.Hp - self.H, self.Wp - self.W)

    @property
    def counts(self) -> tuple[int, int]:
        """Number of windows along each axis, ``(nh, nw)``."""
        return (self.Hp // self.window[0], self.Wp // self.window[1])

    @property
    def num_windows(self) -> int:
        return self.counts[0] * self.counts[1]

    @property
    def tokens(self) -> int:
        """Tokens per window, ``T = wh * ww``."""
        return self.window[0] * self.window[1]

    @property
    def mask_pad(self) -> bool:
        return self.pad_mode == "mask" and self.pad != (0, 0)

    @property
    def regions(self) -> str | None:
        if self.shift == (0, 0):
            return None
        return "timm" if self.pad_mode in INPUT_PADS else "wrap"

    @property
    def needs_mask(self) -> bool:
        return self.mask_pad or self.regions is not None

    @property
    def pattern(self) -> str:
        """The einops pattern that cuts the (rolled, padded) map into windows."""
        if self.grid:
            return "b (wh nh) (ww nw) (h d) -> b (nh nw) h (wh ww) d"
        return "b (nh wh) (nw ww) (h d) -> b (nh nw) h (wh ww) d"


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


def _divisibility_error(spec: Partition, H: int, W: int, window: tuple[int, int]) -> str:
    bad = H if H % window[0] else W
    size = window[0] if H % window[0] else window[1]
    Hn = math.ceil(H / window[0]) * window[0]
    Wn = math.ceil(W / window[1]) * window[1]
    return (
        f"{spec!r} cannot partition a {H}x{W} token map without padding: {bad} is not "
        f"divisible by {size}.\n  Hint: use pad='mask' (default) or resize the map to {Hn}x{Wn}."
    )


@size_cache(1024)
def rect_layout(partition: Partition, H: int, W: int, pad: str = "mask") -> RectLayout:
    """The window geometry of a rectangular partition (Window, Stripe, Global, Grid) on a map.

    Example:
        >>> from attnblocks import Stripe
        >>> rect_layout(Stripe(7, axis="h"), 14, 20)
        RectLayout(H=14, W=20, window=(7, 20), shift=(0, 0), grid=False, pad_mode='mask')
    """
    if H < 1 or W < 1:
        raise AttnblocksError(f"{partition!r}: the token map must be at least 1x1, got {H}x{W}.")
    if pad not in PAD_MODES:
        raise AttnblocksError(f"pad must be one of {PAD_MODES}, got {pad!r}.")
    grid = False
    shift: tuple[int, int] = (0, 0)
    if isinstance(partition, Window):
        window, shift = partition.size, partition.shift
        if partition.clamp == "swin" and min(H, W) <= min(window):
            window, shift = (min(H, W),) * 2, (0, 0)
        elif partition.clamp in ("timm", "torchvision"):
            # per axis: no shift where the map is not larger than the window; timm also shrinks
            # the window to the map (torchvision pads the map instead)
            shift = tuple(0 if r <= w else s for r, w, s in zip((H, W), window, shift))
            if partition.clamp == "timm":
                window = (min(H, window[0]), min(W, window[1]))
    elif isinstance(partition, Stripe):
        if partition.axis is None:
            raise AttnblocksError(
                f"{partition!r} has no axis and no head group to take one from: use "
                f"Stripe({partition.width}, axis='v') or heads=Split(2)."
            )
        window = (H, partition.width) if partition.axis == "v" else (partition.width, W)
    elif isinstance(partition, Global):
        window = (H, W)
    elif isinstance(partition, Grid):
        window, grid = partition.size, True
    else:
        raise AttnblocksError(f"{partition!r} is not a rectangular partition.")
    if pad == "error" and (H % window[0] or W % window[1]):
        raise AttnblocksError(_divisibility_error(partition, H, W, window))
    return RectLayout(H, W, window, shift, grid, pad)


Describe = Callable[[Partition, int, int, str], list[str]]


def register_describe(*types: type[Partition]) -> Callable[[Describe], Describe]:
    """Decorator: ``fn(partition, H, W, pad) -> lines`` says how ``types`` lower, for
    :func:`~attnblocks.explain` (the ``describe`` hook). A partition class with a
    ``describe(H, W, pad)`` method needs none."""

    def deco(fn: Describe) -> Describe:
        return hooks.register("describe", types, fn)

    return deco
