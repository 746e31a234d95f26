"""Test helpers: an oracle forward built from the dense mask, and weight copying."""

from __future__ import annotations

import torch
from einops import rearrange

from attnblocks import AttentionLayer, dense_mask
from attnblocks.backends import dense_attention


def oracle_forward(layer: AttentionLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer's attention computed densely over all tokens with the oracle mask.

    Only valid for layers without positional encoders (the mask is all the oracle knows).
    ``x: (B, H, W, C) -> (B, H, W, C)``.
    """
    B, H, W, C = x.shape
    masks = dense_mask(layer.spec, H, W, num_heads=layer.num_heads)
    qkv = layer.qkv(x.reshape(B, H * W, C))
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=layer.num_heads)
    outs = []
    for g, allowed in zip(layer.groups, masks):
        h0, h1 = g.heads
        outs.append(dense_attention(q[:, h0:h1], k[:, h0:h1], v[:, h0:h1], allowed, layer.scale))
    o = rearrange(torch.cat(outs, dim=1), "b h n d -> b n (h d)")
    return layer.proj(o).view(B, H, W, C)


def randomize_(module: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with seeded normal noise (biases and tables included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module
