"""Every published attention that attnblocks composes, as one line each; built, run, explained.

Then the converters: timm's Swin block and a CSWin state dict (the authors' key names) load
into attnblocks layers, and the timm block and its attnblocks twin give the same output.

Run: python examples/compose_published.py [--fast]
"""

import os
import sys

import torch

from attnblocks import Attention, Global, Grid, RelPosBias, Window, explain, zoo
from attnblocks.convert import load_cswin, load_timm_swin

FAST = "--fast" in sys.argv or os.environ.get("ATTNBLOCKS_FAST") == "1"
torch.manual_seed(0)

# --8<-- [start:published]
PUBLISHED = {
    # Swin (Liu et al., ICCV 2021): windows, then shifted windows; relative position bias
    "Swin W-MSA": zoo.swin(7),
    "Swin SW-MSA": zoo.swin(7, shift=3),
    # CSWin (Dong et al., CVPR 2022): vertical + horizontal stripes with LePE ...
    "CSWin": zoo.cswin(7),
    # ... and its last stage: one global branch with LePE
    "CSWin last stage": zoo.cswin(7, last=True),
    # MaxViT's two partitions (Tu et al., ECCV 2022): block (windows) and grid
    "MaxViT block": Attention(partition=Window(7), pe=RelPosBias()),
    "MaxViT grid": Attention(partition=Grid(7), pe=RelPosBias()),
    # ViT (Dosovitskiy et al., ICLR 2021): every token attends to every token
    "ViT": Attention(partition=Global()),
}
# --8<-- [end:published]

H = W = 14 if FAST else 28
x = torch.randn(2, H, W, 64)  # (B, H, W, C)
for name, spec in PUBLISHED.items():
    layer = spec.build(dim=64, num_heads=4)
    y = layer(x)
    print(f"{name:16s} {spec!r}  ->  output {tuple(y.shape)}")
print()
print(explain(PUBLISHED["Swin SW-MSA"], (H, W), dim=64, num_heads=4))
print()

# --8<-- [start:timm]
from timm.models.swin_transformer import SwinTransformerBlock  # noqa: E402

# timm pads maps that the window does not divide and clamps the window on small maps:
# clamp="timm", pad="timm" reproduce both
block = SwinTransformerBlock(64, input_resolution=(H, W), num_heads=4, window_size=7, shift_size=3)
layer = zoo.swin(7, shift=3, clamp="timm", pad="timm").build(64, 4)
load_timm_swin(layer, block)
with torch.no_grad():
    diff = (layer(x) - block._attn(x)).abs().max().item()  # _attn: the block's attention part
print(f"timm SwinTransformerBlock vs attnblocks: max |difference| = {diff:.1e}")
# --8<-- [end:timm]

# --8<-- [start:cswin]
C = 64  # a CSWin block's attention weights, under the authors' key names
state = {
    "qkv.weight": torch.randn(3 * C, C) * 0.02,
    "qkv.bias": torch.zeros(3 * C),
    "proj.weight": torch.randn(C, C) * 0.02,
    "proj.bias": torch.zeros(C),
    "attns.0.get_v.weight": torch.randn(C // 2, 1, 3, 3),  # LePE conv, vertical branch
    "attns.0.get_v.bias": torch.zeros(C // 2),
    "attns.1.get_v.weight": torch.randn(C // 2, 1, 3, 3),  # LePE conv, horizontal branch
    "attns.1.get_v.bias": torch.zeros(C // 2),
}
layer = load_cswin(zoo.cswin(7).build(C, 4), state)
print(f"CSWin weights loaded: {sorted(layer.state_dict())}")
# --8<-- [end:cswin]
