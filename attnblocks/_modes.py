"""What a call runs under, for the paths that must change with it: ``torch.func`` transforms.

Under ``grad``, ``vmap``, ``jvp``, ``jacrev`` and ``hessian`` tensors are wrapped per transform
level (a factory's result too), ``vmap`` cannot read a value, and autograd functions without a
vmap rule or kernels without a forward-mode derivative fail. The size caches, NaN containment,
the token permutation and :func:`~attnblocks.kernels.attend` ask :func:`transforming`.
"""

from __future__ import annotations

import torch

__all__ = ["transforming"]


def transforming() -> bool:
    """Whether a ``torch.func`` transform sees this call (torch has no public query; its own
    code reads functorch's interpreter stack, as this does)."""
    return torch._C._functorch.peek_interpreter_stack() is not None
