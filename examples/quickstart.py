"""Quickstart: compose Swin's, CSWin's and a hybrid attention, build each, run it once.

Run: python examples/quickstart.py
"""

# ruff: noqa: E402 (arguments first: --help and a wrong flag answer before torch loads)
import argparse

argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
).parse_args()

import torch

from attnblocks import Attention, LePE, RelPosBias, Split, Stripe, Window, explain

torch.manual_seed(0)

specs = {
    # Swin's shifted-window attention (SW-MSA) with its relative position bias
    "Swin SW-MSA": Attention(partition=Window(7, shift=3), pe=RelPosBias()),
    # CSWin: half the heads in vertical stripes, half in horizontal ones, plus LePE
    "CSWin": Attention(partition=Stripe(7), heads=Split(2), pe=LePE()),
    # A new hybrid: windows in one head group, horizontal stripes in the other
    "Hybrid": Attention(heads=Split(Window(7), Stripe(2, axis="h")), pe=LePE()),
}

x = torch.randn(2, 28, 28, 64)  # (B, H, W, C)
for name, spec in specs.items():
    layer = spec.build(dim=64, num_heads=4)
    y = layer(x)
    params = sum(p.numel() for p in layer.parameters())
    print(f"{name:12s} {spec!r}")
    print(f"{'':12s} parameters: {params:,}   output: {tuple(y.shape)}")

print()
print(explain(specs["Hybrid"], (28, 28), dim=64, num_heads=4))
