"""Positional-encoder specs: relative position bias, LePE, ...

Every encoder spec builds a module (see :mod:`attnblocks.encoders`) that takes part in the
attention through one shared contract, so encoders are swappable and combinable:
``prepare`` (the input, before qkv), ``bias`` (additive logits per window) and ``value``
(a term added to each window's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._spec import Spec, pair, positive_int

if TYPE_CHECKING:
    from torch import nn

    from .lowering import GroupPlan

__all__ = ["LePE", "PositionalEncoder", "RelPosBias"]


class PositionalEncoder(Spec):
    """Base class of positional-encoder specs.

    Example:
        >>> isinstance(LePE(), PositionalEncoder)
        True
    """

    def build(
        self, groups: tuple[GroupPlan, ...], dim: int, num_heads: int, device=None, dtype=None
    ) -> nn.Module:
        """Make the module that owns this encoder's parameters for the given head groups."""
        raise NotImplementedError


@dataclass(frozen=True, repr=False)
class RelPosBias(PositionalEncoder):
    """Swin's learned relative position bias: one table per head group.

    The table of a group is ``((2*Mh - 1) * (2*Mw - 1), heads)`` for a window of ``(Mh, Mw)``
    tokens, indexed by ``(dh + Mh - 1) * (2*Mw - 1) + (dw + Mw - 1)`` with ``dh, dw`` the query
    minus key coordinates; the bias is added to the scaled logits. The window size is taken
    from the group's partition (``Window``); partitions whose extent depends on the map
    (``Stripe``, ``Global``) need an explicit ``size``, the largest extent to support.
    Windows smaller than the table (a clamped window on a small map) use its centre.

    Args:
        size: the table's window size, or ``None`` to take it from the partition.

    Example:
        >>> RelPosBias()
        RelPosBias()
    """

    size: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.size is not None:
            object.__setattr__(self, "size", pair("RelPosBias", "size", self.size))

    def build(self, groups, dim, num_heads, device=None, dtype=None):
        from .encoders import RelPosBiasModule

        return RelPosBiasModule(self, groups, device=device, dtype=dtype)


@dataclass(frozen=True, repr=False)
class LePE(PositionalEncoder):
    """CSWin's locally-enhanced positional encoding: ``out = attn @ v + DWConv(v)``.

    The depthwise conv (with bias) runs on V cut into each group's own windows (stripes,
    windows, or the whole map), zero-padded at their borders, so nothing crosses a window.
    Conv channel ``c`` of a group belongs to its head ``c // d``, dim ``c % d``.

    Args:
        kernel: the odd conv kernel size (CSWin: 3).

    Example:
        >>> LePE()
        LePE()
    """

    kernel: int = 3
    _positional: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        positive_int("LePE", "kernel", self.kernel)
        if self.kernel % 2 == 0:
            from ._errors import AttnblocksError

            raise AttnblocksError(f"LePE: kernel must be odd, got kernel={self.kernel}.")

    def build(self, groups, dim, num_heads, device=None, dtype=None):
        from .encoders import LePEModule

        return LePEModule(self, dim, device=device, dtype=dtype)
