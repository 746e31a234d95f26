"""Backbones: build the registered models, count them, and write a new one as a table.

Run: python examples/backbones.py [--fast]
"""

# ruff: noqa: E402 (arguments first: --help and a wrong flag answer before torch loads)
import argparse
import os

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument(
    "--fast", action="store_true", help="a small feature map (64x96 instead of 200x300)"
)
FAST = parser.parse_args().fast or os.environ.get("ATTNBLOCKS_FAST") == "1"

import torch

from attnblocks import Attention, LePE, Split, Stripe, Window, zoo
from attnblocks.models import (
    Alternate,
    BackboneSpec,
    ConvMerge,
    ConvStem,
    Stage,
    create,
    list_models,
    summary,
)

# Parameters and MACs of the registered models (on the meta device: nothing is computed)
for name in ("swin_tiny", "cswin_tiny"):
    print(f"{name:12s} {summary(create(name, device='meta'), 224)}")
print("registered:", ", ".join(list_models()))

# A new backbone is a table: a hybrid of Swin windows and CSWin stripes in every block
hybrid = Attention(heads=Split(Window(7), Stripe(7, axis="h")), pe=LePE())
spec = BackboneSpec(
    (
        Stage(64, 1, 2, Alternate(zoo.swin(7), zoo.swin(7, shift=3))),
        Stage(128, 2, 4, zoo.cswin(2)),
        Stage(256, 4, 8, hybrid),
        Stage(512, 1, 16, zoo.cswin(7, last=True)),
    ),
    stem=ConvStem(7, 4, padding=2),
    downsample=ConvMerge(),
    drop_path_rate=0.1,
)
print(f"hybrid       {summary(spec.build(device='meta'), 224)}")

# Multi-scale features for detection / segmentation, at any (non-square) size
h, w = (64, 96) if FAST else (200, 300)
backbone = create("swin_tiny", features_only=True).eval()
with torch.no_grad():
    maps = backbone(torch.randn(1, 3, h, w))
print(f"swin_tiny features at {h}x{w}:", [tuple(m.shape) for m in maps])
