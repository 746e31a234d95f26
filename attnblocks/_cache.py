"""Per-size caches that stay out of ``torch.compile``'s way.

Masks, indices and layouts are pure functions of hashable arguments (map size, layout, device,
dtype), cached with ``functools.lru_cache`` in eager mode. Under ``torch.compile`` the wrapped
function is called directly instead, so Dynamo traces plain code (the results become constants
of the graph, guarded by the input sizes) rather than an ``lru_cache`` wrapper it cannot see into.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["size_cache"]

F = TypeVar("F", bound=Callable[..., Any])


def size_cache(maxsize: int) -> Callable[[F], F]:
    """Decorator: ``lru_cache(maxsize)`` in eager mode, a plain call under ``torch.compile``.

    The wrapper keeps ``cache_info`` and ``cache_clear``.

    Example:
        >>> @size_cache(8)
        ... def square(n: int) -> int:
        ...     return n * n
        >>> square(3), square(3), square.cache_info().hits
        (9, 9, 1)
    """

    def deco(fn: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if torch.compiler.is_compiling():
                return fn(*args, **kwargs)
            return cached(*args, **kwargs)

        wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
        wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco
