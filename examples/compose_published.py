"""Every published attention that attnblocks composes, as one line each; built, run, explained.

Then the converters: timm's Swin block, timm's MaxViT grid attention and a CSWin state dict (the
authors' key names) load into attnblocks layers, and each timm module and its attnblocks twin
give the same output.

Run: python examples/compose_published.py [--fast]
"""

# ruff: noqa: E402 (arguments first: --help and a wrong flag answer before torch loads)
import argparse
import os

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument("--fast", action="store_true", help="14x14 maps instead of 28x28")
FAST = parser.parse_args().fast or os.environ.get("ATTNBLOCKS_FAST") == "1"

import torch

from attnblocks import Attention, Global, explain, zoo
from attnblocks.convert import load_cswin, load_timm_maxvit, load_timm_swin

torch.manual_seed(0)

# --8<-- [start:published]
PUBLISHED = {
    # Swin (Liu et al., ICCV 2021): windows, then shifted windows; relative position bias
    "Swin W-MSA": zoo.swin(7),
    "Swin SW-MSA": zoo.swin(7, shift=3),
    # SwinV2 (Liu et al., CVPR 2022): cosine scores, continuous bias, q/v-only qkv bias
    "SwinV2 W-MSA": zoo.swinv2(7),
    "SwinV2 SW-MSA": zoo.swinv2(7, shift=3),
    # CSWin (Dong et al., CVPR 2022): vertical + horizontal stripes with LePE ...
    "CSWin": zoo.cswin(7),
    # ... and its last stage: one global branch with LePE
    "CSWin last stage": zoo.cswin(7, last=True),
    # MaxViT's two partitions (Tu et al., ECCV 2022): block (windows) and grid
    "MaxViT block": zoo.maxvit_block(7),
    "MaxViT grid": zoo.maxvit_grid(7),
    # DilateFormer (Jiao et al., TMM 2023): 3x3 kernels, dilations 1, 2, 3 per head group
    "DilateFormer MSDA": zoo.dilateformer(3, (1, 2, 3)),
    # NAT (Hassani et al., CVPR 2023) and DiNAT: sliding windows that shift at the borders
    "NAT": zoo.nat(7),
    "DiNAT": zoo.dinat(7, dilation=2),
    # PVTv2 (Wang et al., CVMJ 2022): keys and values from the map reduced 4x
    "PVTv2 SRA": zoo.pvtv2(4),
    # Shunted (Ren et al., CVPR 2022): half the heads at ratio 4, half at 2; LocalConv on V
    "Shunted SSA": zoo.shunted(4),
    # ViT (Dosovitskiy et al., ICLR 2021): every token attends to every token
    "ViT": Attention(partition=Global()),
}
# --8<-- [end:published]

H = W = 14 if FAST else 28
x6 = torch.randn(2, H, W, 48)  # (B, H, W, C): 6 heads, for DilateFormer's 3 groups
for name, spec in PUBLISHED.items():
    layer = spec.build(dim=48, num_heads=6)
    y = layer(x6)
    print(f"{name:18s} {spec!r}  ->  output {tuple(y.shape)}")
print()
print(explain(PUBLISHED["Swin SW-MSA"], (H, W), dim=64, num_heads=4))
print()
x = torch.randn(2, H, W, 64)  # (B, H, W, C)

# --8<-- [start:timm]
from timm.models.swin_transformer import SwinTransformerBlock

# timm pads maps that the window does not divide and clamps the window on small maps:
# clamp="timm", pad="timm" reproduce both
block = SwinTransformerBlock(64, input_resolution=(H, W), num_heads=4, window_size=7, shift_size=3)
layer = zoo.swin(7, shift=3, clamp="timm", pad="timm").build(64, 4)
load_timm_swin(layer, block)
with torch.no_grad():
    diff = (layer(x) - block._attn(x)).abs().max().item()  # _attn: the block's attention part
print(f"timm SwinTransformerBlock vs attnblocks: max |difference| = {diff:.1e}")
# --8<-- [end:timm]

# --8<-- [start:maxvit]
from timm.models.maxxvit import MaxxVitTransformerCfg, PartitionAttentionCl

# timm's grid attention (the TF ports' table layout); timm needs 7 | H and 7 | W
cfg = MaxxVitTransformerCfg(dim_head=16, window_size=(7, 7), rel_pos_type="bias_tf")
block = PartitionAttentionCl(64, "grid", cfg)
layer = load_timm_maxvit(zoo.maxvit_grid(7).build(64, 4), block)
with torch.no_grad():
    diff = (layer(x) - block._partition_attn(x)).abs().max().item()
print(f"timm MaxViT grid attention vs attnblocks: max |difference| = {diff:.1e}")
# --8<-- [end:maxvit]

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
