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
from ._contain import contained, own_keys_contained
from ._errors import AttnblocksError
from .backends.registry import check_backend, choose_backend
from .lowering import GroupPlan
from .partition import Partition

__all__ = [
    "GroupRunner",
    "RunContext",
    "check_rank",
    "register_runner",
    "run_group",
    "runner_for",
    "static_map_size",
]


@dataclass
class RunContext:
    """What every group of one forward call shares.

    ``x: (B, *shape, C)`` (``(B, H, W, C)`` on 2-D) is the layer input after the encoders'
    ``prepare``; ``fill: (3, C)`` the values of padded tokens for ``pad="timm"`` (else
    ``None``).
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
    ``qkv: (B, *shape, 3, c)`` (``(B, H, W, 3, c)`` on 2-D); ``"own"``: the runner makes K
    and V itself (from ``ctx.x``) and ``forward`` gets ``qkv: (B, *shape, 1, c)``, the
    group's queries only.
    """

    kv_source: ClassVar[str] = "tokens"
    #: the token-map ranks the runner takes (``None``: any rank)
    ranks: ClassVar[tuple[int, ...] | None] = None

    def __init__(self, spec, group: GroupPlan, dim: int, num_heads: int, device=None, dtype=None):
        super().__init__()
        self.group = group

    def forward(self, qkv: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """``qkv: (B, *shape, 3 or 1, c) -> (B, *shape, c)``."""
        raise NotImplementedError

    def key_sets(self, shape: tuple[int, ...], pad: str) -> str:
        """How the eager lowering's keys relate to each query's key set on a map of size
        ``shape``
        (what :func:`run_group` needs to contain a non-finite token): ``"windows"`` (each
        query attends to all of its window's keys: NaN spreads only where it may),
        ``"self"`` (windows of one token: SDPA returns v for one key whatever q and k are, so
        non-finite rows are marked directly) or ``"masked"`` (some keys computed with are
        masked out: masked windows, tiles; the default)."""
        return "masked"


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
    decided here only for a direct call.

    Lowerings that compute with keys outside some query's key set (masked windows, tiles, a
    dense or flex mask) run under :func:`~attnblocks._contain.contained`: a non-finite token
    reaches only the queries that may attend to it."""
    if runner.kv_source == "tokens":
        static_map_size(runner.group, tuple(qkv.shape[1:-2]))
    backend = ctx.backend if backend is None else backend
    if backend == "auto":
        backend = choose_backend(runner.group.partition, qkv, ctx)
    if backend == "eager":
        if runner.kv_source != "tokens":
            return own_keys_contained(runner, qkv, ctx)
        keys = runner.key_sets(tuple(qkv.shape[1:-2]), ctx.pad)
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


def static_map_size(group: GroupPlan, shape: tuple) -> None:
    """Raise a clear error where ``torch.export`` was given a dynamic map size: window and
    sliding-window plans are per map size (compile specialises them, one graph per size), so
    an exported program cannot hold for other sizes."""
    if torch.compiler.is_exporting() and not all(isinstance(n, int) for n in shape):
        raise AttnblocksError(
            f"{group.partition!r} (head group {group.index}) plans its windows per map size: "
            f"torch.export with a dynamic map size (here {' x '.join(map(str, shape))}) cannot "
            f"hold for other sizes.\n  Hint: export once per map size (static H, W); a dynamic "
            f"batch is fine."
        )


def check_rank(owner: object, rank: int, modules) -> None:
    """Refuse a token map of ``rank`` axes for any runner or encoder module that does not take
    it (their ``ranks``), naming ``owner`` (a name, or a spec: its repr, made only for the
    error), the module and the ranks it does take."""
    for m in modules:
        ranks = getattr(m, "ranks", None)
        if ranks is not None and rank not in ranks:
            what = (
                f"{m.group.partition!r} (head group {m.group.index})"
                if isinstance(m, GroupRunner)
                else type(m).__name__
            )
            name = owner if isinstance(owner, str) else repr(owner)
            raise AttnblocksError(
                f"{name}: {what} runs on {' or '.join(f'{r}-D' for r in ranks)} token maps, "
                f"got a {rank}-D map."
            )


def runner_for(partition: Partition) -> type[GroupRunner]:
    """The runner class of a concrete partition."""
    cls = hooks.lookup(partition, "runner", None)
    if cls is None:
        raise AttnblocksError(f"No lowering is registered for {partition!r}.")
    return cls
