"""One error type, and helpers that put the spec and the shapes into every message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["AttnblocksError", "fmt_shape", "fmt_size"]


class AttnblocksError(ValueError):
    """Raised for every invalid spec, configuration or input (a ``ValueError``).

    Example:
        >>> from attnblocks import Window
        >>> try:
        ...     Window(7, shift=7)
        ... except AttnblocksError as e:
        ...     print(e)
        Window: shift must be smaller than the window per axis, got size=(7, 7), shift=(7, 7).
    """


def fmt_shape(shape: Sequence[int]) -> str:
    """``(2, 30, 40, 96)`` for a shape, as the messages print it."""
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def fmt_size(sizes: Iterable[int]) -> str:
    """``8x14x14`` for a map's (or a window's) size, as the messages print it.

    Example:
        >>> fmt_size((8, 14, 14)), fmt_size([16])
        ('8x14x14', '16')

    Sizes are printed with ``str``, never ``int``: a size traced by ``torch.export`` or
    ``torch.compile`` is symbolic, and ``int`` on it would fix the graph to one map size.
    """
    return "x".join(map(str, sizes))
