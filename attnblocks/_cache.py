"""Per-size caches that no mode leaks into, bounded in entries and bytes.

Masks, indices and layouts are pure functions of hashable arguments (map size, layout, device,
dtype). In eager mode their results are cached, under three rules that keep a cached value the
same whatever mode the caller is in:

- **Built in a neutral context**: a miss runs the function with ``inference_mode`` and grad
  recording off, so a value first asked for under ``torch.inference_mode()`` is an ordinary
  tensor that a later training step can save for backward.
- **Never filled, never read, while anything traces**: under ``torch.compile``, ``torch.export``,
  ``jit.trace``, or any dispatch / function mode (FakeTensor, proxy, functionalisation,
  ``torch.device(...)``) or ``torch.func`` transform (``grad``, ``vmap``), the function is called
  directly and nothing is cached; and only plain ``torch.Tensor`` results (no subclass, no
  inference tensor, no ``requires_grad``, no functorch wrapper) are stored.
- **Bounded**: at most ``maxsize`` entries per function and :data:`MAX_BYTES` of tensors and
  arrays over all functions, least recently used first out. A model that sees a new map size
  every batch keeps a flat memory.

Plans built with numpy (the sliding-window geometry) cannot be traced: Dynamo turns their
arrays into graph tensors whose sizes depend on data. Those functions use ``constant=True``:
under compile their integer arguments are specialised (a guard per map size, as for any plan)
and the function runs outside the trace, its tensors and tuples entering the graph as constants
(Dynamo's ``assume_constant_result``). ``torch._dynamo`` itself is never imported here: it
costs seconds at import, and a program that never compiles never needs it.
"""

from __future__ import annotations

import functools
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from ._modes import transforming

__all__ = ["MAX_BYTES", "cache_bytes", "clear_caches", "size_cache"]

F = TypeVar("F", bound=Callable[..., Any])

MAX_BYTES = 64 * 2**20
"""The most bytes of tensors and arrays all size caches hold together (64 MiB)."""

_LOCK = threading.RLock()
_ENTRIES: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()  # (name, args) -> (value, bytes)
_COUNTS: dict[str, int] = {}  # entries per function
_BYTES = 0


def _tracing() -> bool:
    """Whether a compiler, exporter, tracer, mode or ``torch.func`` transform sees this call:
    cache nothing then (under ``grad`` / ``vmap`` even a factory's result is wrapped for the
    transform's level)."""
    return (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch._C._len_torch_dispatch_stack() > 0
        or torch._C._len_torch_function_stack() > 0
        or transforming()
    )


def _nbytes(value: Any) -> int | None:
    """Bytes held by ``value``'s tensors and arrays; ``None`` if it must not be cached."""
    if isinstance(value, torch.Tensor):
        plain = type(value) is torch.Tensor and not value.is_inference()
        plain = plain and not torch._C._functorch.is_functorch_wrapped_tensor(value)
        if not plain or value.requires_grad or value.device.type == "meta":
            return None
        return value.untyped_storage().nbytes()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        total = 0
        for v in value:
            n = _nbytes(v)
            if n is None:
                return None
            total += n
        return total
    if isinstance(value, dict):
        return _nbytes(tuple(value.values()))
    return 0


def _evict(name: str, maxsize: int) -> None:
    """Drop least recently used entries until ``name`` has room and the bytes fit."""
    global _BYTES
    while _ENTRIES and (_BYTES > MAX_BYTES or _COUNTS.get(name, 0) > maxsize):
        over_count = _COUNTS.get(name, 0) > maxsize
        key = next((k for k in _ENTRIES if k[0] == name), None) if over_count else None
        key = next(iter(_ENTRIES)) if key is None else key
        _, n = _ENTRIES.pop(key)
        _BYTES -= n
        _COUNTS[key[0]] -= 1


def cache_bytes() -> int:
    """Bytes of tensors and arrays the size caches hold now (at most :data:`MAX_BYTES`)."""
    return _BYTES


def clear_caches() -> None:
    """Empty every size cache."""
    global _BYTES
    with _LOCK:
        _ENTRIES.clear()
        _COUNTS.clear()
        _BYTES = 0


class _Info:
    """One function's ``cache_info()``: hits, misses and its entries now (``currsize``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = self.misses = 0

    @property
    def currsize(self) -> int:
        return _COUNTS.get(self.name, 0)

    def __repr__(self) -> str:
        return f"CacheInfo(hits={self.hits}, misses={self.misses}, currsize={self.currsize})"


def _clear(name: str) -> None:
    """Drop one function's entries."""
    global _BYTES
    with _LOCK:
        for key in [k for k in _ENTRIES if k[0] == name]:
            _BYTES -= _ENTRIES.pop(key)[1]
        _COUNTS.pop(name, None)


