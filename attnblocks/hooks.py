"""The one registry of the extension contract: hooks keyed by spec type, and its one lookup.

A *hook* is what one type provides to one part of the library, under a name. Every family
module registers its own hooks, explicitly, beside the code they name (the ``register_*``
decorators of the modules below are thin spellings of :func:`register`); :func:`lookup` walks
the class hierarchy once, so a hook registered for a base class serves its subclasses (a
registration for :class:`~attnblocks.Partition` is a fallback for every partition).

==================  ==========================================================  ================
hook                value                                                       keyed by
==================  ==========================================================  ================
``oracle``          ``fn(partition, H, W) -> (N, N)`` bool ndarray              partition type
``coords``          ``fn(partition, H, W, pad) -> WindowCoords``                partition type
``runner``          the :class:`~attnblocks.runners.GroupRunner` subclass        partition type
``backend:NAME``    ``fn(runner, qkv, ctx) -> (B, H, W, c)``, backend ``NAME``  partition type
``cost:NAME``       ``fn(group, H, W, pad, batch, itemsize, bias) -> GroupCost`` partition type
``kv_cost``         ``fn(group, H, W, batch, dim) -> MACs``                     partition type
``describe``        ``fn(partition, H, W, pad) -> list[str]`` (``explain``)       partition type
``set:OP``          the partition class of ``p OP q`` (``|``, ``&``)            partition type
``encoder_cost``    ``fn(spec, group, group_cost, backend) -> MACs``            encoder spec
``dense_encoder``   ``(bias, value)``: the dense form of an encoder module      encoder module
``config_name``     the name :func:`~attnblocks.from_config` knows the class by  spec class
==================  ==========================================================  ================

Example:
    >>> from attnblocks import Neighborhood, Window
    >>> lookup(Window(7), "runner").__name__, lookup(Neighborhood(7), "runner").__name__
    ('RectRunner', 'DilatedRunner')
    >>> lookup(Window(7), "backend:dense").__name__  # registered for Partition: the fallback
    'dense_lowering'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._errors import AttnblocksError

__all__ = ["lookup", "register", "registered_types", "table"]

_HOOKS: dict[type, dict[str, Any]] = {}
_MISSING = object()


def register(hook: str, types: Iterable[type], value: Any) -> Any:
    """Register ``value`` as hook ``hook`` of every type in ``types``; returns ``value``.

    Example:
        >>> class Mine: pass
        >>> register("describe", [Mine], lambda p, H, W, pad: ["mine"])(None, 1, 1, "mask")
        ['mine']
    """
    for t in types:
        if not isinstance(t, type):
            raise TypeError(f"register({hook!r}): hooks are keyed by types, got {t!r}.")
        _HOOKS.setdefault(t, {})[hook] = value
    return value


def lookup(obj: Any, hook: str, default: Any = _MISSING) -> Any:
    """Hook ``hook`` of ``obj`` (an instance or a type), the nearest along its class hierarchy.

    Without ``default`` a missing hook raises :class:`~attnblocks.AttnblocksError`.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    for t in cls.__mro__:
        found = _HOOKS.get(t)
        if found is not None and hook in found:
            return found[hook]
    if default is _MISSING:
        raise AttnblocksError(f"No {hook!r} hook is registered for {obj!r}.")
    return default


def table(hook: str) -> dict[type, Any]:
    """The types registered for ``hook`` itself (not inherited) and their values: a copy, in
    registration order."""
    return {t: h[hook] for t, h in _HOOKS.items() if hook in h}


def registered_types() -> tuple[type, ...]:
    """Every type with at least one hook, in registration order."""
    return tuple(_HOOKS)
