"""A tiny hierarchical backbone whose attentions are attnblocks specs (used by the examples).

Each stage is a list of blocks at one map size; a block is pre-norm attention + MLP, and the
stages are joined by 2x2 patch merging, as in Swin. Any ``Attention`` spec slots in: the
backbone never looks inside it.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from attnblocks import Attention


class Block(nn.Module):
    """``x + attn(norm(x))``, then ``x + mlp(norm(x))``. ``x: (B, H, W, C)``."""

    def __init__(self, spec: Attention, dim: int, num_heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = spec.build(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Merge(nn.Module):
    """2x2 patch merging: ``(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out)``."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.proj = nn.Linear(4 * dim, out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))  # odd maps: pad to even
        x = rearrange(x, "b (h i) (w j) c -> b h w (i j c)", i=2, j=2)
        return self.proj(self.norm(x))


class TinyBackbone(nn.Module):
    """Patch stem, then stages of blocks joined by merging, then a mean-pooled classifier.

    Args:
        stages: one ``Attention`` spec per stage, or a sequence of specs that the stage's
            blocks cycle through (``[window, shifted_window]`` gives Swin's alternation).
        dims, heads, depths: channels, heads and blocks per stage.
        patch: the stem's stride; ``patch=1`` keeps pixels as tokens (with a 3x3 conv, so each
            token sees its neighbours).
    """

    def __init__(
        self,
        stages: Sequence[Attention | Sequence[Attention]],
        dims: Sequence[int] = (32, 64),
        heads: Sequence[int] = (2, 4),
        depths: Sequence[int] = (2, 2),
        patch: int = 4,
        in_chans: int = 3,
        num_classes: int = 10,
    ):
        super().__init__()
        kernel, pad = (patch, 0) if patch > 1 else (3, 1)
        self.stem = nn.Conv2d(in_chans, dims[0], kernel, stride=patch, padding=pad)
        self.stages = nn.ModuleList()
        for i, specs in enumerate(stages):
            specs = [specs] if isinstance(specs, Attention) else list(specs)
            blocks = [Block(specs[j % len(specs)], dims[i], heads[i]) for j in range(depths[i])]
            if i > 0:
                blocks.insert(0, Merge(dims[i - 1], dims[i]))
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.LayerNorm(dims[len(stages) - 1])
        self.head = nn.Linear(dims[len(stages) - 1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images: (B, in_chans, H, W) -> logits (B, num_classes)``."""
        x = self.stem(images).permute(0, 2, 3, 1)  # (B, H, W, C): the layout attnblocks takes
        for stage in self.stages:
            x = stage(x)
        return self.head(self.norm(x).mean(dim=(1, 2)))
