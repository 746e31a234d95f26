"""A dense reference for scores and positional encoders: every query against every key.

Structurally unlike the fast path: no windows, no einops, no index tables. Who may attend to
whom comes from the oracle mask (``dense_mask``, built from token coordinates); positions
come from token coordinates too:

- ``Cosine``: ``normalize(q) . normalize(k) * exp(min(logit_scale, log(max)))``, explicit.
- ``ContinuousPosBias``: for each allowed pair, the offset inside its window (map offset;
  divided by the grid spacing for ``Grid``), mapped to log coordinates per pair, through the
  MLP written out as matmuls.
- ``RelPosBias``: the table row of each pair's offset, looked up per pair.
- ``AxialRoPE``: q and k rotated as complex numbers ``(a + ib) * exp(i * angle)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnblocks import Grid, dense_mask
from attnblocks.encoders import AxialRoPEModule, ContinuousPosBiasModule, RelPosBiasModule
from attnblocks.lowering import rect_layout
from attnblocks.projection import QVBiasLinear
from attnblocks.score import CosineModule


def _log_coord(offset: Tensor, norm: int) -> Tensor:
    """SwinV2's mapping of one axis' offsets, float32 as the authors compute it."""
    t = offset.to(torch.float32) / max(norm - 1, 1) * 8
    return torch.sign(t) * torch.log2(t.abs() + 1) / math.log2(8)


def _pair_offsets(partition, H: int, W: int) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """``(N, N)`` row and column offsets (query minus key) inside a window, and the window."""
    lay = rect_layout(partition, H, W, pad="mask")
    y, x = torch.arange(H).repeat_interleave(W), torch.arange(W).repeat(H)
    dy, dx = y[:, None] - y[None, :], x[:, None] - x[None, :]
    if isinstance(partition, Grid):  # grid sets are spaced by the number of sets per axis
        dy, dx = dy // lay.counts[0], dx // lay.counts[1]
    return dy, dx, lay.window


def _rope(t: Tensor, module: AxialRoPEModule) -> Tensor:
    """``t: (B, H, W, h, d)`` rotated pairwise as complex numbers."""
    B, H, W, h, d = t.shape
    n = d // 4
    spec = module.spec
    freqs = 1.0 / (spec.temperature ** (torch.arange(n).to(torch.float32) / n))
    rows, cols = torch.arange(H).to(torch.float32), torch.arange(W).to(torch.float32)
    if spec.ref is not None:
        rows, cols = rows / H * spec.ref[0], cols / W * spec.ref[1]
    f = freqs.to(t.dtype)  # float32 frequencies (as timm), angles in t's dtype
    row_ang = (rows.to(t.dtype)[:, None] * f).view(H, 1, n).expand(H, W, n)
    col_ang = (cols.to(t.dtype)[:, None] * f).view(1, W, n).expand(H, W, n)
    ang = torch.cat([row_ang, col_ang], dim=-1)[:, :, None]  # (H, W, 1, d/2)
    z = torch.view_as_complex(t.reshape(B, H, W, h, d // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(ang), ang)).reshape(t.shape)


def dense_forward(layer, x: Tensor) -> Tensor:
    """The layer's output, computed densely.  ``x: (B, H, W, C) -> (B, H, W, C)``."""
    B, H, W, C = x.shape
    h, d = layer.num_heads, layer.head_dim
    proj = layer.qkv
    if isinstance(proj, QVBiasLinear):
        bias = torch.cat([proj.q_bias, torch.zeros_like(proj.q_bias), proj.v_bias])
    else:
        bias = proj.bias
    qkv = x @ proj.weight.T + (0 if bias is None else bias)
    q, k, v = qkv.view(B, H, W, 3, h, d).unbind(3)
    for e in layer.pe:
        if isinstance(e, AxialRoPEModule):
            q, k = _rope(q, e), _rope(k, e)
    q, k, v = (t.reshape(B, H * W, h, d).transpose(1, 2) for t in (q, k, v))  # (B, h, N, d)
    if isinstance(layer.score, CosineModule):
        qn = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        kn = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        s = torch.exp(
            torch.clamp(layer.score.logit_scale, max=math.log(layer.score.spec.max_scale))
        )
        logits = (qn @ kn.transpose(-1, -2)) * s.view(1, h, 1, 1)
    else:
        logits = (q @ k.transpose(-1, -2)) * layer.scale
    masks = dense_mask(layer.spec, H, W, num_heads=h)
    outs = []
    for g, allowed in zip(layer.groups, masks):
        h0, h1 = g.heads
        lg = logits[:, h0:h1]
        dy, dx, window = _pair_offsets(g.partition, H, W)
        for e in layer.pe:
            if isinstance(e, ContinuousPosBiasModule):
                ref = e.pretrained or window
                coords = torch.stack([_log_coord(dy, ref[0]), _log_coord(dx, ref[1])], -1)
                w1, b1, w2 = e.cpb_mlp[0].weight, e.cpb_mlp[0].bias, e.cpb_mlp[2].weight
                hidden = torch.relu(coords.to(x.dtype) @ w1.T + b1)
                lg = lg + 16 * torch.sigmoid(hidden @ w2[h0:h1].T).permute(2, 0, 1)
            elif isinstance(e, RelPosBiasModule):
                mh, mw = e.sizes[g.index]
                table = e.tables[g.index]
                row = ((dy + mh - 1) * (2 * mw - 1) + (dx + mw - 1)).clamp(0, table.shape[0] - 1)
                lg = lg + table[row].permute(2, 0, 1)
        lg = lg.masked_fill(~allowed, float("-inf"))
        outs.append(torch.softmax(lg, dim=-1) @ v[:, h0:h1])
    o = torch.cat(outs, dim=1).transpose(1, 2).reshape(B, H, W, C)
    return o @ layer.proj.weight.T + layer.proj.bias
