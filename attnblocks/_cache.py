"""Per-size caches that stay out of ``torch.compile``'s way.

Masks, indices and layouts are pure functions of hashable arguments (map size, layout, device,
dtype), cached with ``functools.lru_cache`` in eager mode. Under ``torch.compile`` the wrapped
function is called directly instead, so Dynamo traces plain code (the results become constants
of the graph, guarded by the input sizes) rather than an ``lru_cache`` wrapper it cannot see into.

Plans built with numpy (the sliding-window geometry) cannot be traced: Dynamo turns their
arrays into graph tensors whose sizes depend on data. Those functions use ``constant=True``:
under compile their integer arguments are specialised (a guard per map size, as for any plan)
and the function runs outside the trace, its tensors and tuples entering the graph as constants
(``torch.compiler.assume_constant_result``).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["size_cache"]

F = TypeVar("F", bound=Callable[..., Any])


def _specialise(value: Any) -> Any:
    return operator.index(value) if isinstance(value, (int, torch.SymInt)) else value


# Under compile a constant function runs outside the trace, through one of many zero-argument
# functions ("slots"): Dynamo names a constant after its function, and two constants of one
# name in a graph clash in AOT autograd, so each distinct call gets a slot of its own.
# ``_constant_slot`` (itself run outside the trace; it returns an int) assigns the slots.
_SOURCES: dict[str, Callable[..., Any]] = {}
_SLOT_OF: dict[tuple, int] = {}
_SLOT_CALLS: dict[int, tuple[Callable[..., Any], tuple]] = {}
_NUM_SLOTS = 8192
_SLOTS: tuple[Callable[[], Any], ...] = ()


@torch.compiler.assume_constant_result
def _constant_slot(name: str, *args: Any) -> int:
    global _SLOTS
    if not _SLOTS:  # built at the first compile, not at import (about 0.25 s)
        _SLOTS = tuple(_make_slot(i) for i in range(_NUM_SLOTS))
    slot = _SLOT_OF.get((name, args))
    if slot is None:
        if len(_SLOT_OF) == _NUM_SLOTS:
            raise RuntimeError(
                f"attnblocks: more than {_NUM_SLOTS} distinct plans (map sizes x head groups) "
                f"compiled in this process; compile with fewer distinct map sizes."
            )
        slot = _SLOT_OF[(name, args)] = len(_SLOT_OF)
        _SLOT_CALLS[slot] = (_SOURCES[name], args)
    return slot


def _make_slot(i: int) -> Callable[[], Any]:
    def call() -> Any:
        fn, args = _SLOT_CALLS[i]
        return fn(*args)

    name = f"attnblocks_constant_{i}"
    call.__code__ = call.__code__.replace(co_name=name)  # Dynamo names the constant after it
    call.__name__ = call.__qualname__ = name
    return torch.compiler.assume_constant_result(call)


def size_cache(maxsize: int, *, constant: bool = False) -> Callable[[F], F]:
    """Decorator: ``lru_cache(maxsize)`` in eager mode, a plain call under ``torch.compile``.

    ``constant``: under compile, run the function outside the trace and take its result
    (tensors, numbers, tuples of them) as a constant of the graph; integer arguments that are
    symbolic sizes are specialised first. The wrapper keeps ``cache_info`` and ``cache_clear``.

    Example:
        >>> @size_cache(8)
        ... def square(n: int) -> int:
        ...     return n * n
        >>> square(3), square(3), square.cache_info().hits
        (9, 9, 1)
    """

    def deco(fn: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        name = f"{fn.__module__}.{fn.__qualname__}"
        if constant:
            _SOURCES[name] = cached

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if torch.compiler.is_compiling():
                if not constant:
                    return fn(*args, **kwargs)
                if kwargs:
                    raise TypeError(f"{fn.__name__}: pass the arguments by position")
                # the slot first: it builds _SLOTS before the trace reads it
                slot = _constant_slot(name, *(_specialise(a) for a in args))
                return _SLOTS[slot]()
            return cached(*args, **kwargs)

        wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
        wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco
