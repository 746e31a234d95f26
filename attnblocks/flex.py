"""FlexAttention out: a partition's mask as a ``mask_mod`` and a ``BlockMask``.

FlexAttention's users write masks as small functions ``mask_mod(b, h, q_idx, kv_idx) -> bool``
and combine them with ``and_masks`` / ``or_masks``. :func:`mask_mod` gives any attnblocks
partition in that form, so it composes with a user's own masks and ``score_mod``, and
:func:`block_mask` makes its :class:`~torch.nn.attention.flex_attention.BlockMask` without an
``N x N`` dense mask.

Two token orders:

- ``order="row-major"`` (default): token ``n = y * W + x`` of the ``H x W`` map, as
  :func:`~attnblocks.dense_mask` numbers them (and a flattened ``(B, H, W, C)`` map is laid
  out). Padding does not exist here (``pad="mask"`` semantics).
- ``order="lowering"``: the flex backend's own order, where the mask is block-sparse by
  construction: windows, stripes and grids window-major (each window one ``T x T`` diagonal
  block, padded windows included: ``L = nW * T`` slots, ``BLOCK_SIZE = T``), sliding windows
  sub-grid-major. :func:`token_order` gives the permutation that puts row-major tokens in it.

The row-major ``mask_mod`` of windows, stripes and grids is written from token coordinates
(the window and shift region of each index); in the lowering order the masks are those the
flex backend runs (:mod:`attnblocks.families.rect.flex`, :mod:`attnblocks.families.sliding.flex`),
so what is exported is what the backend computes. :class:`~attnblocks.Downsample` keys are a
reduced map every query sees: the mask is all-true over ``kv_shape``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from ._errors import AttnblocksError, fmt_size
from .families.rect.eager import window_order
from .families.rect.flex import _allowed, _mask_mod
from .families.rect.flex import block_mask as _window_block_mask
from .families.sliding.flex import (
    _nd_mask_mod,
    _sliding_mask_mod,
    sliding_block_mask,
    subgrid_order,
)
from .families.sliding.plan import check_fits
from .heads import Split
from .lowering import RectLayout, resolve_groups
from .masks import token_coords
from .partition import Dilated, Downsample, Global, Grid, Partition, Stripe, Window

__all__ = ["ORDERS", "block_mask", "mask_mod", "token_order"]

ORDERS = ("row-major", "lowering")
MaskMod = Callable[..., torch.Tensor]
_RECT = (Window, Stripe, Global, Grid)


def _check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        out = ()
    if not out:
        raise AttnblocksError(
            f"{name} must be the map size, (H, W) or of any rank ((L,), (T, H, W)), got {shape!r}."
        )
    if min(out) < 1:
        raise AttnblocksError(
            f"{name}: the token map must be at least 1 token per axis, got {fmt_size(out)}."
        )
    return out


def _concrete(partition) -> Partition:
    if not isinstance(partition, Partition):
        raise TypeError(
            f"expected a Partition such as Window(7) or a Split of partitions, got {partition!r}."
        )
    if partition.is_generic():
        raise AttnblocksError(
            f"{partition!r} means one form per head group: pass Split(p0, p1, ...) of concrete "
            f"partitions with num_heads, or give the partition its form."
        )
    return partition


def _rect_row_major(partition: Partition, shape: tuple[int, ...]) -> MaskMod:
    """Same window and same shift region, from the coordinates of ``q_idx`` and ``kv_idx``."""
    from .lowering import rect_layout

    lay = rect_layout(partition, *shape, pad="mask")

    def cell(n):
        win, region = 0, 0
        for c, L, w, s, k in zip(token_coords(shape, n), shape, lay.window, lay.shift, lay.counts):
            r = (c - s) % L  # position on the rolled map
            win = win * k + (r % k if lay.grid else r // w)
            region = 2 * region + ((r >= L - s).long() if s else 0)
        return win * 2**lay.ndim + region

    def rect_mask(b, h, q_idx, kv_idx):
        return cell(q_idx) == cell(kv_idx)

    return rect_mask


def _sliding(partition: Dilated, shape: tuple[int, ...], order: str, device) -> MaskMod:
    if partition.border == "zeros":
        raise AttnblocksError(
            f"{partition!r}: border='zeros' keeps out-of-map keys as zero vectors inside the "
            f"softmax, which no mask expresses; use border='mask' (those keys dropped) or "
            f"'shift' (NATTEN's rule)."
        )
    check_fits(partition, *shape)
    if len(shape) != 2:
        _lowering_order_2d(partition, shape, order)
        coords = token_coords(shape, torch.arange(math.prod(shape), device=device))
        axes = tuple(zip(*partition.axes(len(shape))))
        return partial(_nd_mask_mod, coords, tuple(shape), axes, partition.border)
    H, W = shape
    kernel, r, stride, causal = partition.axes(2)
    if order == "lowering":
        _, _, y, x = subgrid_order(H, W, r, torch.device(device))
    else:
        n = torch.arange(H * W, device=device)
        y, x = n // W, n % W
    return partial(
        _sliding_mask_mod, y, x, H, W, kernel, r, partition.border, stride=stride, causal=causal
    )


def _lowering_order_2d(partition: Partition, shape: tuple[int, ...], order: str) -> None:
    if order == "lowering":
        raise AttnblocksError(
            f"{partition!r}: the sliding windows' lowering order (dilation sub-grids) is "
            f"2-D; on a {len(shape)}-D map use order='row-major'."
        )


def _all_keys(b, h, q_idx, kv_idx):
    return q_idx >= 0  # every query sees every (reduced) key


def _one(partition: Partition, shape: tuple[int, ...], order: str, device) -> MaskMod:
    if isinstance(partition, Dilated):
        return _sliding(partition, shape, order, device)
    if isinstance(partition, Downsample):
        partition.reduced_size(*shape)  # raises on maps below the ratio
        return _all_keys
    if not isinstance(partition, _RECT):
        raise AttnblocksError(f"{partition!r} has no FlexAttention mask.")
    if order == "row-major":
        return _rect_row_major(partition, shape)
    lay = _layout(partition, shape)
    allowed = _allowed(_fields(lay), torch.device(device))
    return partial(_mask_mod, allowed, lay.tokens)


def _layout(partition: Partition, shape: tuple[int, ...]) -> RectLayout:
    from .lowering import rect_layout

    return rect_layout(partition, *shape, pad="mask")


def _fields(lay: RectLayout) -> tuple:
    from dataclasses import fields

    return tuple(getattr(lay, f.name) for f in fields(lay))


def _groups(partition, num_heads: int | None):
    if isinstance(partition, Split):
        if partition.partitions is None:
            raise AttnblocksError(f"{partition!r} gives no partitions: use Split(p0, p1, ...).")
        if num_heads is None:
            raise AttnblocksError(f"{partition!r} splits heads: pass num_heads.")
        return resolve_groups(None, partition, num_heads, num_heads)
    return None


def mask_mod(
    partition: Partition | Split,
    shape: tuple[int, ...],
    *,
    num_heads: int | None = None,
    order: str = "row-major",
    device: torch.device | str = "cpu",
) -> MaskMod:
    """The FlexAttention ``mask_mod`` of a partition on an ``H x W`` map.

    Args:
        partition: a concrete partition, or ``Split(p0, p1, ...)`` (then ``num_heads``: head
            ``h`` follows the partition of its group, as in the layer).
        shape: the query map ``(H, W)``, or of any rank (``(L,)``, ``(T, H, W)``; tokens
            row-major).
        order: ``"row-major"`` or ``"lowering"`` (see the module docstring and
            :func:`token_order`).
        device: where the index tensors some masks read live (the device of the attention).

    Shapes:
        ``mask_mod(b, h, q_idx, kv_idx) -> bool``; indices into ``N = H * W`` row-major tokens
        (``L`` lowering slots; :class:`~attnblocks.Downsample`: ``kv_idx`` into the reduced map).

    Example:
        >>> import torch
        >>> from torch.nn.attention.flex_attention import and_masks, create_mask
        >>> from attnblocks import Window, dense_mask
        >>> causal = lambda b, h, q, kv: q >= kv
        >>> m = create_mask(and_masks(mask_mod(Window(2), (2, 4)), causal), None, None, 8, 8, "cpu")
        >>> bool((m[0, 0] == (dense_mask(Window(2), 2, 4) & torch.ones(8, 8).tril().bool())).all())
        True
    """
    shape = _check_shape(shape)
    if order not in ORDERS:
        raise AttnblocksError(f"order must be one of {ORDERS}, got {order!r}.")
    groups = _groups(partition, num_heads)
    if groups is None:
        return _one(_concrete(partition), shape, order, device)
    if order == "lowering":
        raise AttnblocksError(
            f"{partition!r}: head groups have token orders of their own; a split exports in "
            f"order='row-major' only."
        )
    mods = [(g.heads, _one(_concrete(g.partition), shape, order, device)) for g in groups]

    def split_mask(b, h, q_idx, kv_idx):
        out = None
        for (h0, h1), mod in mods:
            term = (h >= h0) & (h < h1) & mod(b, h, q_idx, kv_idx)
            out = term if out is None else out | term
        return out

    return split_mask


def token_order(
    partition: Partition, shape: tuple[int, ...], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowering's token order: ``perm: (L,)``, ``inverse: (N,)`` int64.

    ``perm[i]`` is the row-major token at slot ``i`` (``N`` for a padding slot of a window
    that overhangs the map: gather from the tokens with one zero token appended);
    ``inverse[n]`` is the slot of token ``n``, so ``out_slots[:, inverse]`` is back in
    row-major order. ``L = N`` except for padded windows.

    Example:
        >>> from attnblocks import Window
        >>> perm, inverse = token_order(Window(2), (2, 4))
        >>> perm.tolist(), inverse.tolist()
        ([0, 1, 4, 5, 2, 3, 6, 7], [0, 1, 4, 5, 2, 3, 6, 7])
    """
    shape = _check_shape(shape)
    N = math.prod(shape)
    partition = _concrete(partition)
    device = torch.device(device)
    if isinstance(partition, Dilated):
        check_fits(partition, *shape)
        if len(shape) != 2:
            n = torch.arange(N, device=device)  # the sliding windows run row-major beyond 2-D
            return n, n
        perm, inverse, _, _ = subgrid_order(*shape, partition.dilation_size, device)
        return perm, inverse
    if isinstance(partition, Downsample):
        n = torch.arange(N, device=device)
        return n, n
    if not isinstance(partition, _RECT):
        raise AttnblocksError(f"{partition!r} has no FlexAttention token order.")
    lay = _layout(partition, shape)
    if not any(lay.pad):
        perm, inverse = window_order(lay)
        return perm.to(device), inverse.to(device)
    # padded: the rolled, padded canvas cut into windows, N where a slot is padding
    from einops import rearrange

    dims = tuple(range(lay.ndim))
    canvas = torch.full(lay.padded, N, dtype=torch.long)
    rolled = torch.arange(N).view(shape).roll(tuple(-s for s in lay.shift), dims)
    canvas[tuple(slice(0, n) for n in shape)] = rolled
    perm = rearrange(canvas[None, ..., None], lay.pattern, h=1, **lay.sizes).reshape(-1)
    inverse = torch.empty(N, dtype=torch.long)
    real = perm < N
    inverse[perm[real]] = torch.nonzero(real).view(-1)
    return perm.to(device), inverse.to(device)


