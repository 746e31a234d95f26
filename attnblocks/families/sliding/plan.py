"""Sliding-window geometry of :class:`~attnblocks.Dilated` partitions: pure index arithmetic.

Two plans, both plain data computed once per map size (cached), and the dense oracle:

- :func:`offset_plan` (the *slices* lowering): the key offsets every query looks at, in units
  of the dilation, with the padding they need and which (query, offset) pairs are real keys.
- :func:`tile_plan` (the *tiles* lowering): query tiles on each dilation sub-grid, the key
  region (halo) of each tile, and which query may see which key of its region.
- the relative position bias (NAT's ``rpb``): :func:`offset_bias_index` and
  :func:`tile_bias_index` say which entry of a ``(2k-1) x (2k-1)`` table every slot of the two
  plans reads.
- the oracle, registered with :func:`~attnblocks.masks.register_oracle`, written per token
  pair from coordinates, independently of both plans.

Axis conventions: along an axis of length ``L`` with dilation ``r``, position ``p`` lies on the
sub-grid of residue ``p % r`` at sub-grid index ``p // r``; that sub-grid has
``ceil((L - p % r) / r)`` positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._cache import size_cache
from ..._errors import AttnblocksError, fmt_size
from ...backends.dense import WindowCoords, register_coords
from ...masks import register_oracle
from ...partition import Dilated, Partition

__all__ = [
    "GatherPlan",
    "OffsetPlan",
    "TilePlan",
    "axis_slots",
    "check_fits",
    "gather_plan",
    "nd_tile_plan",
    "offset_bias_index",
    "offset_plan",
    "tile_bias_index",
    "tile_plan",
]


def check_fits(partition: Dilated, *shape: int) -> None:
    """Raise unless ``partition`` can run on a token map of ``shape`` (``H, W`` for 2-D).

    ``border="shift"`` needs ``kernel`` real keys on every dilation sub-grid of every axis,
    i.e. ``kernel * dilation <= L`` per axis (the same rule as NATTEN's).

    Example:
        >>> from attnblocks import Neighborhood
        >>> check_fits(Neighborhood(7, dilation=4), 20, 40)
        Traceback (most recent call last):
        ...
        attnblocks._errors.AttnblocksError: Neighborhood(7, dilation=4) cannot fit ...
    """
    if not shape or min(shape) < 1:
        raise AttnblocksError(
            f"{partition!r}: the token map must be at least 1 token per axis, got "
            f"{fmt_size(shape)}."
        )
    if partition.is_generic():
        raise AttnblocksError(f"{partition!r} has one dilation per head group: resolve it first.")
    kernel, dilation, _, _ = partition.axes(len(shape))
    if partition.border != "shift":
        return
    names = ("height", "width") if len(shape) == 2 else [f"axis {i}" for i in range(len(shape))]
    for name, L, k, r in zip(names, shape, kernel, dilation):
        if k * r > L:
            least = fmt_size(a * b for a, b in zip(kernel, dilation))
            size = fmt_size(shape)
            raise AttnblocksError(
                f"{partition!r} cannot fit its window on a {size} map: border='shift' needs "
                f"kernel_size * dilation <= the map size per axis; got kernel_size={k}, "
                f"dilation={r} for an input of size {L} ({name}).\n  Hint: use a map of at "
                f"least {least}, a smaller kernel or dilation, or border='zeros' / 'mask'."
            )


def _check_plain(partition: Dilated) -> None:
    """The slices and tiles plans are 2-D, stride 1, not causal: raise for anything else."""
    if not partition.is_plain:
        raise AttnblocksError(
            f"{partition!r}: the slices and tiles lowerings have no stride or causal axes; "
            f"such partitions run the N-d tiles (nd_tile_plan) or the gather lowering "
            f"(gather_plan)."
        )


def _axes(partition: Dilated) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((kh, kw), (ry, rx))``: kernel and dilation per axis of a concrete 2-D partition."""
    kernel, dilation, _, _ = partition.axes(2)
    return kernel, dilation  # type: ignore[return-value]


def _shift_start(L: int, kernel: int, r: int) -> np.ndarray:
    """Sub-grid index where the shifted (NAT) window of each position starts, ``(L,)``."""
    p = np.arange(L)
    length = (L - p % r + r - 1) // r
    return np.clip(p // r - kernel // 2, 0, length - kernel)


# ---------------------------------------------------------------------------------------------
# slices: one shifted slice of the padded keys / values per offset
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OffsetPlan:
    """The key offsets of the slices lowering on one map.

    Query ``(y, x)`` looks at keys ``(y + oy*ry, x + ox*rx)`` for every ``(oy, ox)`` in
    ``offsets`` (``dilation = (ry, rx)``), read from the keys zero-padded by ``pad = (py, px)``
    tokens per side.
    ``allowed: (H, W, n)`` (``None``: all) says which of those slots are real keys of the
    query; the others are masked out. Under ``border="zeros"`` every slot counts, padded ones
    as zero vectors.
    """

    offsets: tuple[tuple[int, int], ...]
    dilation: tuple[int, int]
    pad: tuple[int, int]
    allowed: np.ndarray | None


def _axis_offsets(L: int, kernel: int, r: int, border: str) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (in units of r) along one axis and ``(L, n)`` which are keys of each position."""
    p = np.arange(L)[:, None]
    if border == "shift":
        offs = np.arange(-(kernel - 1), kernel)
        start = _shift_start(L, kernel, r)[:, None]
        rel = p // r + offs[None, :] - start  # sub-grid index of the key within the window
        allowed = (rel >= 0) & (rel < kernel)
    else:
        offs = np.arange(-(kernel // 2), kernel // 2 + 1)
        inside = (p + offs[None, :] * r >= 0) & (p + offs[None, :] * r < L)
        allowed = inside if border == "mask" else np.ones_like(inside)
    used = allowed.any(axis=0) if border != "zeros" else np.ones(len(offs), dtype=bool)
    return offs[used], allowed[:, used]


@size_cache(512)
def offset_plan(partition: Dilated, H: int, W: int) -> OffsetPlan:
    """The :class:`OffsetPlan` of a concrete :class:`~attnblocks.Dilated` on ``H x W``.

    Example:
        >>> from attnblocks import Dilated
        >>> plan = offset_plan(Dilated(3, dilation=2), 5, 6)
        >>> len(plan.offsets), plan.pad, plan.allowed is None
        (9, (2, 2), True)
    """
    check_fits(partition, H, W)
    _check_plain(partition)
    (kh, kw), (ry, rx), border = *_axes(partition), partition.border
    oy, ay = _axis_offsets(H, kh, ry, border)
    ox, ax = _axis_offsets(W, kw, rx, border)
    offsets = tuple((int(a), int(b)) for a in oy for b in ox)
    pad = (ry * int(np.abs(oy).max()), rx * int(np.abs(ox).max()))
    allowed = None
    if border != "zeros":
        allowed = (ay[:, None, :, None] & ax[None, :, None, :]).reshape(H, W, len(offsets))
    return OffsetPlan(offsets, (ry, rx), pad, allowed)


# ---------------------------------------------------------------------------------------------
# tiles: query tiles on each dilation sub-grid, each with its gathered key region
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TilePlan:
    """Query tiles and their key regions, as token indices into the flattened map.

    ``query: (nT, Tq)`` and ``key: (nT, Tk)`` index the ``N = H*W`` row-major tokens, with
    ``N`` standing for a zero token (a padded query slot, an out-of-map key). ``allowed:
    (nT, Tq, Tk)`` says which key slots each query slot may see (an out-of-map key slot is
    allowed only under ``border="zeros"``: a zero vector that stays in the softmax).
    ``inverse: (N,)`` is the flattened slot ``t * Tq + i`` of every token's query.
    """

    query: np.ndarray
    key: np.ndarray
    allowed: np.ndarray
    inverse: np.ndarray


def _axis_tiles(
    L: int, kernel: int, r: int, border: str, tile: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tiles along one axis: query coords ``(n, t)``, key coords ``(n, R)`` (-1: none),
    allowed ``(n, t, R)`` and the key's offset from the query in units of r ``(n, t, R)``."""
    longest = (L + r - 1) // r
    t = min(tile, longest)
    c = kernel // 2
    R = min(t + kernel - 1, longest) if border == "shift" else t + kernel - 1
    qs, ks, alloweds, steps = [], [], [], []
    for off in range(min(r, L)):
        length = (L - off + r - 1) // r
        for i0 in range(0, length, t):
            qi = i0 + np.arange(t)
            qreal = qi < length
            if border == "shift":
                start = np.clip(qi - c, 0, length - kernel)
                s = int(np.clip(start[0], 0, max(0, length - R)))
                kj = s + np.arange(R)
                rel = kj[None, :] - start[:, None]
                allowed = (rel >= 0) & (rel < kernel)
            else:
                kj = i0 - c + np.arange(R)
                allowed = np.abs(kj[None, :] - qi[:, None]) <= c
            kreal = (kj >= 0) & (kj < length)
            if border != "zeros":
                allowed &= kreal[None, :]
            allowed[~qreal] = True  # padded query slots: anything, their output is dropped
            qs.append(np.where(qreal, off + qi * r, -1))
            ks.append(np.where(kreal, off + kj * r, -1))
            alloweds.append(allowed)
            steps.append(kj[None, :] - qi[:, None])
    return np.stack(qs), np.stack(ks), np.stack(alloweds), np.stack(steps)


@size_cache(512)
def tile_plan(partition: Dilated, H: int, W: int, tile: int = 8) -> TilePlan:
    """The :class:`TilePlan` of a concrete :class:`~attnblocks.Dilated` on ``H x W``.

    Tiles hold up to ``tile x tile`` queries of one dilation sub-grid; the key region of a tile
    is ``(tile + kernel - 1)`` sub-grid positions per axis (for ``border="shift"``: clamped
    inside the sub-grid, as the windows are).

    Example:
        >>> from attnblocks import Neighborhood
        >>> plan = tile_plan(Neighborhood(7), 14, 14, tile=7)
        >>> plan.query.shape, plan.key.shape, plan.allowed.shape
        ((4, 49), (4, 169), (4, 49, 169))
    """
    check_fits(partition, H, W)
    _check_plain(partition)
    (kh, kw), (ry, rx), border = *_axes(partition), partition.border
    qy, ky, ay, _ = _axis_tiles(H, kh, ry, border, tile)
    qx, kx, ax, _ = _axis_tiles(W, kw, rx, border, tile)
    N = H * W

    def flat(cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
        y, x = cy[:, None, :, None], cx[None, :, None, :]
        idx = np.where((y >= 0) & (x >= 0), y * W + x, N)
        return idx.reshape(idx.shape[0] * idx.shape[1], -1)

    query, key = flat(qy, qx), flat(ky, kx)
    allowed = ay[:, None, :, None, :, None] & ax[None, :, None, :, None, :]
    nT, Tq, Tk = query.shape[0], query.shape[1], key.shape[1]
    allowed = allowed.reshape(nT, Tq, Tk)
    return TilePlan(query, key, allowed, _inverse_order(query, N))


def _axis_window(i: np.ndarray, n: int, k: int, s: int, causal: bool, border: str):
    """The first and last sub-grid index (inclusive) of the window of sub-grid queries ``i`` on
    a sub-grid of ``n`` positions (the rule of :class:`~attnblocks.Dilated`; may leave the
    sub-grid under ``"mask"`` / ``"zeros"``, and below 0 when causal)."""
    if causal:
        leader = np.minimum((i // s) * s + s - 1, n - 1)
        return leader - (k - 1), i
    leader = np.minimum((i // s) * s + s // 2, n - 1)
    lo = np.clip(leader - k // 2, 0, n - k) if border == "shift" else leader - k // 2
    return lo, lo + k - 1


def _axis_tiles_nd(
    L: int, k: int, r: int, s: int, causal: bool, border: str, tile: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiles along one axis for any stride and causal flag: query coords ``(n, t)`` and key
    coords ``(n, R)`` (``-1``: none) and allowed ``(n, t, R)``. Tiles hold ``t`` consecutive
    sub-grid queries (a multiple of the stride, so a tile holds whole query groups); the key
    region of a tile spans its queries' windows, ``R`` the longest span."""
    longest = -(-L // r)
    t = min(s * -(-tile // s), s * -(-longest // s))
    tiles = []
    for g in range(min(r, L)):
        n = -(-(L - g) // r)
        for i0 in range(0, n, t):
            qi = i0 + np.arange(t)
            real = qi < n
            lo, hi = _axis_window(np.minimum(qi, n - 1), n, k, s, causal, border)
            tiles.append((g, n, qi, real, lo, hi, int(lo[real].min()), int(hi[real].max())))
    R = max(b - a + 1 for *_, a, b in tiles)
    qs, ks, alloweds = [], [], []
    for g, n, qi, real, lo, hi, a, _ in tiles:
        kj = a + np.arange(R)
        inside = (kj >= 0) & (kj < n)
        allowed = (kj[None, :] >= lo[:, None]) & (kj[None, :] <= hi[:, None])
        if border != "zeros":
            allowed &= inside[None, :]
        allowed[~real] = True  # padded query slots: anything, their output is dropped
        qs.append(np.where(real, g + qi * r, -1))
        ks.append(np.where(inside, g + kj * r, -1))
        alloweds.append(allowed)
    return np.stack(qs), np.stack(ks), np.stack(alloweds)


@size_cache(512)
def nd_tile_plan(partition: Dilated, shape: tuple[int, ...], tile: int) -> TilePlan:
    """The :class:`TilePlan` of a concrete :class:`~attnblocks.Dilated` on a map of ``shape``
    (any rank, any stride and causal axes): up to ``tile`` sub-grid queries per axis in a tile,
    the product over the axes of :func:`_axis_tiles_nd`.

    Example:
        >>> from attnblocks import Neighborhood
        >>> plan = nd_tile_plan(Neighborhood(3, causal=True), (4, 8, 8), 4)
        >>> plan.query.shape, plan.key.shape, plan.allowed.shape
        ((4, 64), (4, 216), (4, 64, 216))
    """
    shape = tuple(shape)
    check_fits(partition, *shape)
    N = int(np.prod(shape))
    query = np.zeros((1, 1), dtype=np.int64)
    key = np.zeros((1, 1), dtype=np.int64)
    qreal = np.ones((1, 1), dtype=bool)
    kreal = np.ones((1, 1), dtype=bool)
    allowed = np.ones((1, 1, 1), dtype=bool)
    for L, k, r, s, c in zip(shape, *partition.axes(len(shape))):
        qs, ks, al = _axis_tiles_nd(L, k, r, s, c, partition.border, tile)
        query = _outer_tiles(query * L, np.maximum(qs, 0), np.add)
        key = _outer_tiles(key * L, np.maximum(ks, 0), np.add)
        qreal = _outer_tiles(qreal, qs >= 0, np.logical_and)
        kreal = _outer_tiles(kreal, ks >= 0, np.logical_and)
        n, Tq, Tk = allowed.shape
        m, t, R = al.shape
        allowed = (allowed[:, None, :, None, :, None] & al[None, :, None, :, None, :]).reshape(
            n * m, Tq * t, Tk * R
        )
    allowed[~qreal] = True
    query, key = np.where(qreal, query, N), np.where(kreal, key, N)
    return TilePlan(query, key, allowed, _inverse_order(query, N))


def _inverse_order(query: np.ndarray, N: int) -> np.ndarray:
    """``(N,)``: the flat tile slot of each of the ``N`` tokens (``query`` holds ``N`` in its
    padding slots)."""
    slots = query.reshape(-1)
    inverse = np.empty(N, dtype=np.int64)
    real = slots < N
    inverse[slots[real]] = np.nonzero(real)[0]
    return inverse


def _outer_tiles(a: np.ndarray, b: np.ndarray, op) -> np.ndarray:
    """``(n, T)`` and ``(m, t)`` -> ``(n * m, T * t)``: ``op`` of every pair, tile-major."""
    (n, T), (m, t) = a.shape, b.shape
    return op(a[:, None, :, None], b[None, :, None, :]).reshape(n * m, T * t)


# ---------------------------------------------------------------------------------------------
# relative position bias: which entry of a (2k-1) x (2k-1) table each slot reads
# ---------------------------------------------------------------------------------------------


def _table_entry(dy: np.ndarray, dx: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """Flat entry ``(dy + kh-1) * (2kw-1) + (dx + kw-1)`` of the key offset ``(dy, dx)`` (units
    of the dilation), each clipped to ``-(k-1)..k-1`` per axis (slots out of every window are
    masked)."""
    ch, cw = kernel[0] - 1, kernel[1] - 1
    return (np.clip(dy, -ch, ch) + ch) * (2 * cw + 1) + np.clip(dx, -cw, cw) + cw


@size_cache(512)
def offset_bias_index(partition: Dilated, H: int, W: int) -> np.ndarray:
    """``(n,)`` int64: the bias-table entry of each offset of :func:`offset_plan`.

    In the slices lowering the key of offset ``(oy, ox)`` sits ``(oy, ox)`` dilation steps from
    every query, so one entry per offset serves the whole map (masked slots included, whose
    logits the mask removes; under ``border="zeros"`` an out-of-map slot keeps its offset's
    bias, as a zero key at that offset).

    Example:
        >>> from attnblocks import Dilated
        >>> offset_bias_index(Dilated(3), 5, 6).tolist()  # rows of a 5x5 table, centre 12
        [6, 7, 8, 11, 12, 13, 16, 17, 18]
    """
    offsets = np.asarray(offset_plan(partition, H, W).offsets, dtype=np.int64).reshape(-1, 2)
    return _table_entry(offsets[:, 0], offsets[:, 1], partition.kernel_size)


@size_cache(512)
def tile_bias_index(partition: Dilated, H: int, W: int, tile: int = 8) -> np.ndarray:
    """``(nT, Tq, Tk)`` int64: the bias-table entry of every (query slot, key slot) pair of
    :func:`tile_plan` (same ``tile``): the key's offset from the query in dilation steps.

    Example:
        >>> from attnblocks import Neighborhood
        >>> index = tile_bias_index(Neighborhood(3), 4, 4, tile=4)  # one tile, all 16 keys
        >>> index.shape, index[0, 0, :3].tolist()  # query (0, 0), keys (0, 0..2): dy=0, dx=0..2
        ((1, 16, 16), [12, 13, 14])
    """
    check_fits(partition, H, W)
    (kh, kw), (ry, rx), border = *_axes(partition), partition.border
    sy = _axis_tiles(H, kh, ry, border, tile)[3]  # (ny, ty, Ry)
    sx = _axis_tiles(W, kw, rx, border, tile)[3]
    index = _table_entry(sy[:, None, :, None, :, None], sx[None, :, None, :, None, :], (kh, kw))
    ny, nx, ty, tx, Ry, Rx = index.shape
    return index.reshape(ny * nx, ty * tx, Ry * Rx)


# ---------------------------------------------------------------------------------------------
# the oracle: per token pair, from coordinates
# ---------------------------------------------------------------------------------------------


def _axis_allowed(L: int, k: int, r: int, s: int, causal: bool, border: str) -> np.ndarray:
    """``(L, L)`` bool along one axis: may the query at position ``p`` (rows) see the key at
    ``p'`` (columns)? From the coordinates, as the :class:`~attnblocks.Dilated` docstring states
    the rule (sub-grid, tile leader, window)."""
    p = np.arange(L)
    q, key = p[:, None], p[None, :]
    same_grid = q % r == key % r
    i, j = q // r, key // r  # sub-grid indices
    length = -(-(L - q % r) // r)  # positions on the query's sub-grid
    if causal:  # border "shift": the window ends at the query, its tile's last query leads
        leader = np.minimum((i // s) * s + s - 1, length - 1)
        return same_grid & (j <= i) & (leader - j < k)
    leader = np.minimum((i // s) * s + s // 2, length - 1)
    if border == "mask":
        return same_grid & (np.abs(j - leader) <= k // 2)
    lo = np.minimum(np.maximum(leader - k // 2, 0), length - k)
    return same_grid & (j >= lo) & (j < lo + k)


@register_oracle(Dilated)
def _dilated_oracle(partition: Dilated, *shape: int) -> np.ndarray:
    """``(N, N)`` bool on a map of ``shape`` (row-major tokens): may query ``q`` attend to key
    ``k``? The product over the axes of the per-axis rule (:func:`_axis_allowed`).

    ``"mask"``: each key coordinate is a multiple of ``r`` from its query's (its tile leader's)
    at most ``r*(k-1)/2`` away. ``"shift"``: on the query's sub-grid (``y' = y mod r``), the
    key's sub-grid index lies in the query's window of ``k`` positions, centred and then moved
    inward to fit (causal: the ``k`` positions ending at the query's tile leader, none after
    the query).
    """
    if partition.border == "zeros":
        raise AttnblocksError(
            f"dense_mask({partition!r}): border='zeros' is not a mask (out-of-map keys are "
            f"zero vectors that stay in the softmax); compare it with a zero-padded reference, "
            f"or use border='mask' for the masked form."
        )
    check_fits(partition, *shape)
    allowed = np.ones((1, 1), dtype=bool)
    for L, k, r, s, c in zip(shape, *partition.axes(len(shape))):
        a = _axis_allowed(L, k, r, s, c, partition.border)
        n = allowed.shape[0]
        allowed = (allowed[:, None, :, None] & a[None, :, None, :]).reshape(n * L, n * L)
    return allowed


# ---------------------------------------------------------------------------------------------
# gather: every query's keys by index, any rank, stride and causal axes
# ---------------------------------------------------------------------------------------------


def axis_slots(
    L: int, k: int, r: int, s: int, causal: bool, border: str
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` key slots of every position along one axis: ``(L, k)`` int64 positions (``-1``
    out of the map) and ``(L, k)`` bool, whether the slot is a key of the query.

    Written from the window's start (the rule of :class:`~attnblocks.Dilated`): slot ``t`` is
    the sub-grid index ``start + t``. Under ``border="zeros"`` an out-of-map slot is a key
    (a zero vector in the softmax); under ``"mask"`` it is not; causal slots after the query
    are not.

    Example:
        >>> pos, keep = axis_slots(5, 3, 1, 1, True, "shift")
        >>> pos[1].tolist(), keep[1].tolist()  # query 1 sees keys 0 and 1 (none before 0)
        ([-1, 0, 1], [False, True, True])
    """
    p = np.arange(L)[:, None]
    g, i = p % r, p // r
    length = -(-(L - g) // r)
    t = np.arange(k)[None, :]
    if causal:
        leader = np.minimum((i // s) * s + s - 1, length - 1)
        j = leader - (k - 1) + t
        keep = (j >= 0) & (j <= i)
    else:
        leader = np.minimum((i // s) * s + s // 2, length - 1)
        if border == "shift":
            j = np.clip(leader - k // 2, 0, length - k) + t
        else:
            j = leader - k // 2 + t
        inside = (j >= 0) & (j < length)
        keep = inside if border == "mask" else np.ones_like(inside)
    inside = (j >= 0) & (j < length)
    return np.where(inside, g + j * r, -1), keep


@dataclass(frozen=True, eq=False)
class GatherPlan:
    """The keys of every query of one map, by index: ``index: (N, K)`` int64 row-major key
    tokens (``N``: a zero token, for slots outside the map) and ``valid: (N, K)`` bool, which
    slots are keys of the query (``None``: all; masked slots read any token, their weight is
    zero). ``K`` is the product of the kernel over the axes."""

    index: np.ndarray
    valid: np.ndarray | None


def _outer(a: np.ndarray, b: np.ndarray, op) -> np.ndarray:
    """``(n, m)`` and ``(L, k)`` -> ``(n * L, m * k)``: ``op`` of every pair, row-major."""
    (n, m), (L, k) = a.shape, b.shape
    return op(a[:, None, :, None], b[None, :, None, :]).reshape(n * L, m * k)


@size_cache(512)
def gather_plan(partition: Dilated, shape: tuple[int, ...]) -> GatherPlan:
    """The :class:`GatherPlan` of a concrete :class:`~attnblocks.Dilated` on a map of ``shape``
    (any rank): the product over the axes of :func:`axis_slots`.

    Example:
        >>> from attnblocks import Neighborhood
        >>> plan = gather_plan(Neighborhood(3, causal=True), (4,))
        >>> plan.index.tolist()
        [[4, 4, 0], [4, 0, 1], [0, 1, 2], [1, 2, 3]]
        >>> plan.valid[1].tolist()
        [False, True, True]
    """
    shape = tuple(shape)
    check_fits(partition, *shape)
    N = int(np.prod(shape))
    index = np.zeros((1, 1), dtype=np.int64)
    inside = np.ones((1, 1), dtype=bool)
    keep = np.ones((1, 1), dtype=bool)
    for L, k, r, s, c in zip(shape, *partition.axes(len(shape))):
        pos, kp = axis_slots(L, k, r, s, c, partition.border)
        index = _outer(index * L, np.maximum(pos, 0), np.add)
        inside = _outer(inside, pos >= 0, np.logical_and)
        keep = _outer(keep, kp, np.logical_and)
    index = np.where(inside, index, N)
    return GatherPlan(index, None if keep.all() else keep)


@register_coords(Dilated)
def _map_coords(partition: Partition, *shape: int, pad: str = "mask") -> WindowCoords:
    """Sliding windows share no frame (each query has its own window): the map is the one frame
    in which their key offsets are measured; the oracle mask says which pairs count."""
    N = int(np.prod(shape))
    pos = np.stack(np.unravel_index(np.arange(N), shape), 1).astype(np.int64)
    return WindowCoords(np.zeros(N, dtype=np.int64), pos)
