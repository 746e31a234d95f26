"""Which lowering runs a head group: a registry keyed on (backend, partition type).

``"eager"`` is each runner's own ``forward``. Other backends register a function
``fn(runner, qkv, ctx) -> (B, H, W, c)`` for partition types (looked up along the MRO, so a
registration for :class:`~attnblocks.Partition` is a fallback for every partition).

``"auto"`` is decided once per call, per head group, before any projection
(:func:`auto_backend`, asked by ``attnblocks._core.plan_call``): the eager lowering, since on
CPU flex without compile materialises the scores, dense costs ``N^2`` memory, and
FlexAttention has no CPU backward and a compiled first call of seconds (measured:
``benchmarks/rules.md``). The rule that would pick ``"flex"`` (CUDA, inside
``torch.compile``, no gradient, where the fused kernel skips masked blocks) is written but
off: it is unmeasured (no GPU has run it). The ``auto_rule`` section of
``benchmarks/gpu_check.sh``'s output (compiled flex / compiled eager layer, forward without
gradient) decides it; set ``AUTO_FLEX_ON_CUDA = True`` to try it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .. import hooks
from .._errors import AttnblocksError
from ..kernels import needs_grad

if TYPE_CHECKING:
    from ..partition import Partition

__all__ = [
    "AUTO_FLEX_ON_CUDA",
    "auto_backend",
    "choose_backend",
    "lowering_for",
    "register_lowering",
]

AUTO_FLEX_ON_CUDA = False

Lowering = Callable[[Any, torch.Tensor, Any], torch.Tensor]


def register_lowering(backend: str, *types: type) -> Callable[[Lowering], Lowering]:
    """Decorator: ``fn(runner, qkv, ctx)`` runs groups of these partition types on ``backend``
    (the ``backend:NAME`` hook of :mod:`attnblocks.hooks`).

    Example:
        >>> from attnblocks.backends.registry import lowering_for
        >>> from attnblocks import Window
        >>> lowering_for(Window(7), "dense").__name__
        'dense_lowering'
    """

    def deco(fn: Lowering) -> Lowering:
        return hooks.register(f"backend:{backend}", types, fn)

    return deco


def lowering_for(partition: Partition, backend: str) -> Lowering | None:
    """The registered lowering of ``partition`` on ``backend``, or ``None``."""
    return hooks.lookup(partition, f"backend:{backend}", None)


def auto_backend(partition: Partition, device: torch.device, grad: Callable[[], bool]) -> str:
    """The backend ``"auto"`` runs a group of ``partition`` with on ``device`` (see the module
    docstring for why). ``grad()`` says whether the call records a graph; it is asked last, only
    where the answer matters. The layer and :func:`attnblocks.functional.attention` ask once per
    call, before any projection, and pass the answer down (``attnblocks._core.plan_call``)."""
    if (
        AUTO_FLEX_ON_CUDA
        and device.type == "cuda"
        and torch.compiler.is_compiling()
        and lowering_for(partition, "flex") is not None
        and not grad()
    ):
        return "flex"
    return "eager"


def choose_backend(partition: Partition, qkv: torch.Tensor, ctx: Any) -> str:
    """:func:`auto_backend` for a group's projected ``qkv`` and a run context."""
    return auto_backend(partition, qkv.device, lambda: needs_grad(qkv, ctx.encoders))


def check_backend(partition: Partition, backend: str) -> Lowering:
    """The lowering of a non-eager backend, or an error naming the partition."""
    fn = lowering_for(partition, backend)
    if fn is None:
        raise AttnblocksError(
            f"backend={backend!r} has no lowering for {partition!r}: use backend='eager' or 'auto'."
        )
    return fn
