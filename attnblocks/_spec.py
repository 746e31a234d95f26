"""Shared machinery of the frozen spec dataclasses: normalisation and minimal reprs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from . import hooks
from ._errors import AttnblocksError

__all__ = [
    "SPEC_TYPES",
    "Spec",
    "any_rank",
    "axes",
    "check_ndim",
    "fixed_rank",
    "pair",
    "per_axis",
    "positive_int",
    "ranks_of",
    "register_spec",
]


class _SpecNames(Mapping):
    """Every spec class by name (a later class of the same name wins): a view of the
    ``config_name`` hooks, for the plain-data form of :mod:`attnblocks.config`."""

    def _names(self) -> dict[str, type]:
        return {name: cls for cls, name in hooks.table("config_name").items()}

    def __getitem__(self, name: str) -> type:
        return self._names()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


SPEC_TYPES: Mapping[str, type] = _SpecNames()


def register_spec(cls: type) -> type:
    """Class decorator: make ``cls`` known to :func:`attnblocks.config.from_config` by name.

    Subclasses of :class:`Spec` register themselves; other spec classes (``Split``) use this.
    """
    hooks.register("config_name", [cls], cls.__name__)
    return cls


MAX_SIZE = 2**20
"""The largest size a spec accepts (window, stripe, kernel, ratio, dim, heads): a bound that
no real map reaches, so a typo such as ``Window(10**12)`` in a config fails here, not in the
allocator."""


def positive_int(owner: str, name: str, value: Any, minimum: int = 1) -> int:
    """Check that ``value`` is an int in ``[minimum, MAX_SIZE]`` and return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise AttnblocksError(f"{owner}: {name} must be >= {minimum}, got {value}.")
    if value > MAX_SIZE:
        raise AttnblocksError(
            f"{owner}: {name}={value} exceeds the largest size a spec accepts ({MAX_SIZE} = 2**20)."
        )
    return value


def pair(owner: str, name: str, value: Any, minimum: int = 1) -> tuple[int, int]:
    """Normalise an int or an (h, w) pair of ints to a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise AttnblocksError(
                f"{owner}: {name} must be an int or an (h, w) pair, got {value!r}."
            )
        return (
            positive_int(owner, name, value[0], minimum),
            positive_int(owner, name, value[1], minimum),
        )
    v = positive_int(owner, name, value, minimum)
    return (v, v)


def axes(owner: str, name: str, value: Any, minimum: int = 1) -> tuple[int, ...]:
    """Normalise an int or a per-axis tuple of ints (any rank) to a tuple.

    An int is stored as an equal pair, as :func:`pair` does, and an equal pair means the same
    value on every axis of a map of any rank (:func:`per_axis`); other tuples fix the rank.

    Example:
        >>> axes("Window", "size", 7), axes("Window", "size", (8, 7, 7))
        ((7, 7), (8, 7, 7))
    """
    if isinstance(value, (tuple, list)):
        if not value:
            raise AttnblocksError(
                f"{owner}: {name} must be an int or a non-empty per-axis tuple, got {value!r}."
            )
        return tuple(positive_int(owner, name, v, minimum) for v in value)
    v = positive_int(owner, name, value, minimum)
    return (v, v)


def any_rank(value: tuple[Any, ...]) -> bool:
    """Whether a stored per-axis tuple holds for a map of any rank: an equal pair, the stored
    form of an int.

    Example:
        >>> any_rank((7, 7)), any_rank((8, 7, 7)), any_rank((7,))
        (True, False, False)
    """
    return len(value) == 2 and value[0] == value[1]


def ranks_of(*values: tuple[Any, ...]) -> set[int]:
    """The map ranks that stored per-axis tuples fix (their lengths, :func:`any_rank` ones
    left out): empty where none fixes one, more than one where they disagree."""
    return {len(v) for v in values if not any_rank(v)}


def fixed_rank(*values: tuple[Any, ...]) -> int | None:
    """The one map rank that stored per-axis tuples fix, or ``None`` (none, or a conflict).

    Example:
        >>> fixed_rank((7, 7), (4, 3, 3)), fixed_rank((7, 7))
        (3, None)
    """
    ranks = ranks_of(*values)
    return ranks.pop() if len(ranks) == 1 else None


def per_axis(owner: str, name: str, value: tuple[Any, ...], rank: int) -> tuple[Any, ...]:
    """``value`` (a stored per-axis tuple) for a map of ``rank`` axes.

    A tuple of ``rank`` entries is returned as it is; an equal pair (the stored form of an int)
    means that value on every axis. Anything else is an error naming the spec, the field, the
    value and the map's rank: ``(8, 7, 7)`` belongs to a 3-D map and ``(7, 7, 7)`` too.

    Example:
        >>> per_axis("Window", "size", (7, 7), 3), per_axis("Window", "size", (8, 7, 7), 3)
        ((7, 7, 7), (8, 7, 7))
    """
    if len(value) == rank:
        return tuple(value)
    if any_rank(value):
        return (value[0],) * rank
    raise AttnblocksError(
        f"{owner}: {name}={value!r} has {len(value)} axes, but the token map has {rank} "
        f"(a {rank}-D map needs an int or a tuple of {rank})."
    )


def check_ndim(owner: str, ndim: Any) -> None:
    """Check a spec's ``ndim``, the token map's rank its parameters are built for."""
    if isinstance(ndim, bool) or ndim not in (1, 2, 3):
        raise AttnblocksError(
            f"{owner}: ndim must be 1, 2 or 3 (the token map's rank its parameters are built "
            f"for), got ndim={ndim!r}."
        )


def _short(value: Any) -> Any:
    """Collapse a square pair to its int so reprs read as the user wrote them."""
    square = isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]
    if square and all(isinstance(v, int) for v in value):
        return value[0]
    return value


class Spec:
    """Mixin for frozen dataclass specs: a repr that is the minimal constructor call.

    Fields listed in ``_positional`` print positionally; the others print as keywords and only
    when they differ from their default.
    """

    _positional: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_spec(cls)

    def __repr__(self) -> str:
        parts: list[str] = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.repr:
                continue
            value = _short(getattr(self, f.name))
            if f.name in self._positional:
                parts.append(repr(value))
                continue
            default = f.default
            if default is not dataclasses.MISSING and _short(default) == value:
                continue
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"
