"""Pattern pictures: which keys each head group attends to, drawn from the dense mask.

The pictures come from :func:`~attnblocks.dense_mask`, the coordinate-built oracle, not from
the fast lowering, so they work for every partition that registers an oracle and show what
the tests check against. matplotlib is optional: ``pip install "attnblocks[viz]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._errors import AttnblocksError, fmt_size
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


def _as_shape(hw: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(hw, int):
        return (hw, hw)
    if not 1 <= len(hw) <= 3:
        raise AttnblocksError(
            f"draw_pattern: hw must be an int, (L,), (H, W) or (T, H, W), got {hw!r}."
        )
    return tuple(int(n) for n in hw)


def _as_queries(queries, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    if len(queries) and all(isinstance(q, (int, np.integer)) for q in queries):
        queries = [queries]
    names = {1: "(x,)", 2: "(y, x)", 3: "(t, y, x)"}[len(shape)]
    size = fmt_size(shape)
    out = []
    for q in queries:
        if len(q) != len(shape):
            raise AttnblocksError(f"draw_pattern: a query is a {names} position, got {q!r}.")
        q = tuple(int(v) for v in q)
        if not all(0 <= v < n for v, n in zip(q, shape)):
            raise AttnblocksError(f"draw_pattern: query {names}={q} lies outside the {size} map.")
        out.append(q)
    if not out:
        raise AttnblocksError(f"draw_pattern: give at least one query position {names}.")
    return out


def _panels(spec, shape: tuple[int, ...], dim: int | None, num_heads: int | None):
    """``(titles, masks)``: one title and one ``(N, N)`` bool mask per head group."""
    if isinstance(spec, Partition):
        return [repr(spec)], dense_mask(spec, shape).numpy()[None]
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
    return titles, dense_mask(spec, shape, num_heads=heads).numpy()


def pattern_image(
    mask: np.ndarray, hw: tuple[int, ...], queries: Sequence[tuple[int, ...]]
) -> np.ndarray:
    """The RGB picture of one head group: each query's keys in its colour, the rest grey.

    Keys attended by several queries get the mean of their tints; each query's own cell
    gets its full colour.

    Shapes:
        ``mask: (N, N)`` bool with ``N = H * W`` (query ``i`` may attend to key ``j``) ->
        ``(H, W, 3)`` float in ``[0, 1]``; on a map of any rank ``hw`` is its size, the
        queries are positions of that rank and the picture is ``(*hw, 3)``.

    Example:
        >>> from attnblocks import Window, dense_mask
        >>> img = pattern_image(dense_mask(Window(2), 2, 4).numpy(), (2, 4), [(0, 0)])
        >>> img.shape, bool((img[:, 2:] == 0.94).all())
        ((2, 4, 3), True)
    """
    shape = tuple(hw)
    colors = np.array([QUERY_COLORS[i % len(QUERY_COLORS)] for i in range(len(queries))])
    tints = colors * (1 - KEY_TINT) + KEY_TINT
    rows = np.array([mask[np.ravel_multi_index(q, shape)] for q in queries], dtype=float)
    count = rows.sum(0)  # rows: (Q, N)
    img = np.where(
        count[:, None] > 0,
        rows.T @ tints / np.maximum(count, 1)[:, None],
        np.array(BACKGROUND),
    ).reshape(*shape, 3)
    for q, c in zip(queries, colors):
        img[q] = c
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
        hw: the map size ``(H, W)`` (or one int for a square map), ``(L,)`` for a 1-D map
            (drawn as one row) or ``(T, H, W)`` for a 3-D one (drawn as one panel per time
            slice, the head groups in rows).
        queries: one position (``(y, x)``; ``(x,)`` or ``(t, y, x)`` on 1-D and 3-D maps) or a
            sequence of them.
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
    shape = _as_shape(hw)
    qs = _as_queries(queries, shape)
    titles, masks = _panels(spec, shape, dim, num_heads)
    # a panel is one 2-D picture: the map itself, a 1-D map as one row, a 3-D map one panel
    # per time slice (the groups in rows, time in columns)
    slices = shape[0] if len(shape) == 3 else 1
    H, W = (1, shape[0]) if len(shape) == 1 else shape[-2:]
    cell = min(0.3, 3.0 / max(H, W))  # inches per token, so big maps stay a sensible size
    pw, ph = W * cell, H * cell  # panel size in inches
    gap, top, bottom = 0.3, 0.85, 0.1
    cols, rows = (slices, len(titles)) if slices > 1 else (len(titles), 1)
    panels = cols * (pw + gap) + gap
    width = max(panels, 0.07 * len(repr(spec)) + 0.4)  # room for the title (8 pt characters)
    row_h = ph + (0.5 if slices > 1 else 0)
    fig = Figure(figsize=(width, rows * row_h + top + bottom), dpi=100)
    fw, fh = fig.get_size_inches()
    left = (width - panels) / 2
    for i, (title, mask) in enumerate(zip(titles, masks)):
        img = pattern_image(mask, shape, qs).reshape(slices, H, W, 3)
        for t in range(slices):
            col, row = (t, i) if slices > 1 else (i, 0)
            y0 = bottom + (rows - 1 - row) * row_h
            ax = fig.add_axes(((left + gap + col * (pw + gap)) / fw, y0 / fh, pw / fw, ph / fh))
            ax.imshow(img[t], interpolation="nearest", extent=(-0.5, W - 0.5, H - 0.5, -0.5))
            # cell borders as two line collections: much cheaper than minor ticks and a grid
            ax.vlines(np.arange(0.5, W - 1, 1.0), -0.5, H - 0.5, colors="white", lw=0.6)
            ax.hlines(np.arange(0.5, H - 1, 1.0), -0.5, W - 0.5, colors="white", lw=0.6)
            for q in qs:
                if len(q) == 3 and q[0] != t:
                    continue
                y, x = (0, q[0]) if len(q) == 1 else q[-2:]
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, lw=1.2, ec="black"))
            ax.set_axis_off()
            if slices == 1:
                ax.set_title(title, fontsize=7)
            else:
                ax.set_title(f"{title}\nt = {t}" if t == 0 else f"t = {t}", fontsize=7)
    fig.suptitle(repr(spec), fontsize=8, y=1 - 0.1 / fh, va="top")
    if path is not None:
        fig.savefig(path, format="png", metadata={"Software": None})
    return fig
