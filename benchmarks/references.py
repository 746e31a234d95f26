"""Benchmark-side references: the authors' algorithms, vectorised, written from the facts.

These follow what the authors' released code *does*, step for step, so that their speed is the
speed of that algorithm: Swin rolls the map, cuts windows with view/permute, projects each
window, computes ``softmax(q k^T + bias + mask) v`` with explicit matmuls and rebuilds the bias
from its table on every call; CSWin cuts every branch into stripes (``img2windows``), runs LePE
on V cut into the stripes, and uses explicit matmuls too. They are not the loop oracles of
``tests/references/plain.py`` (those are slow on purpose) and they are not timm.

Each reference shares the parameters of an attnblocks layer (it is built from one), so the
benchmark can check that every implementation computes the same numbers before timing it.
All take and return ``x: (B, H, W, C)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnblocks import AttentionLayer
from attnblocks.encoders import relative_position_index

__all__ = [
    "CSWinAuthors",
    "SwinAuthors",
    "TimmMaxViT",
    "TimmSwin",
    "Unavailable",
    "copy_qkv_to_timm_maxvit",
]


class Unavailable(RuntimeError):
    """A reference that cannot run here (a missing optional package, a compiler failure).

    Raised by a reference's constructor or its first call; the suite records the reason in its
    results instead of failing the run.
    """


def _swin_mask(H: int, W: int, M: int, s: int) -> torch.Tensor:
    """The authors' shift mask: ``(nW, T, T)``, 0 within a region and -100 across regions."""
    img = torch.zeros(H, W)
    cnt = 0
    for hs in (slice(0, -M), slice(-M, -s), slice(-s, None)):
        for ws in (slice(0, -M), slice(-M, -s), slice(-s, None)):
            img[hs, ws] = cnt
            cnt += 1
    win = img.view(H // M, M, W // M, M).permute(0, 2, 1, 3).reshape(-1, M * M)
    diff = win[:, None, :] - win[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class TorchvisionSwin3d(nn.Module):
    """torchvision's Video Swin ``ShiftedWindowAttention3d`` with the layer's weights.

    Shapes: ``x: (B, T, H, W, C) -> (B, T, H, W, C)``.
    """

    def __init__(self, layer: AttentionLayer) -> None:
        super().__init__()
        try:
            from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d
        except ImportError as e:
            raise Unavailable(f"torchvision is not installed: {e}") from e
        window = list(layer.spec.partition.size)
        shift = list(layer.spec.partition.shift)
        self.attn = ShiftedWindowAttention3d(layer.dim, window, shift, layer.num_heads)
        state = {k: v for k, v in layer.state_dict().items() if k.split(".")[0] != "pe"}
        state["relative_position_bias_table"] = layer.pe[0].tables[0].detach()
        state["relative_position_index"] = self.attn.relative_position_index
        self.attn.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)


class SwinAuthors(nn.Module):
    """Swin v1 W-MSA / SW-MSA as the authors compute it (roll, window partition, matmuls).

    Shapes: ``x: (B, H, W, C) -> (B, H, W, C)``; ``M | H`` and ``M | W``.
    """

    def __init__(self, layer: AttentionLayer, window: int, shift: int) -> None:
        super().__init__()
        self.qkv, self.proj = layer.qkv, layer.proj
        self.table = layer.pe[0].tables[0]
        self.h, self.M, self.s, self.scale = layer.num_heads, window, shift, layer.scale
        self.register_buffer("index", relative_position_index((window, window), (window,) * 2))
        self._mask: dict[tuple[int, int], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        M, s, h = self.M, self.s, self.h
        if s:
            x = torch.roll(x, (-s, -s), (1, 2))
        win = x.view(B, H // M, M, W // M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, M * M, C)
        Bw, T = win.shape[:2]
        qkv = self.qkv(win).reshape(Bw, T, 3, h, C // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.table[self.index.view(-1)].view(T, T, -1).permute(2, 0, 1).contiguous()
        attn = attn + bias[None]
        if s:
            if (H, W) not in self._mask:
                self._mask[(H, W)] = _swin_mask(H, W, M, s).to(x.dtype)
            mask = self._mask[(H, W)]
            nW = mask.shape[0]
            attn = attn.view(B, nW, h, T, T) + mask[None, :, None]
            attn = attn.view(-1, h, T, T)
        attn = attn.softmax(-1)
        o = (attn @ v).transpose(1, 2).reshape(Bw, T, C)
        o = self.proj(o)
        o = o.view(B, H // M, W // M, M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        if s:
            o = torch.roll(o, (s, s), (1, 2))
        return o


class CSWinAuthors(nn.Module):
    """CSWin's LePEAttention pair as the authors compute it (img2windows per branch, matmuls).

    Branch 0 uses vertical stripes ``(H, sw)``, branch 1 horizontal ``(sw, W)``; LePE is the
    depthwise 3x3 conv of V cut into each stripe. Shapes: ``x: (B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, layer: AttentionLayer, split: int) -> None:
        super().__init__()
        self.qkv, self.proj, self.conv = layer.qkv, layer.proj, layer.pe[0].conv
        self.h, self.sw, self.scale = layer.num_heads, split, layer.scale

    @staticmethod
    def _img2windows(t: torch.Tensor, Hs: int, Ws: int) -> torch.Tensor:
        """``(B, C, H, W) -> (B * nW, Hs * Ws, C)``, windows ordered (b, row, col)."""
        B, C, H, W = t.shape
        t = t.view(B, C, H // Hs, Hs, W // Ws, Ws)
        return t.permute(0, 2, 4, 3, 5, 1).reshape(-1, Hs * Ws, C)

    def _branch(self, q, k, v, Hs: int, Ws: int, ch: slice) -> torch.Tensor:
        B, H, W, Cb = q.shape
        h = self.h // 2
        d = Cb // h

        def heads(t):  # (B, H, W, Cb) -> (B*nW, h, T, d)
            w = self._img2windows(t.permute(0, 3, 1, 2), Hs, Ws)
            return w.reshape(-1, Hs * Ws, h, d).permute(0, 2, 1, 3)

        q, k = heads(q), heads(k)
        vm = v.permute(0, 3, 1, 2).reshape(B, Cb, H // Hs, Hs, W // Ws, Ws)
        vm = vm.permute(0, 2, 4, 1, 3, 5).reshape(-1, Cb, Hs, Ws)
        lepe = F.conv2d(vm, self.conv.weight[ch], self.conv.bias[ch], padding=1, groups=Cb)
        lepe = lepe.reshape(-1, h, d, Hs * Ws).permute(0, 1, 3, 2)
        v = vm.reshape(-1, h, d, Hs * Ws).permute(0, 1, 3, 2)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(-1)
        o = attn @ v + lepe
        o = o.transpose(1, 2).reshape(-1, Hs * Ws, Cb)  # windows2img
        o = o.view(B, H // Hs, W // Ws, Hs, Ws, Cb).permute(0, 1, 3, 2, 4, 5)
        return o.reshape(B, H, W, Cb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x.reshape(B, H * W, C)).reshape(B, H * W, 3, C).permute(2, 0, 1, 3)
        qkv = qkv.reshape(3, B, H, W, C)
        half = C // 2
        outs = []
        for i, (Hs, Ws) in enumerate(((H, self.sw), (self.sw, W))):
            ch = slice(i * half, (i + 1) * half)
            outs.append(self._branch(qkv[0][..., ch], qkv[1][..., ch], qkv[2][..., ch], Hs, Ws, ch))
        return self.proj(torch.cat(outs, dim=-1))


class TimmSwin(nn.Module):
    """timm's ``SwinTransformerBlock`` attention path (``_attn``), weights from ``layer``."""

    def __init__(self, layer: AttentionLayer, hw: tuple[int, int], window: int, shift: int, fused):
        super().__init__()
        from timm.models.swin_transformer import SwinTransformerBlock

        block = SwinTransformerBlock(
            layer.dim, input_resolution=hw, num_heads=layer.num_heads, window_size=window,
            shift_size=shift,
        )  # fmt: skip
        sd = {"qkv.weight": layer.qkv.weight, "qkv.bias": layer.qkv.bias}
        sd |= {"proj.weight": layer.proj.weight, "proj.bias": layer.proj.bias}
        sd["relative_position_bias_table"] = layer.pe[0].tables[0]
        block.attn.load_state_dict(sd, strict=False)
        block.attn.fused_attn = fused
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block._attn(x)


def copy_qkv_to_timm_maxvit(layer: AttentionLayer, attn: nn.Module) -> None:
    """Load an attnblocks layer's weights into timm's ``AttentionCl`` (head-first qkv rows)."""
    C, h = layer.dim, layer.num_heads
    d = C // h
    # attnblocks rows: (part, head, dim); timm head_first rows: (head, part, dim)
    perm = torch.arange(3 * C).view(3, h, d).permute(1, 0, 2).reshape(-1)
    with torch.no_grad():
        attn.qkv.weight.copy_(layer.qkv.weight[perm])
        attn.qkv.bias.copy_(layer.qkv.bias[perm])
        attn.proj.weight.copy_(layer.proj.weight)
        attn.proj.bias.copy_(layer.proj.bias)
        attn.rel_pos.relative_position_bias_table.copy_(layer.pe[0].tables[0])


class TimmMaxViT(nn.Module):
    """timm's ``maxxvit`` block or grid attention (``PartitionAttentionCl._partition_attn``)."""

    def __init__(self, layer: AttentionLayer, kind: str, size: int, fused: bool) -> None:
        super().__init__()
        from timm.models.maxxvit import MaxxVitTransformerCfg, PartitionAttentionCl

        cfg = MaxxVitTransformerCfg(
            dim_head=layer.dim // layer.num_heads, window_size=(size, size), grid_size=(size, size)
        )
        self.block = PartitionAttentionCl(layer.dim, kind, cfg)
        copy_qkv_to_timm_maxvit(layer, self.block.attn)
        self.block.attn.fused_attn = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block._partition_attn(x)
