"""Partition specs: which tokens attend to which.

A partition is a frozen, hashable description with no tensors. Lowering it to index
arithmetic for a concrete map size happens in :mod:`attnblocks.lowering`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ._errors import AttnblocksError
from ._spec import Spec, pair

__all__ = ["CLAMP_RULES", "Global", "Grid", "Partition", "Stripe", "Window"]

CLAMP_RULES = (None, "swin", "timm")
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


@dataclass(frozen=True, repr=False)
class Window(Partition):
    """Non-overlapping windows of ``size`` tokens, optionally cyclically shifted (Swin).

    Args:
        size: window height and width, an int or an ``(h, w)`` pair.
        shift: cyclic shift (Swin's SW-MSA); ``0 <= shift < size`` per axis. Tokens that the
            roll brings together from opposite borders do not attend to each other.
        clamp: what happens when the map is not larger than the window. ``None``: the window
            keeps its size and the map is padded (see ``Attention(pad=...)``). ``"swin"``: the
            authors' rule, if ``min(H, W) <= size`` the window becomes ``min(H, W)`` and the
            shift 0. ``"timm"``: timm 1.0's rule, per axis: the window becomes ``min(H, size)``
            and the shift is 0 on any axis where the map is not larger than the window.

    Example:
        >>> Window(7, shift=3)
        Window(7, shift=3)
        >>> Window((7, 7)) == Window(7)
        True
    """

    size: int | tuple[int, int]
    shift: int | tuple[int, int] = 0
    clamp: str | None = None
    _positional: ClassVar[tuple[str, ...]] = ("size",)

    def __post_init__(self) -> None:
        size = pair("Window", "size", self.size)
        shift = pair("Window", "shift", self.shift, minimum=0)
        if shift[0] >= size[0] or shift[1] >= size[1]:
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


@dataclass(frozen=True, repr=False)
class Stripe(Partition):
    """Stripes of ``width`` tokens spanning the whole map along one axis (CSWin).

    Args:
        width: the stripe width (CSWin's ``split_size``).
        axis: ``"v"`` (vertical: full height, ``width`` columns) or ``"h"`` (horizontal:
            ``width`` rows, full width). ``None`` means one axis per head group: under
            ``Split(n)`` the groups alternate vertical, horizontal, ... so ``Stripe(7)`` under
            ``Split(2)`` is CSWin's pair of branches.

    Example:
        >>> Stripe(7, axis="horizontal")
        Stripe(7, axis='h')
        >>> Stripe(7).resolve(1, 2)
        Stripe(7, axis='h')
    """

    width: int
    axis: str | None = None
    _positional: ClassVar[tuple[str, ...]] = ("width",)

    def __post_init__(self) -> None:
        pair("Stripe", "width", self.width)
        if isinstance(self.width, tuple):
            raise TypeError(f"Stripe: width must be an int, got {self.width!r}.")
        if self.axis is not None:
            if self.axis not in _AXES:
                raise AttnblocksError(
                    f"Stripe: axis must be 'v' (vertical) or 'h' (horizontal), got {self.axis!r}."
                )
            object.__setattr__(self, "axis", _AXES[self.axis])

    def is_generic(self) -> bool:
        return self.axis is None

    def resolve(self, index: int, count: int) -> Stripe:
        if self.axis is not None:
            return self
        return Stripe(self.width, axis="v" if index % 2 == 0 else "h")


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
    window. It is a :class:`Window` of the transposed index order.

    Example:
        >>> Grid(7)
        Grid(7)
    """

    size: int | tuple[int, int]
    _positional: ClassVar[tuple[str, ...]] = ("size",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", pair("Grid", "size", self.size))
