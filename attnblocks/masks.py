"""Mask builders: shift regions, padded keys, and the dense "who may attend to whom" oracle.

Window masks are built from a :class:`~attnblocks.lowering.RectLayout` with the same einops
pattern as the fast path. The dense oracle is built independently, from token coordinates,
so that tests comparing the two compare two different derivations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from einops import rearrange

from . import hooks
from ._cache import size_cache
from ._errors import AttnblocksError
from .lowering import RectLayout
from .partition import Partition

__all__ = [
    "additive",
    "additive_mask",
    "mask_value",
    "region_ids",
    "register_oracle",
    "token_coords",
    "window_mask",
]

Oracle = Callable[..., np.ndarray]


def register_oracle(*types: type[Partition]) -> Callable[[Oracle], Oracle]:
    """Decorator: ``fn(partition, *shape) -> (N, N) bool ndarray`` is the oracle of ``types``
    (the ``oracle`` hook of :mod:`attnblocks.hooks`): ``fn(partition, H, W)`` on a 2-D map,
    ``fn(partition, T, H, W)`` on a 3-D one, tokens row-major.

    Oracles are written from token coordinates, independently of the fast lowering.
    """

    def deco(fn: Oracle) -> Oracle:
        return hooks.register("oracle", types, fn)

    return deco


def partition_oracle(partition: Partition, *shape: int) -> np.ndarray:
    """``(N, N)`` bool: the registered oracle of a concrete partition on a map of size
    ``shape``."""
    fn = hooks.lookup(partition, "oracle", None)
    if fn is None:
        raise AttnblocksError(f"dense_mask: no oracle is registered for {partition!r}.")
    try:
        return fn(partition, *shape)
    except TypeError as e:
        if len(shape) == 2:
            raise
        raise AttnblocksError(
            f"{partition!r} has no oracle for a {len(shape)}-D token map (its oracle takes "
            f"H, W: {e})."
        ) from None


def token_coords(shape: Sequence[int], index: torch.Tensor | None = None) -> tuple:
    """Coordinates of tokens on a map of any rank, row-major (``n = y * W + x`` in 2-D).

    Shapes: ``index`` any shape (default ``arange(prod(shape))``); returns one tensor per axis,
    each of ``index``'s shape.

    Example:
        >>> [c.tolist() for c in token_coords((2, 3))]
        [[0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]]
    """
    if index is None:
        index = torch.arange(int(np.prod(shape)))
    coords = []
    for size in reversed(shape[1:]):
        coords.append(index % size)
        index = index // size
    coords.append(index)
    return tuple(reversed(coords))


def mask_value(dtype: torch.dtype) -> float:
    """The additive value of a masked logit: very negative but finite in ``dtype``.

    Finite (half the dtype's lowest value) so that a row whose keys are all masked, which
    padding can produce, softmaxes to a uniform row instead of NaN.
    """
    return torch.finfo(dtype).min / 2


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as additive logits: 0 where ``allowed``, :func:`mask_value` elsewhere.

    Example:
        >>> additive(torch.tensor([True, False]), torch.float32).tolist()
        [0.0, -1.7014117331926443e+38]
    """
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed, mask_value(dtype))


def _bands(n: int, n_padded: int, window: int, shift: int, rule: str) -> np.ndarray:
    """Per-row (or column) region band on the rolled, padded canvas."""
    r = np.arange(n_padded)
    if shift == 0:
        return np.zeros(n_padded, dtype=np.int64)
    if rule == "timm":  # Swin's three bands, on the padded canvas (timm 1.0)
        return (r >= n_padded - window).astype(np.int64) + (r >= n_padded - shift)
    # "wrap": the rows that the roll brought over from the top, on the real map; padding apart
    return np.where(r >= n, 2, (r >= n - shift).astype(np.int64))


def region_ids(layout: RectLayout) -> torch.Tensor:
    """Shift-region id of every position of the rolled, padded canvas.

    Each axis has up to three bands (:func:`_bands`); a position's region is its bands read as
    the digits of a base-3 number, so tokens share a region where they share every axis' band.

    Returns:
        ``padded`` int64 (``(Hp, Wp)`` on 2-D); tokens attend only within their region. All
        zeros without a shift.

    Example:
        >>> from attnblocks import Window, rect_layout
        >>> region_ids(rect_layout(Window(2, shift=1), 4, 4))
        tensor([[0, 0, 0, 1],
                [0, 0, 0, 1],
                [0, 0, 0, 1],
                [3, 3, 3, 4]])
    """
    rule = layout.regions or "wrap"
    ids = np.zeros(layout.padded, dtype=np.int64)
    for axis, args in enumerate(zip(layout.shape, layout.padded, layout.window, layout.shift)):
        band = _bands(*args, rule)
        view = [1] * layout.ndim
        view[axis] = -1
        ids = 3 * ids + band.reshape(view)
    return torch.from_numpy(ids)


@size_cache(256)
def window_mask(layout: RectLayout, device: torch.device | None = None) -> torch.Tensor | None:
    """Which key each query of each window may attend to, or ``None`` when all may.

    Returns:
        ``(nW, T, T)`` bool, True where query ``i`` (dim 1) may attend to key ``j`` (dim 2).

    Example:
        >>> from attnblocks import Window, rect_layout
        >>> window_mask(rect_layout(Window(2, shift=1), 4, 4))[3].int()  # the corner window
        tensor([[1, 0, 0, 0],
                [0, 1, 0, 0],
                [0, 0, 1, 0],
                [0, 0, 0, 1]], dtype=torch.int32)
        >>> window_mask(rect_layout(Window(2), 4, 4)) is None  # nothing to mask
        True
    """
    if not layout.needs_mask:
        return None
    canvas = region_ids(layout)
    if layout.mask_pad:  # padded keys get a region of their own that no real query shares
        real = torch.zeros(layout.padded, dtype=torch.bool)
        real[tuple(slice(0, n) for n in layout.shape)] = True
        canvas = torch.where(real, canvas, torch.full_like(canvas, -1))
    ids = rearrange(canvas[None, ..., None], layout.pattern, h=1, **layout.sizes)[0, :, 0, :, 0]
    allowed = ids[:, :, None] == ids[:, None, :]
    if layout.mask_pad:
        allowed &= (ids != -1)[:, None, :]
    return allowed.to(device)


@size_cache(256)
def additive_mask(
    layout: RectLayout, dtype: torch.dtype, device: torch.device | None = None
) -> torch.Tensor | None:
    """:func:`window_mask` as an additive float mask ``(nW, 1, T, T)`` (0 or :func:`mask_value`)."""
    allowed = window_mask(layout, device)
    if allowed is None:
        return None
    return additive(allowed, dtype)[:, None]