def _lookup(
    name: str, fn: Callable[..., Any], maxsize: int, info: _Info, args: tuple, kwargs: dict
) -> Any:
    """``fn(*args, **kwargs)`` from the cache, or built in a neutral context and cached if it
    may be."""
    global _BYTES
    key = (name, args, tuple(sorted(kwargs.items()))) if kwargs else (name, args)
    with _LOCK:
        hit = _ENTRIES.get(key)
        if hit is not None:
            _ENTRIES.move_to_end(key)
            info.hits += 1
            return hit[0]
    with torch.inference_mode(False), torch.no_grad():
        value = fn(*args, **kwargs)
    n = _nbytes(value)
    if n is None or n > MAX_BYTES:
        return value
    with _LOCK:
        info.misses += 1
        if key not in _ENTRIES:
            _ENTRIES[key] = (value, n)
            _COUNTS[name] = _COUNTS.get(name, 0) + 1
            _BYTES += n
            _evict(name, maxsize)
    return value


def _specialise(value: Any) -> Any:
    if isinstance(value, tuple):  # a map's shape, a layout's fields
        return tuple(_specialise(v) for v in value)
    return operator.index(value) if isinstance(value, (int, torch.SymInt)) else value


def _traced_int(value: Any) -> Any:
    """A size read from a shape under ``jit.trace`` (a 0-d integer tensor) as an int."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        return int(value)
    return value


# Under compile a constant function runs outside the trace, through one of many zero-argument
# functions ("slots"): Dynamo names a constant after its function, and two constants of one
# name in a graph clash in AOT autograd, so each distinct call gets a slot of its own.
# ``_constant_slot`` (itself run outside the trace; it returns an int) assigns the slots.
_SOURCES: dict[str, Callable[..., Any]] = {}
_SLOT_OF: dict[tuple, int] = {}
_SLOT_CALLS: dict[int, tuple[Callable[..., Any], tuple]] = {}
_NUM_SLOTS = 8192
_SLOTS: tuple[Callable[[], Any], ...] = ()


def _assume_constant(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch._dynamo.assume_constant_result`` without importing Dynamo: that decorator only
    sets this attribute (torch 2.14; ``tests/test_import.py`` checks it still does)."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


_TRACE: list[Any] = [None, {}]  # the trace being compiled, and its calls per (name, args)


def _occurrence(key: tuple) -> int:
    """How many times ``key`` was asked for before in the graph being traced: a graph may
    need one constant twice (two groups of one partition, NaN containment's second pass),
    and each use needs its own slot. Slots are reused by later traces: they stay bounded."""
    import torch._guards  # loaded by torch already; only reached while compiling

    trace = torch._guards.TracingContext.try_get()
    if trace is not _TRACE[0]:
        _TRACE[0], _TRACE[1] = trace, {}
    seen = _TRACE[1]
    n = seen[key] = seen.get(key, -1) + 1
    return n


@_assume_constant
def _constant_slot(name: str, *args: Any) -> int:
    global _SLOTS
    if not _SLOTS:  # built at the first compile, not at import (about 0.25 s)
        _SLOTS = tuple(_make_slot(i) for i in range(_NUM_SLOTS))
    key = (name, args, _occurrence((name, args)))
    slot = _SLOT_OF.get(key)
    if slot is None:
        if len(_SLOT_OF) == _NUM_SLOTS:
            raise RuntimeError(
                f"attnblocks: more than {_NUM_SLOTS} distinct plans (map sizes x head groups) "
                f"compiled in this process; compile with fewer distinct map sizes."
            )
        slot = _SLOT_OF[key] = len(_SLOT_OF)
        _SLOT_CALLS[slot] = (_SOURCES[name], args)
    return slot


def _make_slot(i: int) -> Callable[[], Any]:
    def call() -> Any:
        fn, args = _SLOT_CALLS[i]
        return fn(*args)

    name = f"attnblocks_constant_{i}"
    call.__code__ = call.__code__.replace(co_name=name)  # Dynamo names the constant after it
    call.__name__ = call.__qualname__ = name
    return _assume_constant(call)


def size_cache(maxsize: int, *, constant: bool = False) -> Callable[[F], F]:
    """Decorator: cache a pure function of hashable arguments by the rules of this module.

    ``constant``: under compile, run the function outside the trace and take its result
    (tensors, numbers, tuples of them) as a constant of the graph; integer arguments that are
    symbolic sizes are specialised first. The wrapper has ``cache_info()`` (hits, misses,
    currsize) and ``cache_clear()``.

    Example:
        >>> @size_cache(8)
        ... def square(n: int) -> int:
        ...     return n * n
        >>> square(3), square(3), square.cache_info().hits
        (9, 9, 1)
    """

    def deco(fn: F) -> F:
        name = f"{fn.__module__}.{fn.__qualname__}"
        info = _Info(name)

        def cached(*args: Any, **kwargs: Any) -> Any:
            if _tracing():
                return fn(*args, **kwargs)
            return _lookup(name, fn, maxsize, info, args, kwargs)

        def cache_clear() -> None:
            _clear(name)
            info.hits = info.misses = 0

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
            if torch.jit.is_tracing():  # sizes are traced 0-d tensors: the trace is per size
                args = tuple(_traced_int(a) for a in args)
                kwargs = {k: _traced_int(v) for k, v in kwargs.items()}
            return cached(*args, **kwargs)

        wrapper.cache_info = lambda: info  # type: ignore[attr-defined]
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco
