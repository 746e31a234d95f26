"""Benchmark-side references for NAT's neighbourhood attention (kernel k, dilation 1).

A query at ``(y, x)`` attends to the ``k x k`` keys of the window starting at
``clamp(y - k // 2, 0, H - k)`` (and likewise for ``x``): the window shifts inward at the
borders, so every query sees exactly ``k*k`` real keys. :func:`nat_allowed` states that rule
on flat token indices; both the FlexAttention ``mask_mod`` and the dense mask are built from
it, independently of attnblocks' plans and oracles.

- :class:`NattenNA2d`: NATTEN's ``na2d`` as users call it (optional: raises
  :class:`~benchmarks.references.Unavailable` when NATTEN is not installed). On CPU NATTEN
  0.21 has no kernel of its own: it runs its ``flex-fna`` backend, uncompiled by default, and
  has no backward.
- :class:`FlexNeighborhood`: ``flex_attention`` under ``torch.compile`` with a block mask over
  row-major tokens (forward only on CPU; an inductor failure is raised as ``Unavailable``
  with its reason).
- :class:`DenseNeighborhood`: one SDPA call over all ``N x N`` pairs with an additive mask
  (what NAT reduces to without a neighbourhood kernel; trains).

Each shares the ``qkv`` and ``proj`` of an attnblocks layer; ``x: (B, H, W, C) -> (B, H, W, C)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnblocks import AttentionLayer

from .references import Unavailable

__all__ = ["DenseNeighborhood", "FlexNeighborhood", "NattenNA2d", "nat_allowed"]


def nat_allowed(q_idx, kv_idx, H: int, W: int, k: int):
    """Whether flat query ``q_idx`` sees flat key ``kv_idx`` (row-major tokens, ``k <= H, W``).

    Works on tensors of indices (broadcasting) and inside a FlexAttention ``mask_mod``.
    """
    qy, qx = q_idx // W, q_idx % W
    ky, kx = kv_idx // W, kv_idx % W
    sy = torch.clamp(qy - k // 2, 0, H - k)
    sx = torch.clamp(qx - k // 2, 0, W - k)
    return (ky >= sy) & (ky < sy + k) & (kx >= sx) & (kx < sx + k)


class _Projected(nn.Module):
    """Shared qkv / proj around an attention core on ``(B, h, N, d)`` tensors."""

    def __init__(self, layer: AttentionLayer, kernel: int) -> None:
        super().__init__()
        self.qkv, self.proj = layer.qkv, layer.proj
        self.h, self.k, self.scale = layer.num_heads, kernel, layer.scale

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C) -> (3, B, H, W, h, d)``."""
        B, H, W, C = x.shape
        return self.qkv(x).view(B, H, W, 3, self.h, C // self.h).permute(3, 0, 1, 2, 4, 5)

    def heads_first(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C) -> (3, B, h, N, d)``."""
        B, H, W, _ = x.shape
        t = self.split(x)
        return t.reshape(3, B, H * W, self.h, -1).transpose(2, 3)

    def merge(self, o: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """``(B, h, N, d) -> proj -> (B, H, W, C)``."""
        B = o.shape[0]
        return self.proj(o.transpose(1, 2).reshape(B, H, W, -1))


class NattenNA2d(_Projected):
    """NATTEN's ``na2d`` on the layer's q, k, v (heads-last layout ``(B, H, W, h, d)``)."""

    def __init__(self, layer: AttentionLayer, kernel: int) -> None:
        super().__init__(layer, kernel)
        try:
            from natten import na2d
        except ImportError as e:
            raise Unavailable(f"natten is not installed ({e})") from None
        self.na2d = na2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = (t.contiguous() for t in self.split(x))
        o = self.na2d(q, k, v, kernel_size=self.k, scale=self.scale)
        return self.proj(o.reshape(B, H, W, C))


class NattenNA3d(nn.Module):
    """NATTEN's ``na3d`` on the layer's q, k, v, ``(B, T, H, W, h, d)``.

    Shapes: ``x: (B, T, H, W, C) -> (B, T, H, W, C)``.
    """

    def __init__(self, layer: AttentionLayer, kernel: tuple[int, int, int]) -> None:
        super().__init__()
        try:
            from natten.functional import na3d
        except ImportError as e:
            raise Unavailable(f"natten is not installed ({e})") from None
        self.na3d, self.k = na3d, kernel
        self.qkv, self.proj = layer.qkv, layer.proj
        self.h, self.scale = layer.num_heads, layer.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, C = x.shape
        q, k, v = self.qkv(x).view(*lead, 3, self.h, C // self.h).unbind(-3)
        o = self.na3d(
            q.contiguous(), k.contiguous(), v.contiguous(), kernel_size=self.k, scale=self.scale
        )
        return self.proj(o.reshape(*lead, C))


class FlexNeighborhood(_Projected):
    """Compiled ``flex_attention`` with the neighbourhood ``mask_mod`` (one block mask per map).

    ``compile=False`` runs FlexAttention eagerly (it materialises the scores; the tests use it
    to check the mask without paying for compilation).
    """

    def __init__(self, layer: AttentionLayer, kernel: int, compile: bool = True) -> None:
        super().__init__(layer, kernel)
        from torch.nn.attention.flex_attention import flex_attention

        self.flex = torch.compile(flex_attention, dynamic=False) if compile else flex_attention
        self._masks: dict[tuple[int, int], object] = {}

    def block_mask(self, H: int, W: int):
        if (H, W) not in self._masks:
            from torch.nn.attention.flex_attention import create_block_mask

            def mask_mod(b, h, q_idx, kv_idx):
                return nat_allowed(q_idx, kv_idx, H, W, self.k)

            N = H * W
            self._masks[(H, W)] = create_block_mask(mask_mod, None, None, N, N, device="cpu")
        return self._masks[(H, W)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, H, W, _ = x.shape
        q, k, v = self.heads_first(x)
        try:
            o = self.flex(q, k, v, block_mask=self.block_mask(H, W), scale=self.scale)
        except Exception as e:  # inductor failures have many types; keep the reason
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise Unavailable(
                f"compiled flex_attention failed: {type(e).__name__}: {reason}"
            ) from e
        return self.merge(o, H, W)


class DenseNeighborhood(_Projected):
    """Masked SDPA over all ``N x N`` token pairs (additive ``-inf`` outside the window)."""

    def __init__(self, layer: AttentionLayer, kernel: int) -> None:
        super().__init__(layer, kernel)
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def mask(self, H: int, W: int, dtype: torch.dtype) -> torch.Tensor:
        if (H, W) not in self._masks:
            idx = torch.arange(H * W)
            allowed = nat_allowed(idx[:, None], idx[None, :], H, W, self.k)
            self._masks[(H, W)] = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))
        return self._masks[(H, W)].to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, H, W, _ = x.shape
        q, k, v = self.heads_first(x)
        mask = self.mask(H, W, q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.merge(o, H, W)
