"""Group runners: the module that runs one head group of a built attention.

Each concrete partition type maps to a runner class (``register_runner``). A runner may own
parameters of its own (a downsampled key/value path, say); the layer hands it the group's
projected ``q, k, v`` and a :class:`RunContext`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ._contain import contained, own_keys_contained
from ._errors import AttnblocksError
from .backends.eager import loops_per_head, ordered_attention, rect_attention
from .backends.registry import check_backend, choose_backend
from .lowering import GroupPlan, RectLayout, rect_layout
from .partition import Global, Grid, Partition, Stripe, Window

__all__ = [
    "GroupRunner",
    "RectRunner",
    "RunContext",
    "register_runner",
    "run_group",
    "runner_for",
    "static_map_size",
]

_RUNNERS: dict[type, type[GroupRunner]] = {}
_RECT = (Window, Stripe, Global, Grid)


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
    """Class decorator: run groups whose partition is one of ``types`` with this runner."""

    def deco(cls: type[GroupRunner]) -> type[GroupRunner]:
        for t in types:
            _RUNNERS[t] = cls
        return cls

    return deco


def run_group(runner: GroupRunner, qkv: torch.Tensor, ctx: RunContext) -> torch.Tensor:
    """Run one head group on ``ctx.backend``: the runner itself (eager) or a registered lowering.

    Lowerings that compute with keys outside some query's key set (masked windows, tiles, a
    dense or flex mask) run under :func:`~attnblocks._contain.contained`: a non-finite token
    reaches only the queries that may attend to it."""
    if runner.kv_source == "tokens":
        static_map_size(runner.group, qkv.shape[1], qkv.shape[2])
    backend = ctx.backend
    if backend == "auto":
        backend = choose_backend(runner.group.partition, qkv, ctx)
    if backend == "eager":
        if runner.kv_source != "tokens":
            return own_keys_contained(runner, qkv, ctx)
        keys = _key_sets(runner, qkv, ctx)
        if keys == "windows":
            return runner(qkv, ctx)
        if keys == "self":
            return own_keys_contained(runner, qkv, ctx)
        return contained(runner, qkv, ctx)
    lowering = check_backend(runner.group.partition, backend)
    if runner.kv_source != "tokens":
        return own_keys_contained(lambda t, c: lowering(runner, t, c), qkv, ctx)
    if backend == "flex" and torch.compiler.is_compiling():
        # compiled flex: inductor's CPU flex template takes no consumer of its output into a
        # torch.cond (NotImplementedError, torch 2.14), so NaN is not contained there
        return lowering(runner, qkv, ctx)
    return contained(lambda t, c: lowering(runner, t, c), qkv, ctx)


def static_map_size(group: GroupPlan, H: Any, W: Any) -> None:
    """Raise a clear error where ``torch.export`` was given a dynamic H or W: window and
    sliding-window plans are per map size (compile specialises them, one graph per size), so
    an exported program cannot hold for other sizes."""
    if torch.compiler.is_exporting() and not (isinstance(H, int) and isinstance(W, int)):
        raise AttnblocksError(
            f"{group.partition!r} (head group {group.index}) plans its windows per map size: "
            f"torch.export with a dynamic H or W (here {H} x {W}) cannot hold for other sizes."
            f"\n  Hint: export once per map size (static H, W); a dynamic batch is fine."
        )


def _key_sets(runner: GroupRunner, qkv: torch.Tensor, ctx: RunContext) -> str:
    """How the eager lowering's keys relate to each query's key set: ``"windows"`` (unmasked
    windows, stripes, grids: the window is the key set, NaN spreads only where it may),
    ``"self"`` (windows of one token: SDPA returns v for one key, whatever q and k are, so
    non-finite rows are marked directly), ``"masked"`` (more keys than allowed: masked
    windows, tiles)."""
    if type(runner) is RectRunner and isinstance(runner.group.partition, _RECT):
        layout = rect_layout(runner.group.partition, qkv.shape[1], qkv.shape[2], ctx.pad)
        if layout.tokens == 1:
            return "self"
        return "masked" if layout.needs_mask else "windows"
    return "masked"


def runner_for(partition: Partition) -> type[GroupRunner]:
    """The runner class of a concrete partition."""
    for t in type(partition).__mro__:
        if t in _RUNNERS:
            return _RUNNERS[t]
    raise AttnblocksError(f"No lowering is registered for {partition!r}.")


@register_runner(Window, Stripe, Global, Grid)
class RectRunner(GroupRunner):
    """Windows, stripes, grids and global attention: batched windows + one fused call."""

    def forward(self, qkv: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        g = self.group
        layout = rect_layout(g.partition, qkv.shape[1], qkv.shape[2], ctx.pad)
        fill = None if ctx.fill is None else ctx.fill[:, g.channels[0] : g.channels[1]]
        return rect_attention(qkv, layout, g, ctx.scale, ctx.encoders, ctx.dropout_p, fill)

    def ordered_layout(
        self, H: int, W: int, pad: str, batch: int = 1, device: torch.device | str = "cpu"
    ) -> RectLayout | None:
        """The group's layout on an ``H x W`` map if tokens in window order can be attended as
        they are (:meth:`forward_ordered`): no padding, and no mask or windows that run head by
        head (:func:`~attnblocks.backends.eager.loops_per_head`); else ``None``."""
        static_map_size(self.group, H, W)
        layout = rect_layout(self.group.partition, H, W, pad)
        if layout.pad != (0, 0):
            return None
        windows = batch * layout.num_windows
        if layout.needs_mask and not loops_per_head(layout.tokens, windows, device):
            return None
        return layout

    def forward_ordered(
        self, qkv: torch.Tensor, layout: RectLayout, ctx: RunContext
    ) -> torch.Tensor:
        """``qkv: (B, N, 3, c)`` in the layout's window order -> ``(B, N, c)``, same order."""
        g = self.group

        def run(t: torch.Tensor, c: RunContext) -> torch.Tensor:
            return ordered_attention(t, layout, g, c.scale, c.encoders, c.dropout_p)

        if layout.tokens == 1:
            return own_keys_contained(run, qkv, ctx)
        return contained(run, qkv, ctx) if layout.needs_mask else run(qkv, ctx)
