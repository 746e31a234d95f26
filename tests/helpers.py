"""Test helpers: an oracle forward built from the dense mask, and weight copying."""

from __future__ import annotations

import torch
from einops import rearrange

from attnblocks import (
    Attention,
    AttentionLayer,
    Dilated,
    LePE,
    Neighborhood,
    RelPosBias,
    Split,
    Stripe,
    Window,
    dense_mask,
    zoo,
)
from attnblocks.backends import dense_attention
from attnblocks.encoders import RelPosBiasModule


def _nat_bias(table: torch.Tensor, part: Dilated, H: int, W: int) -> torch.Tensor:
    """NAT's ``rpb`` for every token pair ``(h, N, N)``: ``table[:, (yk-yq)/r + k-1, (xk-xq)/r
    + k-1]`` where the key is on the query's sub-grid within ``k-1`` steps, else 0 (masked)."""
    (kh, kw), (ry, rx) = part.kernel_size, part.dilation_size
    y, x = torch.arange(H).repeat_interleave(W), torch.arange(W).repeat(H)
    dy, dx = y[None, :] - y[:, None], x[None, :] - x[:, None]  # key minus query
    near = (dy % ry == 0) & (dx % rx == 0) & (dy.abs() < kh * ry) & (dx.abs() < kw * rx)
    iy = torch.where(near, dy // ry + kh - 1, 0)
    ix = torch.where(near, dx // rx + kw - 1, 0)
    return torch.where(near, table[:, iy, ix], 0.0)


def oracle_forward(layer: AttentionLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer's attention computed densely over all tokens with the oracle mask.

    Valid for layers without positional encoders (the mask is all the oracle knows) and for
    :class:`~attnblocks.RelPosBias` on sliding-window groups (NAT's ``rpb``, added per token pair
    from coordinates). ``x: (B, H, W, C) -> (B, H, W, C)``.
    """
    B, H, W, C = x.shape
    masks = dense_mask(layer.spec, H, W, num_heads=layer.num_heads)
    qkv = layer.qkv(x.reshape(B, H * W, C))
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=layer.num_heads)
    outs = []
    for g, allowed in zip(layer.groups, masks):
        h0, h1 = g.heads
        bias = None
        for e in layer.pe:
            if not (isinstance(e, RelPosBiasModule) and isinstance(g.partition, Dilated)):
                raise ValueError(f"oracle_forward does not know {type(e).__name__} on {g!r}")
            bias = _nat_bias(e.tables[g.index], g.partition, H, W)
        outs.append(
            dense_attention(q[:, h0:h1], k[:, h0:h1], v[:, h0:h1], allowed, layer.scale, bias)
        )
    o = rearrange(torch.cat(outs, dim=1), "b h n d -> b n (h d)")
    return layer.proj(o).view(B, H, W, C)


def randomize_(module: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with seeded normal noise (biases and tables included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module


def masked_reference(layer, x: torch.Tensor, masks) -> torch.Tensor:
    """The layer's projections around dense attention with one ``(N, N)`` mask per group."""
    B, H, W, C = x.shape
    qkv = layer.qkv(x.reshape(B, H * W, C))
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=layer.num_heads)
    outs = []
    for g, allowed in zip(layer.groups, masks):
        h0, h1 = g.heads
        outs.append(dense_attention(q[:, h0:h1], k[:, h0:h1], v[:, h0:h1], allowed, layer.scale))
    return layer.proj(rearrange(torch.cat(outs, dim=1), "b h n d -> b n (h d)")).view(B, H, W, C)


# every zoo layer at small sizes (windows of 3, stripes of 2), and two hybrids: the layers the
# mode, compile and fp16 tests run over
SMALL_ZOO = {
    "swin": zoo.swin(3, shift=1),
    "cswin": zoo.cswin(2),
    "swinv2": zoo.swinv2(3, shift=1),
    "maxvit_block": zoo.maxvit_block(3),
    "maxvit_grid": zoo.maxvit_grid(3),
    "pvtv2": zoo.pvtv2(2),
    "shunted": zoo.shunted(4),
    "dilateformer": zoo.dilateformer(3, (1, 2)),
    "nat": zoo.nat(3),
    "dinat": zoo.dinat(3, 2),
}
SMALL_HYBRIDS = {
    "hybrid_stripes": Attention(
        heads=Split(Window(3, shift=1), Stripe(2, axis="h")), pe=(LePE(), RelPosBias(size=8))
    ),
    "hybrid_sliding": Attention(heads=Split(Window(3), Neighborhood(3)), pe=RelPosBias()),
}
