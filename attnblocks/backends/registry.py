"""Which lowering runs a head group: a registry keyed on (backend, partition type).

``"eager"`` is each runner's own ``forward``. Other backends register a function
``fn(runner, qkv, ctx) -> (B, H, W, c)`` for partition types (looked up along the MRO, so a
registration for :class:`~attnblocks.Partition` is a fallback for every partition).

``"auto"`` picks per call (:func:`choose_backend`). Measured on the 2-core CPU of the development
machines (``benchmarks/backends.py``, torch 2.14.1, fp32): eager FlexAttention is many times
slower than the eager lowering (it materialises the scores), compiled FlexAttention has no
backward on CPU and a first call of seconds, and the dense oracle grows as ``N^2``. So ``auto``
is the eager lowering on CPU; on CUDA inside ``torch.compile`` with no gradient, where the fused
flex kernel skips the masked blocks, it is ``"flex"`` when the group has a flex lowering.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .._errors import AttnblocksError

if TYPE_CHECKING:
    from ..partition import Partition

__all__ = ["choose_backend", "lowering_for", "register_lowering"]

Lowering = Callable[[Any, torch.Tensor, Any], torch.Tensor]
_LOWERINGS: dict[tuple[str, type], Lowering] = {}


def register_lowering(backend: str, *types: type) -> Callable[[Lowering], Lowering]:
    """Decorator: ``fn(runner, qkv, ctx)`` runs groups of these partition types on ``backend``.

    Example:
        >>> from attnblocks.backends.registry import lowering_for
        >>> from attnblocks import Window
        >>> lowering_for(Window(7), "dense").__name__
        'dense_lowering'
    """

    def deco(fn: Lowering) -> Lowering:
        for t in types:
            _LOWERINGS[(backend, t)] = fn
        return fn

    return deco


def lowering_for(partition: Partition, backend: str) -> Lowering | None:
    """The registered lowering of ``partition`` on ``backend``, or ``None``."""
    for t in type(partition).__mro__:
        fn = _LOWERINGS.get((backend, t))
        if fn is not None:
            return fn
    return None


def needs_grad(qkv: torch.Tensor, modules: Any) -> bool:
    """True when this call records a graph: grad mode on and an input or parameter needs it."""
    if not torch.is_grad_enabled():
        return False
    return qkv.requires_grad or any(p.requires_grad for m in modules for p in m.parameters())


def choose_backend(partition: Partition, qkv: torch.Tensor, ctx: Any) -> str:
    """The backend ``"auto"`` runs a group with (see the module docstring for why)."""
    flex = lowering_for(partition, "flex") is not None
    compiling = torch.compiler.is_compiling()
    if flex and compiling and qkv.is_cuda and not needs_grad(qkv, ctx.encoders):
        return "flex"
    return "eager"


def check_backend(partition: Partition, backend: str) -> Lowering:
    """The lowering of a non-eager backend, or an error naming the partition."""
    fn = lowering_for(partition, backend)
    if fn is None:
        raise AttnblocksError(
            f"backend={backend!r} has no lowering for {partition!r}: use backend='eager' or 'auto'."
        )
    return fn
