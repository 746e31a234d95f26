"""A plain CSWin *model* in the authors' layout, from the reference facts (a test oracle).

Our reading of the authors' ``CSWinTransformer``: stem ``stage1_conv_embed`` (Conv2d(3, C,
7, stride 4, padding 2), tokens, LayerNorm), stages ``stage{i}`` of pre-norm blocks
(``x + proj(attn(norm1(x)))``, ``x + mlp(norm2(x))``), ``merge{i}`` (Conv2d 3x3 stride 2
padding 1 + LayerNorm) between stages, final ``norm``, mean over tokens, ``head``. The
attention is :func:`references.plain.cswin_attention` (loops over stripes). Square maps whose
sizes the stripe widths divide, as in the authors' classification code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from references.plain import _gelu_exact, _layer_norm, _linear, cswin_attention


def cswin_state_shapes(
    embed_dim: int, depths: tuple[int, ...], in_chans: int = 3, num_classes: int = 1000
) -> dict[str, tuple[int, ...]]:
    """The authors' parameter names and shapes for a CSWin table (stage i: ``embed_dim * 2**i``)."""
    shapes: dict[str, tuple[int, ...]] = {
        "stage1_conv_embed.0.weight": (embed_dim, in_chans, 7, 7),
        "stage1_conv_embed.0.bias": (embed_dim,),
        "stage1_conv_embed.2.weight": (embed_dim,),
        "stage1_conv_embed.2.bias": (embed_dim,),
    }
    n = len(depths)
    for i, depth in enumerate(depths):
        C = embed_dim * 2**i
        if i:
            shapes[f"merge{i}.conv.weight"] = (C, C // 2, 3, 3)
            shapes[f"merge{i}.conv.bias"] = (C,)
            shapes[f"merge{i}.norm.weight"] = (C,)
            shapes[f"merge{i}.norm.bias"] = (C,)
        branches = 1 if i == n - 1 else 2
        for j in range(depth):
            p = f"stage{i + 1}.{j}."
            shapes |= {
                p + "norm1.weight": (C,),
                p + "norm1.bias": (C,),
                p + "qkv.weight": (3 * C, C),
                p + "qkv.bias": (3 * C,),
                p + "proj.weight": (C, C),
                p + "proj.bias": (C,),
                p + "norm2.weight": (C,),
                p + "norm2.bias": (C,),
                p + "mlp.fc1.weight": (4 * C, C),
                p + "mlp.fc1.bias": (4 * C,),
                p + "mlp.fc2.weight": (C, 4 * C),
                p + "mlp.fc2.bias": (C,),
            }
            for b in range(branches):
                shapes[p + f"attns.{b}.get_v.weight"] = (C // branches, 1, 3, 3)
                shapes[p + f"attns.{b}.get_v.bias"] = (C // branches,)
    C = embed_dim * 2 ** (n - 1)
    shapes |= {
        "norm.weight": (C,),
        "norm.bias": (C,),
        "head.weight": (num_classes, C),
        "head.bias": (num_classes,),
    }
    return shapes


def random_cswin_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    """Seeded float64 weights: norms near 1 / 0, everything else normal with std 0.1."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        t = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.1
        is_norm = "norm" in k.split(".")[-2] or k.startswith("stage1_conv_embed.2")
        out[k] = t + 1.0 if is_norm and k.endswith("weight") else t
    return out


def cswin_model(
    params: dict[str, Tensor],
    img: Tensor,
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    splits: tuple[int, ...],
) -> Tensor:
    """Logits of the authors' CSWin model.  img: (B, 3, H, W) -> (B, num_classes)."""
    p = params
    x = F.conv2d(img, p["stage1_conv_embed.0.weight"], p["stage1_conv_embed.0.bias"], 4, 2)
    x = x.permute(0, 2, 3, 1)
    x = _layer_norm(x, p["stage1_conv_embed.2.weight"], p["stage1_conv_embed.2.bias"])
    n = len(depths)
    for i in range(n):
        if i:
            w, b = p[f"merge{i}.conv.weight"], p[f"merge{i}.conv.bias"]
            x = F.conv2d(x.permute(0, 3, 1, 2), w, b, 2, 1).permute(0, 2, 3, 1)
            x = _layer_norm(x, p[f"merge{i}.norm.weight"], p[f"merge{i}.norm.bias"])
        for j in range(depths[i]):
            pre = f"stage{i + 1}.{j}."
            blk = {k[len(pre) :]: v for k, v in p.items() if k.startswith(pre)}
            h = _layer_norm(x, blk["norm1.weight"], blk["norm1.bias"])
            x = x + cswin_attention(blk, h, splits[i], heads[i], last=i == n - 1)
            h = _layer_norm(x, blk["norm2.weight"], blk["norm2.bias"])
            h = _gelu_exact(_linear(h, blk["mlp.fc1.weight"], blk["mlp.fc1.bias"]))
            x = x + _linear(h, blk["mlp.fc2.weight"], blk["mlp.fc2.bias"])
    x = _layer_norm(x, p["norm.weight"], p["norm.bias"]).mean(dim=(1, 2))
    return _linear(x, p["head.weight"], p["head.bias"])
