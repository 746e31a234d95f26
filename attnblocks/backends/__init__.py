"""Backends run a head group's plan: ``eager`` is each family's own runner (batched windows,
fused SDPA), ``flex`` (FlexAttention with a block mask) and ``dense`` (the oracle) are
lowerings registered per partition type. :mod:`.registry` says which runs a head group; the
families' own kernels live in :mod:`attnblocks.families`, the shared ones in
:mod:`attnblocks.kernels`.
"""

from .dense import dense_attention, dense_lowering
from .registry import choose_backend, lowering_for, register_lowering

__all__ = [
    "choose_backend",
    "dense_attention",
    "dense_lowering",
    "lowering_for",
    "register_lowering",
]
