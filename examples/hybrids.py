"""New hybrids: give each head group its own partition, and build them into a small backbone.

``Split(p0, p1)`` runs head group 0 (the first half of the heads and channels) with partition
``p0`` and group 1 with ``p1``, in one layer, one qkv projection, one output projection.

Run: python examples/hybrids.py [--fast]
"""

# ruff: noqa: E402 (arguments first: --help and a wrong flag answer before torch loads)
import argparse
import os

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument(
    "--fast", action="store_true", help="32x32 images, batch 2 (instead of 64x64, batch 8)"
)
FAST = parser.parse_args().fast or os.environ.get("ATTNBLOCKS_FAST") == "1"

import torch
from tiny_backbone import TinyBackbone

from attnblocks import (
    CPE,
    Attention,
    Dilated,
    Downsample,
    Global,
    Grid,
    LePE,
    RelPosBias,
    Split,
    Stripe,
    Window,
)

torch.manual_seed(0)

# --8<-- [start:hybrids]
HYBRIDS = {
    # local windows + full-width stripes: local detail and long horizontal context
    "windows + stripes": Attention(heads=Split(Window(4), Stripe(2, axis="h")), pe=LePE()),
    # local windows + a sparse global grid: MaxViT's two attentions as two head groups
    "windows + grid": Attention(heads=Split(Window(4), Grid(4)), pe=RelPosBias()),
    # vertical stripes + global attention
    "stripes + global": Attention(heads=Split(Stripe(2, axis="v"), Global()), pe=LePE()),
    # local windows + a dilated sliding window (DilateFormer's pattern), CPE on the input
    "windows + dilated": Attention(heads=Split(Window(4), Dilated(3, dilation=2)), pe=CPE()),
    # local windows + keys from the map reduced 2x (PVTv2's pattern): cheap global context
    "windows + reduced": Attention(heads=Split(Window(4), Downsample(2))),
    # four head groups, four patterns
    "four patterns": Attention(
        heads=Split(Window(4), Grid(4), Stripe(2, axis="h"), Stripe(2, axis="v")), pe=LePE()
    ),
}
# --8<-- [end:hybrids]

# --8<-- [start:backbone]
size, batch = (32, 2) if FAST else (64, 8)
images = torch.randn(batch, 3, size, size)
for name, spec in HYBRIDS.items():
    # the same spec in both stages: 16x16 then 8x8 tokens for 64x64 images (patch 4)
    model = TinyBackbone([spec, spec], dims=(32, 64), heads=(4, 4), depths=(2, 2))
    params = sum(p.numel() for p in model.parameters())
    logits = model(images)
    logits.logsumexp(-1).mean().backward()  # every hybrid trains: gradients reach the stem
    grad = model.stem.weight.grad.norm().item()
    print(f"{name:17s} {spec!r}")
    print(f"{'':17s} {params:,} parameters, logits {tuple(logits.shape)}, stem grad {grad:.3g}")
# --8<-- [end:backbone]
