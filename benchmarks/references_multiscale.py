"""Benchmark-side references for DilateFormer, Shunted and PVTv2, written from the facts.

Each follows what the authors' released code *does*, vectorised and step for step, so that its
speed is the speed of that algorithm:

- DilateFormer (MSDA): a 1x1 conv makes ``[q | k | v]``; per dilation group, ``nn.Unfold``
  copies K and V ``k*k`` times (zero-padded borders: out-of-map keys are zero vectors that stay
  in the softmax), each query takes a ``(1, d) @ (d, k*k)`` matmul, softmax, and a
  ``(1, k*k) @ (k*k, d)`` matmul. The authors write the group outputs in place into a view of
  their input, which cannot back-propagate; here they are concatenated, so this one trains.
- Shunted (SSA, ``sr > 1``): two strided conv branches (``sr`` and ``sr / 2``), each flatten,
  LayerNorm, exact GELU and its own ``kv`` linear; V gets its depthwise 3x3 conv on the reduced
  map before attention; explicit ``q k^T``, scale, softmax, ``@ v`` per branch.
- PVTv2 (SRA): strided conv, LayerNorm, one shared ``kv``; explicit matmuls and softmax (timm's
  ``fused_attn=False`` path is the same algorithm; :class:`TimmPVTv2` runs timm itself).

Each shares the parameters of an attnblocks layer. All take and return ``x: (B, H, W, C)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnblocks import AttentionLayer

__all__ = ["DilateFormerAuthors", "PVTv2Authors", "ShuntedAuthors", "TimmPVTv2"]


class DilateFormerAuthors(nn.Module):
    """DilateFormer's multi-scale dilated attention as the authors compute it (``nn.Unfold``).

    Group ``i`` (heads ``[i*h/n, (i+1)*h/n)``) uses dilation ``dilations[i]``.
    Shapes: ``x: (B, H, W, C) -> (B, H, W, C)``; any ``H, W``.
    """

    def __init__(self, layer: AttentionLayer, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.qkv, self.proj = layer.qkv, layer.proj
        self.h, self.k, self.dilations = layer.num_heads, kernel, dilations
        self.scale = layer.scale

    def _dilate_attention(self, q, k, v, r: int) -> torch.Tensor:
        """``q, k, v: (B, c, H, W)`` of one group -> ``(B, H, W, c)``."""
        B, c, H, W = q.shape
        h = self.h // len(self.dilations)
        d, kk, N = c // h, self.k * self.k, H * W
        unfold = nn.Unfold(self.k, dilation=r, padding=r * (self.k - 1) // 2, stride=1)
        q = q.reshape(B, h, d, 1, N).permute(0, 1, 4, 3, 2)  # (B, h, N, 1, d)
        k = unfold(k).reshape(B, h, d, kk, N).permute(0, 1, 4, 2, 3)  # (B, h, N, d, kk)
        attn = ((q @ k) * self.scale).softmax(dim=-1)  # (B, h, N, 1, kk)
        v = unfold(v).reshape(B, h, d, kk, N).permute(0, 1, 4, 3, 2)  # (B, h, N, kk, d)
        return (attn @ v).transpose(1, 2).reshape(B, H, W, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        n = len(self.dilations)
        w = self.qkv.weight.view(3 * C, C, 1, 1)
        qkv = F.conv2d(x.permute(0, 3, 1, 2), w, self.qkv.bias)  # the authors' 1x1 conv
        qkv = qkv.reshape(B, 3, n, C // n, H, W).permute(2, 1, 0, 3, 4, 5)
        outs = [self._dilate_attention(*qkv[i], r) for i, r in enumerate(self.dilations)]
        return self.proj(torch.cat(outs, dim=-1))


class ShuntedAuthors(nn.Module):
    """Shunted self-attention (``sr > 1``) as the authors compute it: two reduced K/V branches.

    Shapes: ``x: (B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, layer: AttentionLayer) -> None:
        super().__init__()
        self.q, self.proj, self.branches = layer.q, layer.proj, layer.runners
        self.conv = layer.pe[0].conv
        self.h, self.scale = layer.num_heads, layer.scale

    def _branch(self, q, x_map, i: int, N: int) -> torch.Tensor:
        B, C = x_map.shape[:2]
        run, h, d = self.branches[i], self.h // 2, C // self.h
        red = run.sr(x_map)  # (B, C, H/s, W/s)
        Hs, Ws = red.shape[2:]
        red = F.gelu(run.norm(red.reshape(B, C, -1).permute(0, 2, 1)))
        kv = run.kv(red).reshape(B, -1, 2, h, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]  # (B, h, N', d)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        ch = slice(i * C // 2, (i + 1) * C // 2)
        vm = v.transpose(1, 2).reshape(B, -1, C // 2).transpose(1, 2).reshape(B, C // 2, Hs, Ws)
        vm = F.conv2d(vm, self.conv.weight[ch], self.conv.bias[ch], padding=1, groups=C // 2)
        v = v + vm.reshape(B, h, d, -1).transpose(-1, -2)
        return (attn @ v).transpose(1, 2).reshape(B, N, C // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        N, h = H * W, self.h
        xs = x.reshape(B, N, C)
        q = self.q(xs).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        x_map = xs.permute(0, 2, 1).reshape(B, C, H, W)
        outs = [self._branch(q[:, i * h // 2 : (i + 1) * h // 2], x_map, i, N) for i in (0, 1)]
        return self.proj(torch.cat(outs, dim=-1)).reshape(B, H, W, C)


class PVTv2Authors(nn.Module):
    """PVTv2's spatial-reduction attention (``sr > 1``) with explicit matmuls and softmax.

    Shapes: ``x: (B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, layer: AttentionLayer) -> None:
        super().__init__()
        run = layer.runners[0]
        self.q, self.kv, self.sr, self.norm, self.proj = (
            layer.q,
            run.kv,
            run.sr,
            run.norm,
            layer.proj,
        )
        self.h, self.scale = layer.num_heads, layer.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        N, h = H * W, self.h
        xs = x.reshape(B, N, C)
        q = self.q(xs).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        red = self.sr(xs.permute(0, 2, 1).reshape(B, C, H, W)).reshape(B, C, -1).permute(0, 2, 1)
        kv = self.kv(self.norm(red)).reshape(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ kv[0].transpose(-2, -1)).softmax(dim=-1)
        o = (attn @ kv[1]).transpose(1, 2).reshape(B, N, C)
        return self.proj(o).reshape(B, H, W, C)


class TimmPVTv2(nn.Module):
    """timm's ``pvt_v2.Attention`` with the layer's weights copied in (``fused_attn`` on/off)."""

    def __init__(self, layer: AttentionLayer, sr: int, fused: bool) -> None:
        super().__init__()
        from timm.models.pvt_v2 import Attention

        self.attn = Attention(layer.dim, num_heads=layer.num_heads, sr_ratio=sr)
        run = layer.runners[0]
        parts = {"q": layer.q, "proj": layer.proj, "kv": run.kv, "sr": run.sr, "norm": run.norm}
        state = {f"{k}.{p}": t for k, m in parts.items() for p, t in m.state_dict().items()}
        self.attn.load_state_dict(state)
        self.attn.fused_attn = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        return self.attn(x.reshape(B, H * W, C), (H, W)).reshape(B, H, W, C)
