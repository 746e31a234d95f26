"""Head combinators: how the heads of one layer are divided among partitions."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import AttnblocksError
from ._spec import positive_int, register_spec
from .partition import Partition

__all__ = ["Split"]


@register_spec
@dataclass(frozen=True, init=False, eq=True)
class Split:
    """Divide the heads into equal groups, each on its contiguous channel slice.

    ``Split(n)`` makes ``n`` groups that share the layer's partition (a generic partition
    such as ``Stripe(7)`` or ``Dilated(3, dilation=(1, 2, 3))`` gives each group its own
    form). ``Split(p0, p1, ...)`` gives group ``i`` the partition ``p_i``, so heterogeneous
    hybrids are one line. Group ``i`` owns heads ``[i*h/n, (i+1)*h/n)`` and, in each of q, k
    and v, channels ``[i*C/n, (i+1)*C/n)``; group outputs are concatenated in order.

    Example:
        >>> from attnblocks import Stripe, Window
        >>> Split(2)
        Split(2)
        >>> Split(Window(7), Stripe(7, axis="h")).count
        2
    """

    count: int
    partitions: tuple[Partition, ...] | None

    def __init__(self, *groups: int | Partition) -> None:
        if len(groups) == 1 and isinstance(groups[0], int) and not isinstance(groups[0], bool):
            count = positive_int("Split", "the number of groups", groups[0])
            parts = None
        elif groups and all(isinstance(g, Partition) for g in groups):
            count, parts = len(groups), tuple(groups)  # type: ignore[arg-type]
        else:
            raise TypeError(
                "Split takes one int (the number of equal head groups) or one partition per "
                f"group, e.g. Split(2) or Split(Window(7), Stripe(7, axis='h')); got "
                f"Split{groups!r}."
            )
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "partitions", parts)

    def __repr__(self) -> str:
        if self.partitions is None:
            return f"Split({self.count})"
        return f"Split({', '.join(repr(p) for p in self.partitions)})"

    def __reduce__(self):  # frozen with a custom __init__: pickle through the constructor
        return (Split, (self.count,) if self.partitions is None else self.partitions)

    def config_args(self) -> tuple:
        """The positional arguments that rebuild this split (its plain-data form)."""
        return (self.count,) if self.partitions is None else self.partitions

    def check(self, num_heads: int) -> None:
        """Raise unless ``num_heads`` divides into this split's groups."""
        if num_heads % self.count:
            raise AttnblocksError(
                f"{self!r} cannot divide num_heads={num_heads} into {self.count} equal "
                f"head groups: {num_heads} is not divisible by {self.count}."
            )