def block_mask(
    partition: Partition | Split,
    shape: tuple[int, ...],
    *,
    num_heads: int | None = None,
    kv_shape: tuple[int, ...] | None = None,
    order: str = "row-major",
    device: torch.device | str = "cpu",
    BLOCK_SIZE: int | tuple[int, int] | None = None,
):
    """The :class:`~torch.nn.attention.flex_attention.BlockMask` of a partition.

    Args:
        partition (Partition | Split): as :func:`mask_mod`.
        shape (tuple[int, ...]): the query map ``(H, W)`` or of any rank, as :func:`mask_mod`.
        num_heads (int | None): as :func:`mask_mod`.
        order (str): ``"row-major"`` or ``"lowering"``, as :func:`mask_mod`.
        device (torch.device | str): where the block mask is built.
        kv_shape: the key map for :class:`~attnblocks.Downsample` (default: the partition's
            reduced size); other partitions' keys are the query map.
        BLOCK_SIZE: FlexAttention's block size; ``None`` is 128, and in the lowering order of
            windows the window's ``T`` tokens (each window one block, as the flex backend).

    Shapes:
        ``BlockMask`` of ``(1, 1 or num_heads, Q_LEN, KV_LEN)``: ``N = H * W`` (``L`` lowering
        slots) queries and keys.

    Example:
        >>> from attnblocks import Window
        >>> block_mask(Window(7, shift=3), (14, 14), order="lowering").shape
        (1, 1, 196, 196)
    """
    from torch.nn.attention.flex_attention import create_block_mask

    shape = _check_shape(shape)
    groups = _groups(partition, num_heads)
    dev = torch.device(device)
    parts = [g.partition for g in groups] if groups is not None else [_concrete(partition)]
    kv_len = math.prod(shape)
    for p in parts:
        if isinstance(p, Downsample):
            reduced = p.reduced_size(*shape) if kv_shape is None else _check_shape(kv_shape, "kv")
            if groups is not None and len({type(q) for q in parts}) > 1:
                raise AttnblocksError(
                    f"{partition!r}: Downsample groups attend to another key map than the "
                    f"other groups; export them separately."
                )
            kv_len = math.prod(reduced)
    if order == "lowering" and groups is None and BLOCK_SIZE is None:
        p = parts[0]
        if isinstance(p, _RECT):  # the flex backend's own block mask, each window one block
            return _window_block_mask(_layout(p, shape), dev)
        if isinstance(p, Dilated):
            if p.border == "zeros" or len(shape) != 2:
                _sliding(p, shape, order, dev)  # raises
            return sliding_block_mask(p, *shape, dev)
    mod = mask_mod(partition, shape, num_heads=num_heads, order=order, device=dev)
    q_len = math.prod(shape)
    if order == "lowering" and isinstance(parts[0], _RECT):
        lay = _layout(parts[0], shape)
        q_len = kv_len = lay.num_windows * lay.tokens
    heads = None if groups is None else num_heads
    return create_block_mask(
        mod, None, heads, q_len, kv_len, device=dev, BLOCK_SIZE=BLOCK_SIZE or 128
    )
