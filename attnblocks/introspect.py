"""What a spec computes, told without running it: :func:`explain` (the plan of every head
group, as text) and :func:`dense_mask` (who may attend to whom, from the partitions' oracles).

Both read the registry of :mod:`attnblocks.hooks`: a partition family says how it lowers with
a ``describe`` hook (:func:`~attnblocks.lowering.register_describe`) and what it allows with
an ``oracle`` (:func:`~attnblocks.masks.register_oracle`).
"""

from __future__ import annotations

import torch

from . import hooks
from ._errors import AttnblocksError, fmt_size
from .attention import Attention
from .lowering import resolve_groups
from .masks import partition_oracle
from .partition import Partition

__all__ = ["dense_mask", "describe", "explain"]


def explain(spec, hw: tuple[int, int], dim: int | None = None, num_heads: int | None = None):
    """A readable account of how ``spec`` lowers on a map of size ``hw``.

    Example:
        >>> from attnblocks import Attention, Window
        >>> print(explain(Attention(partition=Window(7, shift=3)), (14, 14), 96, 3))
        Attention(partition=Window(7, shift=3)) on a 14x14 map, dim=96, num_heads=3
          group 0: heads [0, 3), channels [0, 96), Window(7, shift=3)
            windows 2x2 of 7x7 tokens, pad (0, 0), roll (3, 3)
            b (nh wh) (nw ww) (h d) -> b (nh nw) h (wh ww) d
            mask: shift regions
    """
    if not isinstance(spec, Attention):
        spec = Attention(partition=spec)
    dim = dim or spec.dim
    num_heads = num_heads or spec.num_heads
    if dim is None or num_heads is None:
        raise AttnblocksError(f"explain({spec!r}) needs dim and num_heads.")
    shape = tuple(hw)
    lines = [f"{spec!r} on a {fmt_size(shape)} map, dim={dim}, num_heads={num_heads}"]
    for g in spec.groups(dim, num_heads):
        lines.append(
            f"  group {g.index}: heads [{g.heads[0]}, {g.heads[1]}), channels "
            f"[{g.channels[0]}, {g.channels[1]}), {g.partition!r}"
        )
        lines.extend("    " + line for line in describe(g.partition, *shape, pad=spec.pad))
    return "\n".join(lines)


def describe(partition: Partition, *shape: int, pad: str = "mask") -> list[str]:
    """Lines that say how ``partition`` lowers on a map of size ``shape`` (``H, W``, ...)."""
    own = getattr(partition, "describe", None)  # partitions that describe themselves
    if own is not None:
        return own(*shape, pad=pad)
    fn = hooks.lookup(partition, "describe", None)
    if fn is None:
        raise AttnblocksError(f"{partition!r} has no registered lowering to describe.")
    return fn(partition, *shape, pad=pad)


def dense_mask(
    spec, H: int | tuple[int, ...], W: int | None = None, num_heads: int | None = None
) -> torch.Tensor:
    """The dense "who may attend to whom" mask of a partition or attention spec.

    Tokens are row-major (``n = y * W + x``); padded positions do not exist here, which is
    the ``pad="mask"`` semantics.

    Args:
        spec (Partition | Attention): a concrete :class:`~attnblocks.Partition`, or an
            :class:`~attnblocks.Attention`.
        H: the map height, or the map's whole size as a tuple of any rank (``(L,)``,
            ``(T, H, W)``; then ``W`` is not given).
        W: the map width.
        num_heads: for an ``Attention`` whose spec does not fix it.

    Returns:
        ``(N, N)`` bool for a partition; ``(G, N, N)`` bool, one per head group, for an
        ``Attention``.

    Example:
        >>> from attnblocks import Window
        >>> dense_mask(Window(2), 2, 4).int()[0]
        tensor([1, 1, 0, 0, 1, 1, 0, 0], dtype=torch.int32)
        >>> dense_mask(Window(2), (5,)).int()[2]
        tensor([0, 0, 1, 1, 0], dtype=torch.int32)
    """
    if isinstance(H, tuple):
        if W is not None:
            raise TypeError(f"dense_mask: give the size as H, W or as one tuple, not {H!r}, {W!r}.")
        shape = H
    else:
        if W is None:
            raise TypeError("dense_mask: give the map size as H, W or as one tuple (T, H, W).")
        shape = (H, W)
    if isinstance(spec, Partition):
        if spec.is_generic():
            raise AttnblocksError(
                f"dense_mask({spec!r}): a generic partition needs heads=Split(...)."
            )
        return torch.from_numpy(partition_oracle(spec, *shape))
    if not isinstance(spec, Attention):
        raise TypeError(
            f"dense_mask expects a Partition or an Attention, got {type(spec).__name__}."
        )
    heads = num_heads or spec.num_heads or (spec.heads.count if spec.heads else 1)
    groups = resolve_groups(spec.partition, spec.heads, heads, heads)
    return torch.stack([torch.from_numpy(partition_oracle(g.partition, *shape)) for g in groups])
