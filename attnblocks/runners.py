"""Group runners: the module that runs one head group of a built attention.

Each concrete partition type maps to a runner class (``register_runner``). A runner may own
parameters of its own (a downsampled key/value path, say); the layer hands it the group's
projected ``q, k, v`` and a :class:`RunContext`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from . import hooks
from ._errors import AttnblocksError
from .backends.registry import check_backend, choose_backend
from .lowering import GroupPlan
from .partition import Partition

__all__ = [
    "GroupRunner",
    "RunContext",
    "register_runner",
    "run_group",
    "runner_for",
]


@dataclass
class RunContext:
    """What every group of one forward call shares.

    ``x: (B, H, W, C)`` is the layer input after the encoders' ``prepare``; ``fill: (3, C)`` the
    values of padded tokens for ``pad="timm"`` (else ``None``).
    """

    x: torch.Tensor
    scale: float
    encoders: nn.ModuleList
    dropout_p: float
    pad: str
    fill: torch.Tensor | None = None
    backend: str = "eager"


class GroupRunner(nn.Module):
    """Runs one head group. ``kv_source`` says where its keys and values come from:

    ``"tokens"``: the fused ``[q | k | v]`` projection of the map's tokens, so ``forward`` gets
    ``qkv: (B, H, W, 3, c)``; ``"own"``: the runner makes K and V itself (from ``ctx.x``) and
    ``forward`` gets ``qkv: (B, H, W, 1, c)``, the group's queries only.
    """

    kv_source: ClassVar[str] = "tokens"

    def __init__(self, spec, group: GroupPlan, dim: int, num_heads: int, device=None, dtype=None):
        super().__init__()
        self.group = group

    def forward(self, qkv: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """``qkv: (B, H, W, 3 or 1, c) -> (B, H, W, c)``."""
        raise NotImplementedError


def register_runner(*types: type[Partition]):
    """Class decorator: run groups whose partition is one of ``types`` with this runner (the
    ``runner`` hook of :mod:`attnblocks.hooks`)."""

    def deco(cls: type[GroupRunner]) -> type[GroupRunner]:
        return hooks.register("runner", types, cls)

    return deco


def run_group(
    runner: GroupRunner, qkv: torch.Tensor, ctx: RunContext, backend: str | None = None
) -> torch.Tensor:
    """Run one head group on ``backend`` (``None``: ``ctx.backend``): the runner itself
    (eager) or a registered lowering. The layer and :func:`attnblocks.functional.attention`
    pass the backend their call plan decided (``attnblocks._core.plan_call``); ``"auto"`` is
    decided here only for a direct call."""
    backend = ctx.backend if backend is None else backend
    if backend == "auto":
        backend = choose_backend(runner.group.partition, qkv, ctx)
    if backend == "eager":
        return runner(qkv, ctx)
    return check_backend(runner.group.partition, backend)(runner, qkv, ctx)


def runner_for(partition: Partition) -> type[GroupRunner]:
    """The runner class of a concrete partition."""
    cls = hooks.lookup(partition, "runner", None)
    if cls is None:
        raise AttnblocksError(f"No lowering is registered for {partition!r}.")
    return cls
