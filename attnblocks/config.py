"""Specs as plain data: ``to_config(spec) -> dict`` and ``from_config(dict) -> spec``.

The plain form is JSON-ready (dicts, lists, str, int, float, bool, None): a spec is a dict with
its class name under ``"type"`` and its non-default fields; nested specs nest; tuples become
lists. Parsing looks the class up in a registry of spec classes by name (every :class:`Spec`
subclass registers itself; other spec classes use :func:`~attnblocks._spec.register_spec`), so
new specs need no change here. Nothing is ever evaluated: unknown names and fields raise.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ._errors import AttnblocksError
from ._spec import SPEC_TYPES

__all__ = ["from_config", "spec_types", "to_config"]

_SCALARS = (str, int, float, bool, type(None))


def spec_types() -> dict[str, type]:
    """The registered spec classes by name (a copy).

    Example:
        >>> sorted(n for n in spec_types() if n in ("Window", "Split"))
        ['Split', 'Window']
    """
    return {n: c for n, c in SPEC_TYPES.items() if _constructible(c)}


def _constructible(cls: type) -> bool:
    return dataclasses.is_dataclass(cls) or hasattr(cls, "config_args")


def _encode(value: Any) -> Any:
    if type(value).__name__ in SPEC_TYPES and _constructible(type(value)):
        return to_config(value)
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, _SCALARS):
        return value
    raise AttnblocksError(f"to_config: cannot express {value!r} ({type(value).__name__}) as data.")


def to_config(spec: Any) -> dict[str, Any]:
    """The plain-data (JSON-ready) form of a spec: its type name and non-default fields.

    Example:
        >>> from attnblocks import Attention, Split, Stripe, Window
        >>> to_config(Window(7, shift=3))
        {'type': 'Window', 'size': [7, 7], 'shift': [3, 3]}
        >>> to_config(Attention(heads=Split(Window(7), Stripe(2, axis="h"))))["heads"]["args"][1]
        {'type': 'Stripe', 'width': 2, 'axis': 'h'}
    """
    cls = type(spec)
    if SPEC_TYPES.get(cls.__name__) is not cls or not _constructible(cls):
        raise AttnblocksError(
            f"to_config: {spec!r} ({cls.__name__}) is not a registered spec class."
        )
    out: dict[str, Any] = {"type": cls.__name__}
    if hasattr(spec, "config_args"):
        out["args"] = _encode(list(spec.config_args()))
        return out
    for f in dataclasses.fields(spec):
        if not f.init:
            continue
        value = getattr(spec, f.name)
        if f.default is not dataclasses.MISSING and value == f.default:
            continue
        out[f.name] = _encode(value)
    return out


MAX_DEPTH = 32
"""The deepest nesting of dicts and lists :func:`from_config` reads (real specs nest < 6)."""


def _decode(value: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise AttnblocksError(
            f"from_config: {where} nests deeper than {MAX_DEPTH} levels of dicts and lists."
        )
    if isinstance(value, dict):
        return _from_config(value, depth + 1)
    if isinstance(value, (list, tuple)):
        return tuple(_decode(v, where, depth + 1) for v in value)
    if isinstance(value, _SCALARS):
        return value
    raise AttnblocksError(
        f"from_config: {where} must be plain data (dict, list, str, number, bool, None), got "
        f"{value!r} ({type(value).__name__})."
    )


def from_config(config: dict[str, Any]) -> Any:
    """Rebuild a spec from :func:`to_config`'s form; the spec validates its fields as usual.

    Raises:
        AttnblocksError: for an unknown type name, an unknown field, non-data values or a
            nesting deeper than :data:`MAX_DEPTH`.

    Example:
        >>> from_config({"type": "Stripe", "width": 7, "axis": "h"})
        Stripe(7, axis='h')
    """
    return _from_config(config, 0)


def _from_config(config: dict[str, Any], depth: int) -> Any:
    if not isinstance(config, dict):
        raise AttnblocksError(f"from_config expects a dict, got {type(config).__name__}.")
    if "type" not in config:
        raise AttnblocksError(f"from_config: {config!r} has no 'type' naming its spec class.")
    name = config["type"]
    types = spec_types()
    if not isinstance(name, str) or name not in types:
        raise AttnblocksError(
            f"from_config: unknown spec type {name!r}; known: {', '.join(sorted(types))}."
        )
    cls = types[name]
    fields = {k: v for k, v in config.items() if k != "type"}
    if hasattr(cls, "config_args"):
        if set(fields) != {"args"} or not isinstance(fields["args"], list):
            raise AttnblocksError(
                f"from_config: {name} takes exactly one field 'args' (a list), got "
                f"{sorted(fields)}."
            )
        return cls(*_decode(fields["args"], f"{name}.args", depth))
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise AttnblocksError(
            f"from_config: {name} has no field(s) {', '.join(map(repr, unknown))}; its fields "
            f"are {', '.join(sorted(known)) or 'none'}."
        )
    return cls(**{k: _decode(v, f"{name}.{k}", depth) for k, v in fields.items()})
