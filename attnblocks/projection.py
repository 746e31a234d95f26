"""The fused ``[q | k | v]`` projection, with the bias layouts the published models use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._errors import AttnblocksError

__all__ = ["QKV_BIAS", "QVBiasLinear", "qkv_projection"]

QKV_BIAS = (True, False, "qv")


class QVBiasLinear(nn.Module):
    """``Linear(C, 3C)`` whose bias is ``[q_bias | 0 | v_bias]``: keys get no bias.

    SwinV2's (and BEiT's, EVA's) projection: a key bias only shifts every logit of a query by
    the same amount, which the softmax ignores, so it is left out. Parameters, under the
    authors' names: ``weight: (3C, C)``, ``q_bias: (C,)``, ``v_bias: (C,)`` (zero-initialised).

    Shapes:
        ``x: (..., C) -> (..., 3C)``.

    Example:
        >>> proj = QVBiasLinear(8)
        >>> proj(torch.randn(2, 8)).shape
        torch.Size([2, 24])
        >>> proj.bias[8:16].abs().sum().item()
        0.0
    """

    def __init__(self, dim: int, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = dim, 3 * dim
        self.weight = nn.Parameter(torch.empty(3 * dim, dim, **dd))
        self.q_bias = nn.Parameter(torch.empty(dim, **dd))
        self.v_bias = nn.Parameter(torch.empty(dim, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's default
        nn.init.zeros_(self.q_bias)
        nn.init.zeros_(self.v_bias)

    @property
    def bias(self) -> torch.Tensor:
        """The full ``(3C,)`` bias ``[q_bias | 0 | v_bias]``."""
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias='qv'"


def qkv_projection(dim: int, bias: bool | str = True, device=None, dtype=None) -> nn.Module:
    """The ``Linear(C, 3C)`` of an attention: ``bias`` is ``True``, ``False`` or ``"qv"``.

    Example:
        >>> qkv_projection(8, "qv")
        QVBiasLinear(in_features=8, out_features=24, bias='qv')
    """
    if not (bias is True or bias is False or bias == "qv"):
        raise AttnblocksError(f"qkv_bias must be one of {QKV_BIAS}, got {bias!r}.")
    if bias == "qv":
        return QVBiasLinear(dim, device=device, dtype=dtype)
    return nn.Linear(dim, 3 * dim, bias=bool(bias), device=device, dtype=dtype)
