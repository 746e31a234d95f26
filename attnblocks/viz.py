"""Pattern pictures: which keys each head group attends to, drawn from the dense mask.

The pictures come from :func:`~attnblocks.dense_mask`, the coordinate-built oracle, not from
the fast lowering, so they work for every partition that registers an oracle and show what
the tests check against. matplotlib is optional: ``pip install "attnblocks[viz]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._errors import AttnblocksError
from .attention import Attention
from .introspect import dense_mask
from .lowering import resolve_groups
from .partition import Partition

if TYPE_CHECKING:
    from os import PathLike

    from matplotlib.figure import Figure

__all__ = ["draw_pattern", "pattern_image"]

BACKGROUND = (0.94, 0.94, 0.94)
# One colour per query (Okabe-Ito, readable by colour-blind viewers), cycled.
QUERY_COLORS = (
    (0.00, 0.45, 0.70),
    (0.84, 0.37, 0.00),
    (0.00, 0.62, 0.45),
    (0.80, 0.47, 0.65),
    (0.90, 0.62, 0.00),
    (0.34, 0.71, 0.91),
)
KEY_TINT = 0.45  # attended keys: the query's colour mixed with this much white


def _as_hw(hw: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(hw, int):
        return (hw, hw)
    if len(hw) != 2:
        raise AttnblocksError(f"draw_pattern: hw must be an int or (H, W), got {hw!r}.")
    return (int(hw[0]), int(hw[1]))


def _as_queries(queries, H: int, W: int) -> list[tuple[int, int]]:
    if len(queries) == 2 and all(isinstance(q, (int, np.integer)) for q in queries):
        queries = [queries]
    out = []
    for q in queries:
        if len(q) != 2:
            raise AttnblocksError(f"draw_pattern: a query is a (y, x) position, got {q!r}.")
        y, x = int(q[0]), int(q[1])
        if not (0 <= y < H and 0 <= x < W):
            raise AttnblocksError(
                f"draw_pattern: query (y, x)=({y}, {x}) lies outside the {H}x{W} map."
            )
        out.append((y, x))
    if not out:
        raise AttnblocksError("draw_pattern: give at least one query position (y, x).")
    return out


def _panels(spec, H: int, W: int, dim: int | None, num_heads: int | None):
    """``(titles, masks)``: one title and one ``(N, N)`` bool mask per head group."""
    if isinstance(spec, Partition):
        return [repr(spec)], dense_mask(spec, H, W).numpy()[None]
    if not isinstance(spec, Attention):
        raise TypeError(
            f"draw_pattern expects a Partition or an Attention, got {type(spec).__name__}."
        )
    heads = num_heads or spec.num_heads or (spec.heads.count if spec.heads else 1)
    if dim is not None or spec.dim is not None:
        groups = spec.groups(dim, heads)
    else:
        groups = resolve_groups(spec.partition, spec.heads, heads, heads)
    titles = []
    for g in groups:
        title = f"group {g.index}: heads [{g.heads[0]}, {g.heads[1]})"
        if dim is not None or spec.dim is not None:
            title += f", channels [{g.channels[0]}, {g.channels[1]})"
        titles.append(f"{title}\n{g.partition!r}")
    return titles, dense_mask(spec, H, W, heads).numpy()


def pattern_image(
    mask: np.ndarray, hw: tuple[int, int], queries: Sequence[tuple[int, int]]
) -> np.ndarray:
    """The RGB picture of one head group: each query's keys in its colour, the rest grey.

    Keys attended by several queries get the mean of their tints; each query's own cell
    gets its full colour.

    Shapes:
        ``mask: (N, N)`` bool with ``N = H * W`` (query ``i`` may attend to key ``j``) ->
        ``(H, W, 3)`` float in ``[0, 1]``.

    Example:
        >>> from attnblocks import Window, dense_mask
        >>> img = pattern_image(dense_mask(Window(2), 2, 4).numpy(), (2, 4), [(0, 0)])
        >>> img.shape, bool((img[:, 2:] == 0.94).all())
        ((2, 4, 3), True)
    """
    H, W = hw
    colors = np.array([QUERY_COLORS[i % len(QUERY_COLORS)] for i in range(len(queries))])
    tints = colors * (1 - KEY_TINT) + KEY_TINT
    rows = np.array([mask[y * W + x] for y, x in queries], dtype=float)  # (Q, N)
    count = rows.sum(0)
    img = np.where(
        count[:, None] > 0,
        rows.T @ tints / np.maximum(count, 1)[:, None],
        np.array(BACKGROUND),
    ).reshape(H, W, 3)
    for (y, x), c in zip(queries, colors):
        img[y, x] = c
    return img


def _figure_class():
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError as e:
        raise ImportError(
            "attnblocks.viz.draw_pattern needs matplotlib, which is optional: "
            'pip install "attnblocks[viz]" (or pip install matplotlib).'
        ) from e
    return Figure, Rectangle


def draw_pattern(
    spec: Attention | Partition,
    hw: int | tuple[int, int],
    queries: tuple[int, int] | Sequence[tuple[int, int]],
    dim: int | None = None,
    num_heads: int | None = None,
    path: str | PathLike | None = None,
) -> Figure:
    """Draw which keys each head group of ``spec`` attends to, for some query positions.

    One panel per head group, one grid cell per token: a query's cell in its colour (framed),
    the keys it attends to in a lighter tint of that colour, all other keys grey. Built from
    :func:`~attnblocks.dense_mask`, so it shows the same attention the tests compare against.

    Args:
        spec: an :class:`~attnblocks.Attention` or a concrete :class:`~attnblocks.Partition`.
        hw: the map size ``(H, W)`` (or one int for a square map).
        queries: one ``(y, x)`` position or a sequence of them.
        dim: channels, only to label each group's channel slice (optional).
        num_heads: heads, for an ``Attention`` whose spec does not fix them (default: one
            head per group).
        path: where to save the picture as PNG (optional).

    Returns:
        The matplotlib ``Figure`` (not registered with pyplot; nothing to close).

    Raises:
        ImportError: matplotlib is not installed (the ``viz`` extra).

    Example:
        >>> from attnblocks import Attention, Split, Stripe
        >>> fig = draw_pattern(Attention(partition=Stripe(2), heads=Split(2)), (6, 8), (2, 3))
        >>> len(fig.axes)  # one panel per head group
        2
    """
    Figure, Rectangle = _figure_class()
    H, W = _as_hw(hw)
    qs = _as_queries(queries, H, W)
    titles, masks = _panels(spec, H, W, dim, num_heads)
    cell = min(0.3, 3.0 / max(H, W))  # inches per token, so big maps stay a sensible size
    pw, ph = W * cell, H * cell  # panel size in inches
    gap, top, bottom = 0.3, 0.85, 0.1
    panels = len(titles) * (pw + gap) + gap
    width = max(panels, 0.07 * len(repr(spec)) + 0.4)  # room for the title (8 pt characters)
    fig = Figure(figsize=(width, ph + top + bottom), dpi=100)
    fw, fh = fig.get_size_inches()
    left = (width - panels) / 2
    for i, (title, mask) in enumerate(zip(titles, masks)):
        ax = fig.add_axes(((left + gap + i * (pw + gap)) / fw, bottom / fh, pw / fw, ph / fh))
        ax.imshow(
            pattern_image(mask, (H, W), qs),
            interpolation="nearest",
            extent=(-0.5, W - 0.5, H - 0.5, -0.5),
        )
        # cell borders as two line collections: much cheaper than minor ticks and a grid
        ax.vlines(np.arange(0.5, W - 1, 1.0), -0.5, H - 0.5, colors="white", lw=0.6)
        ax.hlines(np.arange(0.5, H - 1, 1.0), -0.5, W - 0.5, colors="white", lw=0.6)
        for y, x in qs:
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, lw=1.2, ec="black"))
        ax.set_axis_off()
        ax.set_title(title, fontsize=7)
    fig.suptitle(repr(spec), fontsize=8, y=1 - 0.1 / fh, va="top")
    if path is not None:
        fig.savefig(path, format="png", metadata={"Software": None})
    return fig
