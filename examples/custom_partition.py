"""A new token set in one file: criss-cross attention as a rule, composed and trained.

CCNet's criss-cross attention lets each query see its own row and its own column. Here it is
one class with one method, written from token coordinates; attnblocks derives the rest (the
dense and flex lowerings, cost, explain, pictures, configs). It is then composed with built-in
partitions, under ``Split`` beside windows and as a union with a window (one softmax over both
key sets), and trained a few steps in the tiny backbone. Nothing inside attnblocks changes.

Run: python examples/custom_partition.py [--fast]
"""

# ruff: noqa: E402 (arguments first: --help and a wrong flag answer before torch loads)
import argparse
import dataclasses
import os
import warnings

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument(
    "--fast", action="store_true", help="4 training steps of batch 8 (instead of 60 of 32)"
)
# imported (tests/test_contract.py imports the partitions), the command line is not ours
ARGS = parser.parse_args() if __name__ == "__main__" else parser.parse_args([])
FAST = ARGS.fast or os.environ.get("ATTNBLOCKS_FAST") == "1"

import torch
from tiny_backbone import TinyBackbone

from attnblocks import (
    Attention,
    LePE,
    RectLayout,
    RelPosBias,
    RulePartition,
    Split,
    Window,
    cost,
    explain,
    from_config,
    to_config,
)

warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")


# --8<-- [start:rule]
class Axial(RulePartition):
    """Criss-cross attention (CCNet): every token of the query's row and of its column."""

    def allows(self, q, k):
        # q, k: (row, col) coordinate tensors; one rule for the mask and for FlexAttention
        return (q[0] == k[0]) | (q[1] == k[1])


# --8<-- [end:rule]


# --8<-- [start:declared]
class Tiles(RulePartition):
    """Non-overlapping tiles of ``size x size`` tokens, declared as windows: the rule says who
    attends to whom, ``layout`` says it is a window partition, so the eager window runner
    (batched windows, fused SDPA) runs it, and ``window_size`` sizes RelPosBias's table."""

    size: int = 4
    _positional = ("size",)  # repr Tiles(4) rather than Tiles(size=4)

    def allows(self, q, k):
        s = self.size
        return (q[0] // s == k[0] // s) & (q[1] // s == k[1] // s)

    def layout(self, H, W, pad="mask"):
        return RectLayout((H, W), (self.size, self.size), pad_mode=pad)

    @property
    def window_size(self):
        return (self.size, self.size)


# --8<-- [end:declared]


def main() -> None:
    torch.manual_seed(0)
    # --8<-- [start:compose]
    hybrid = Attention(heads=Split(Tiles(4), Axial()), pe=LePE())  # one head group each
    # the query's row and column plus its 2x2 window, one softmax (shared keys count once)
    union = Attention(heads=Split(Window(4), Axial() | Window(2)), pe=LePE())
    # --8<-- [end:compose]
    print("custom partition:", repr(Axial()), "|", repr(Tiles(4)))
    print(explain(union, (8, 8), dim=32, num_heads=4))
    for name, spec in (("hybrid", hybrid), ("union", union)):
        c = cost(spec, (8, 8), dim=32, num_heads=4)
        print(f"{name}: keys per query (mean, max) {c.keys_per_query}, {c.macs:,} MACs")
        assert from_config(to_config(spec)) == spec  # configs round-trip, by class name

    # every backend computes the same attention
    x = torch.randn(2, 8, 8, 32)
    layer = union.build(32, 4)
    with torch.no_grad():
        for backend in ("dense", "flex"):
            other = dataclasses.replace(union, backend=backend).build(32, 4)
            other.load_state_dict(layer.state_dict())
            err = (other(x) - layer(x)).abs().max().item()
            print(f"backend={backend!r} vs eager: max |diff| {err:.1e}")
    tiles = Attention(partition=Tiles(4), pe=RelPosBias()).build(32, 4)
    print("Tiles with RelPosBias:", tuple(tiles(x).shape), "on the eager window runner")

    # --8<-- [start:train]
    # a few steps in the tiny backbone: which colour channel is brightest
    steps, batch = (4, 8) if FAST else (60, 32)
    model = TinyBackbone([hybrid, union], dims=(32, 64), heads=(4, 4), depths=(1, 1), num_classes=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        images = torch.rand(batch, 3, 32, 32)
        labels = torch.randint(0, 3, (batch,))
        images[torch.arange(batch), labels] += 0.5  # the labelled channel is brighter
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"trained {steps} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    # --8<-- [end:train]


if __name__ == "__main__":
    main()
